"""Files replaced whole: a reader (a requeued job, the watchdog, a resumed run) sees the old content or the new, never
a half-written file. Standard library only: every package may import it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: Path, mode: str = "w", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file beside it (``.NAME.PID.tmp``: same directory, so ``os.replace`` is an
    atomic rename), renamed to ``path`` when the block ends; on an exception the temporary file is removed and
    ``path`` left as it was. Creates the parent directory. Text modes write UTF-8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            if fsync:
                # The rename alone survives a process kill, not a node crash: the filesystem may persist the rename
                # before the data, leaving an empty file under the final name. Worth it only for files written once
                # and trusted later by content (prepared data, whose sha256 goes into the manifest); files rewritten
                # every step skip the cost.
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
