"""The committed digest of the authors' evaluation suite (tests/data/fixtures/eval_suite.json) and how it is built.

The suite's problem texts are not committed (Minerva's come from MIT OCW under CC BY-NC-SA); the fixture holds, per
benchmark, the row count, ``rows_digest`` of every row (problem, answer, difficulty) and the gold answers themselves
(short facts such as ``142.0`` or ``["6630.65\\n", "6630\\n"]``). With it CI checks offline that our reading of the
Arrow files gives exactly the shared copy's rows, and grades every gold answer. Rebuild it from a copy of the suite
(`../shared/data/eval_suite`, README there) with::

    python tests/data/suite_fixture.py ../shared/data/eval_suite > tests/data/fixtures/eval_suite.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from holder_nemo.data.suite import SUITE, rows_digest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("fixtures") / "eval_suite.json"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_fixture(suite_dir: Path) -> dict:
    """The fixture's content computed from a directory of ``<benchmark>.jsonl`` files (the shared copy)."""
    out = {}
    for name in SUITE:
        rows = read_jsonl(Path(suite_dir) / f"{name}.jsonl")
        out[name] = {"rows": len(rows), "rows_sha256": rows_digest(rows), "answers": [r["answer"] for r in rows]}
    return out


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def shared_suite_dir() -> Path | None:
    """The shared JSONL copy of the suite, if this checkout has one: $HOLDERPO_EVAL_SUITE_DIR, else ``shared/`` in
    or beside the repository (the development machine's layout). None in a clean clone (CI)."""
    candidates = [os.environ.get("HOLDERPO_EVAL_SUITE_DIR")]
    candidates += [str(REPO / "shared" / "data" / "eval_suite"), str(REPO.parent / "shared" / "data" / "eval_suite")]
    for candidate in candidates:
        if candidate and all((Path(candidate) / f"{name}.jsonl").is_file() for name in SUITE):
            return Path(candidate)
    return None


if __name__ == "__main__":
    print(json.dumps(build_fixture(Path(sys.argv[1])), ensure_ascii=False, indent=1))
