"""Third check of the authors' grader: math-verify on the two answers read as LaTeX.

understand-r1-zero's ``is_latex_equal`` (run only with ``fast=False``, which both their evaluation and the HölderPO
training reward use):

1. refuse a long (> 128 characters) answer that is mostly repetition (:func:`repetitive`);
2. accept equal PRM800K normal forms;
3. wrap each answer in ``$...$`` unless it holds a ``$`` already, parse both with math-verify (LaTeX, boxed
   content first, then plain expressions; no string fallback) and compare with ``math_verify.verify(gold, given)``.

Parsing and comparison get 1 s each on the main thread, as theirs. The authors pass ``extraction_mode=["first_match"]``;
math-verify compares that value with the string ``"first_match"``, so a list acts as its default ``"any_match"``,
which is what we pass.
"""

from __future__ import annotations

import logging

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from holder_nemo.eval.grading.limits import main_thread_seconds
from holder_nemo.eval.grading.prm800k import normalize_prm800k

# math-verify logs every unparsable expression and every timeout; a benchmark run would print thousands of lines.
for _name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

_REPETITION_MIN_LENGTH = 128
_REPETITION_THRESHOLD = 0.2
_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_STEP_SECONDS = 1


def _suffix_array(text: str) -> tuple[list[int], list[int]]:
    """(suffix array, rank of each suffix) by prefix doubling: O(n log^2 n)."""
    n = len(text)
    rank = [ord(c) for c in text]
    order = list(range(n))
    width = 1
    while True:

        def key(i: int, rank: list[int] = rank, width: int = width) -> tuple[int, int]:
            return rank[i], rank[i + width] if i + width < n else -1

        order.sort(key=key)
        new_rank = [0] * n
        for j in range(1, n):
            new_rank[order[j]] = new_rank[order[j - 1]] + (key(order[j]) != key(order[j - 1]))
        rank = new_rank
        if rank[order[-1]] == n - 1:  # all suffixes told apart
            return order, rank
        width *= 2


def repetitive(text: str) -> bool:
    """True when ``text`` is mostly repetition: the longest common prefixes of its adjacent sorted suffixes sum to
    more than 0.2 x n(n+1)/2 (the number of its substrings). A degenerate answer ("1111...", a looping phrase)
    is refused before math-verify spends its time on it."""
    n = len(text)
    if n <= 1:
        return False
    order, rank = _suffix_array(text)
    total, common = 0, 0
    for i in range(n):  # Kasai et al.: the common prefix shrinks by at most one from suffix i to i + 1
        if rank[i] == n - 1:
            common = 0
            continue
        j = order[rank[i] + 1]
        while i + common < n and j + common < n and text[i + common] == text[j + common]:
            common += 1
        total += common
        common = max(common - 1, 0)
    return total * 2 / (n * (n + 1)) > _REPETITION_THRESHOLD


def _as_math(answer: str) -> str:
    return answer if "$" in answer else f"${answer}$"


def latex_equal(given: str, gold: str) -> bool:
    """The authors' ``is_latex_equal(given, gold)`` decision (steps in the module docstring)."""
    for answer in (given, gold):
        if len(answer) > _REPETITION_MIN_LENGTH and repetitive(answer):
            return False
    gold_norm = normalize_prm800k(gold)
    if gold_norm is None:
        return False
    if gold_norm == normalize_prm800k(given):
        return True
    seconds = main_thread_seconds(_STEP_SECONDS)
    try:
        parsed = [
            parse(_as_math(text), extraction_config=_EXTRACTION, fallback_mode="no_fallback", parsing_timeout=seconds)
            for text in (gold, given)
        ]
        return bool(verify(parsed[0], parsed[1], timeout_seconds=seconds))
    except Exception:  # math-verify failing on an input is a wrong answer, not an error
        return False
