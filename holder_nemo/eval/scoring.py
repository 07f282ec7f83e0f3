"""Maths-answer scoring shared by ``holderpo eval``, the ``holder_math`` training reward and in-training validation.

The rule is the HölderPO authors' (understand-r1-zero ``boxed_reward_fn(fast=False)``, used for their evaluation
and their training reward), implemented in :mod:`holder_nemo.eval.grading`: the final answer is the content of the
last ``\\boxed{...}``; it is correct when it matches any of the gold answers under a MATH-normalised string match,
PRM800K's sympy equivalence or math-verify. No final answer scores 0.

Truncation: evaluation grades a generation whatever its finish reason (the authors' ``evaluate_model.py`` does);
training gives a generation cut by the token limit reward 0 (the authors' ``MATHOracle`` caller does): the
``holder_math`` environment (``nemo_rl_env``) and the reference run's task zero it before they call this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from holder_nemo.eval.grading import Gold, grade_answer, last_boxed_answer


@dataclass(frozen=True)
class Score:
    """Outcome of grading one generation: ``reward`` 1.0/0.0, and the final answer found (None: no ``\\boxed{}``,
    the authors' ``formatted: False``)."""

    reward: float
    extracted: str | None


def score_response(response: str, answer: Gold | Sequence[Gold]) -> Score:
    """Grade one generation against the gold ``answer`` (a list: any of them may match)."""
    extracted = last_boxed_answer(response)
    return Score(1.0 if grade_answer(extracted, answer) else 0.0, extracted)


def math_reward(response: str, answer: Gold | Sequence[Gold]) -> float:
    """Training reward of a whole (not truncated) response: 1.0 if its final answer matches ``answer``, else 0.0."""
    return score_response(response, answer).reward
