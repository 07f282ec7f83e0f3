"""``holder_nemo.files.atomic_write``: a reader sees the old file or the new one, never a partial write."""

from __future__ import annotations

from pathlib import Path

import pytest

from holder_nemo.files import atomic_write


@pytest.mark.parametrize("fsync", [False, True])
def test_a_completed_block_replaces_the_file(tmp_path: Path, fsync: bool):
    path = tmp_path / "new_dir" / "record.json"
    with atomic_write(path, fsync=fsync) as fh:
        fh.write("first\n")
    with atomic_write(path, fsync=fsync) as fh:
        fh.write("second\n")
    assert path.read_text() == "second\n"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporaries left


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "archive.zip"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path, "wb") as fh:
        fh.write(b"half")
        raise RuntimeError("connection lost")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["archive.zip"]
