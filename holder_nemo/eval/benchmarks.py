"""Benchmark files: JSONL with one ``{"problem": str, "answer": ...}`` object per line (``holderpo data prepare``).

``answer`` is text, a number (AMC in the authors' suite: ``142.0``) or a list of accepted answers (Minerva,
OlympiadBench); other keys (``difficulty``) are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holder_nemo.eval.grading import gold_list


class BenchmarkError(ValueError):
    """A benchmark file is missing or malformed."""


@dataclass(frozen=True)
class Problem:
    """One evaluation question; ``index`` is its 0-based line number among the file's problems; ``answer`` as
    stored (text, a number, or a list of accepted answers)."""

    index: int
    problem: str
    answer: Any


def load_benchmark(data_dir: Path, name: str, limit: int | None = None) -> list[Problem]:
    """Problems of benchmark ``name`` (one of ``settings.BENCHMARKS``: ``EvalConfig`` checks it) from
    ``data_dir/<name>.jsonl``, the first ``limit`` if given, in file order."""
    path = Path(data_dir) / f"{name}.jsonl"
    if not path.is_file():
        raise BenchmarkError(
            f"benchmark {name!r}: file {path} not found (data_dir={data_dir}). "
            f"Write it with `holderpo data prepare` or point --data-dir at the directory holding {path.name}."
        )
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
            missing = [k for k in ("problem", "answer") if not isinstance(row, dict) or k not in row]
            if missing:
                raise BenchmarkError(f"{path}:{line_no}: missing key(s) {missing}; each line needs problem and answer")
            answer = row["answer"]
            try:
                if not gold_list(answer):
                    raise TypeError("an empty list")
            except TypeError as exc:
                raise BenchmarkError(
                    f"{path}:{line_no}: answer must be text, a number or a list of them ({exc})"
                ) from exc
            problems.append(Problem(len(problems), str(row["problem"]), answer))
            if limit is not None and len(problems) >= limit:
                break
    if not problems:
        raise BenchmarkError(f"benchmark {name!r}: {path} holds no problems")
    return problems
