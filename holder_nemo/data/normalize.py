"""Turn upstream rows into ``{"problem": str, "answer": str}`` (the JSONL schema every recipe reads)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from holder_nemo.data.sources import DatasetSpec

_DOLLAR_WRAPPED = re.compile(r"^\$+([^$]*)\$+$")


class DataError(ValueError):
    """An upstream row or file does not have what the dataset spec requires; the message names it."""


def first_field(row: Mapping[str, Any], paths: Iterable[str]) -> tuple[str, Any]:
    """(path, value) of the first of ``paths`` (dotted: nested keys) present in ``row`` with a non-null value; ("",
    None) if none."""
    for path in paths:
        value: Any = row
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            return path, value
    return "", None


def normalize_answer(value: Any) -> str | list[str]:
    """Reference answer as a string (integral floats without ``.0``, no enclosing ``$...$``); a list of several
    accepted answers stays a list of such strings (a response matching any of them is correct), a one-element list
    becomes its element."""
    if isinstance(value, list | tuple):
        answers = [a for a in (normalize_answer(v) for v in value) if a]
        if len(answers) > 1:
            return answers  # type: ignore[return-value]
        value = answers[0] if answers else ""
    if isinstance(value, bool):
        raise DataError(f"answer must be text or a number, got bool {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"answer must be finite, got {value!r}")
        value = str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    match = _DOLLAR_WRAPPED.match(text)
    return match.group(1).strip() if match else text


def normalize_rows(rows: Iterable[Mapping[str, Any]], spec: DatasetSpec) -> tuple[list[dict[str, Any]], int]:
    """Normalised rows in upstream order and the number of rows whose answer is empty.

    A missing/empty problem is always an error (row index and fields named); an empty answer is an error for
    evaluation sets and counted for the training set (it just earns no reward).
    """
    out: list[dict[str, str]] = []
    empty_answers = 0
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"{spec.name}: row {index} is not a mapping: {row!r}")
        _, problem = first_field(row, spec.problem_fields)
        if not isinstance(problem, str) or not problem.strip():
            raise DataError(
                f"{spec.name}: row {index} has no problem text in any of {list(spec.problem_fields)} "
                f"(keys: {sorted(row)})"
            )
        path, raw_answer = first_field(row, spec.answer_fields)
        if not path:
            raise DataError(
                f"{spec.name}: row {index} has no answer in any of {list(spec.answer_fields)} (keys: {sorted(row)})"
            )
        answer = normalize_answer(raw_answer)
        if not answer:
            if spec.role == "eval":
                raise DataError(f"{spec.name}: row {index} has an empty answer ({path})")
            empty_answers += 1
        out.append({"problem": problem, "answer": answer})  # problem text kept verbatim (it is the prompt)
    return out, empty_answers
