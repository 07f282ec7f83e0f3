"""The HölderPO authors' evaluation suite: the five maths benchmarks exactly as their evaluation read them.

Source: the Arrow files of ``datasets/evaluation_suite/`` in sail-sg/understand-r1-zero (a ``datasets``
``save_to_disk`` directory, one Arrow IPC stream per split), which the authors' ``evaluate_model.py`` loads. We pin
the commit and each file's sha256, read the streams with pyarrow and keep every row as it is: ``problem`` verbatim,
``answer`` in its stored type (text; a float for AMC, e.g. ``142.0``; a list of accepted answers for Minerva and
OlympiadBench), ``difficulty`` where present. The grader compares numbers as ``str(answer)``, as the authors' does.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holder_nemo.data.normalize import DataError
from holder_nemo.data.sources import SPECS

SUITE_REPO = "sail-sg/understand-r1-zero"
SUITE_COMMIT = "dfca49dd460ee7cc8e4a5a162c876a7fd6993b87"
SUITE_PATH = "datasets/evaluation_suite"
SUITE_URL = f"https://raw.githubusercontent.com/{SUITE_REPO}/{SUITE_COMMIT}/{SUITE_PATH}"
ARROW_FILE = "data-00000-of-00001.arrow"
_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class SuiteSplit:
    """One benchmark of the suite: our name, the authors' split folder and its Arrow file's sha256. Its row count is
    the paper's (``sources.SPECS``)."""

    name: str
    split: str
    sha256: str


SUITE: dict[str, SuiteSplit] = {
    s.name: s
    for s in (
        SuiteSplit("aime24", "aime", "861514ca0262d6c03d36d463ee33fe4465b0b85c0593f5df67bc75a717f50e5a"),
        SuiteSplit("amc", "amc", "5e16d28683b95782686413eadd12560d051b2d4ac8aef456b500891ccabd5233"),
        SuiteSplit("math500", "math", "d383d13c807e2904d0db6f8d98496a0574c0a1d51f40331b920c849cf226ef5a"),
        SuiteSplit("minerva", "minerva", "23d05849fd365b9dae2ce5f6c4b6af3baecbbd0a88623abec3f0692d346bae2a"),
        SuiteSplit(
            "olympiadbench", "olympiad_bench", "1b3e77da96c15b3f51fdcda4c86d6cb4dc698f223eea6f80c06a44af32e85455"
        ),
    )
}


def read_arrow_rows(data: bytes, where: str) -> list[dict[str, Any]]:
    """Rows of one ``save_to_disk`` Arrow file (an IPC stream, its bytes read from ``where``), as plain Python values,
    in file order."""
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise DataError("reading the evaluation suite's Arrow files needs pyarrow (pip install pyarrow)") from exc
    try:
        table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{where}: not an Arrow IPC stream ({exc})") from exc
    return table.to_pylist()


def rows_digest(rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows as canonical JSON lines (sorted keys, UTF-8): equal digests mean equal rows and values,
    whatever the JSON formatting of the files they were read from."""
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_answer(name: str, index: int, answer: Any) -> None:
    ok = (isinstance(answer, str) and answer.strip()) or (
        isinstance(answer, float | int) and not isinstance(answer, bool)
    )
    if isinstance(answer, list):
        ok = bool(answer) and all(isinstance(a, str) and a.strip() for a in answer)
    if not ok:
        raise DataError(f"{name}: row {index} has no usable answer ({answer!r}); expected text, a number or a list")


def check_rows(split: SuiteSplit, rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """The rows, after checking the count and that each has a problem and an answer (errors name the row)."""
    expected = SPECS[split.name].expected_rows
    if len(rows) != expected:
        raise DataError(f"{split.name}: {where} has {len(rows)} rows, expected {expected}")
    for index, row in enumerate(rows):
        if not isinstance(row.get("problem"), str) or not row["problem"].strip():
            raise DataError(f"{split.name}: row {index} of {where} has no problem text")
        _check_answer(split.name, index, row.get("answer"))
    return rows


def download_split(split: SuiteSplit, url: str) -> bytes:
    """The split's Arrow file from ``url`` (on the pinned commit on GitHub), checked against its sha256."""
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"{split.name}: could not download {url} ({exc}); on an offline machine copy the suite's "
            f"{SUITE_PATH} folder and pass --from-dir (docs/data.md)"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != split.sha256:
        raise DataError(f"{split.name}: {url} has sha256 {digest}, expected {split.sha256} (commit {SUITE_COMMIT})")
    return data


def load_split(name: str, *, from_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Rows of benchmark ``name`` from a local copy of the suite (``from_dir``) or by download, with provenance.

    Returns ``{"rows", "source", "sha256" (of the Arrow file), "commit" (None for a file that is not the pinned one),
    "rows_sha256"}``. A local file with another sha256 is read anyway (the
    manifest records its digest) but must still have the expected rows.
    """
    split = SUITE[name]  # the command line sends only the suite's names here
    if from_dir is not None:
        path = Path(from_dir) / split.split / ARROW_FILE
        if not path.is_file():
            raise DataError(f"{name}: {path} not found (--from-dir must be a copy of {SUITE_PATH})")
        data = path.read_bytes()
        source = f"dir:{path}"
    else:
        source = f"{SUITE_URL}/{split.split}/{ARROW_FILE}"
        data = download_split(split, source)
    rows = check_rows(split, read_arrow_rows(data, source), source)
    digest = hashlib.sha256(data).hexdigest()
    commit = SUITE_COMMIT if digest == split.sha256 else None
    return {"rows": rows, "source": source, "sha256": digest, "commit": commit, "rows_sha256": rows_digest(rows)}
