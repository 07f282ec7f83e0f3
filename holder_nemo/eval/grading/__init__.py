"""Our implementation of the HölderPO authors' maths grader (understand-r1-zero ``boxed_reward_fn(fast=False)``).

A response is correct when its final answer (:func:`last_boxed_answer`) matches any of the gold answers under any of
three checks, tried in this order:

1. :func:`hendrycks_equal`: equal after the MATH answer normalisation (with the authors' extensions);
2. :func:`prm800k_equal`: PRM800K's normalisation, then element-wise sympy equivalence;
3. :func:`latex_equal`: math-verify on both answers read as LaTeX.

A gold answer that itself contains ``\\boxed{...}`` is replaced by its last box first. Numbers are compared as the
authors' code sees them (``str(142.0)`` is ``"142.0"``). docs/eval.md lists where our decisions can differ from
theirs and why.
"""

from __future__ import annotations

from collections.abc import Sequence

from holder_nemo.eval.grading.boxed import BOX, last_boxed_answer
from holder_nemo.eval.grading.hendrycks import hendrycks_equal, normalize_hendrycks
from holder_nemo.eval.grading.latex import latex_equal, repetitive
from holder_nemo.eval.grading.limits import GradingTimeout, time_limit
from holder_nemo.eval.grading.prm800k import normalize_prm800k, prm800k_equal

Gold = str | int | float
# The sympy check has no limit in the authors' evaluation; ours stops a pathological simplification after this long.
SYMPY_SECONDS = 5.0


def gold_list(gold: Gold | Sequence[Gold]) -> list[str]:
    """The accepted answers as strings (a list of golds: any may match; numbers as ``str()`` writes them)."""
    if isinstance(gold, str | int | float) and not isinstance(gold, bool):
        golds: Sequence[Gold] = [gold]
    elif isinstance(gold, Sequence):
        golds = gold
    else:
        raise TypeError(f"gold answer must be text, a number or a list of them, got {type(gold).__name__}")
    out = []
    for item in golds:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise TypeError(f"gold answer must be text or a number, got {type(item).__name__}: {item!r}")
        out.append(str(item))
    return out


def answer_matches(answer: str, gold: str) -> bool:
    """One final answer against one gold answer: any of the three checks."""
    if BOX in gold:
        boxed_gold = last_boxed_answer(gold)
        if boxed_gold is None:
            return False
        gold = boxed_gold
    if hendrycks_equal(answer, gold):
        return True
    try:
        with time_limit(SYMPY_SECONDS):
            if prm800k_equal(answer, gold):
                return True
    except GradingTimeout:
        pass
    return latex_equal(answer, gold)


def grade_answer(answer: str | None, gold: Gold | Sequence[Gold]) -> bool:
    """True when the final ``answer`` (None: the response had none) matches any of the gold answers."""
    if answer is None:
        return False
    return any(answer_matches(answer, g) for g in gold_list(gold))


__all__ = [
    "SYMPY_SECONDS",
    "GradingTimeout",
    "answer_matches",
    "gold_list",
    "grade_answer",
    "hendrycks_equal",
    "last_boxed_answer",
    "latex_equal",
    "normalize_hendrycks",
    "normalize_prm800k",
    "prm800k_equal",
    "repetitive",
]
