"""Our implementation of the authors' grader against a table of decisions, and its parts on their own.

``CASES`` are (response, gold, expected). Every ``expected`` is the decision of the authors' own rule
(understand-r1-zero ``boxed_reward_fn(model_response, gold, fast=False)``, run outside this repository with
math-verify 0.9.0, sympy 1.14, pylatexenc 2.10; their code is not part of this project): the table pins the
behaviour a comparison with the paper depends on, including where the authors are lenient (two tiny numbers are
equal: math-verify rounds floats to 6 decimals) and strict (``\\fbox``, ``\\boxed 5``, unreduced fractions).
"""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from holder_nemo.eval.grading import (
    GradingTimeout,
    gold_list,
    grade_answer,
    last_boxed_answer,
    normalize_hendrycks,
    normalize_prm800k,
    repetitive,
)
from holder_nemo.eval.grading.limits import time_limit
from holder_nemo.eval.scoring import Score, math_reward, score_response


def boxed(answer: str) -> str:
    return f"So the answer is $\\boxed{{{answer}}}$."


CASES: list[tuple[str, object, bool]] = [
    # --- the examples: accepted by the authors, refused by a math-verify-only grader ---
    (boxed("20\\%"), "20", True),
    (boxed("20"), "20\\%", True),
    (boxed("62.5"), "62.5\\%", True),  # OlympiadBench-style percent gold
    (boxed("1950"), "1950^\\circ C\n", True),  # Minerva gold with a unit and a trailing newline
    (boxed("1,\\!000"), "1000", True),  # \! digit grouping
    (boxed("1,\\!000,\\!000"), "1000000", True),
    (boxed("1e-3"), ["1 \\times 10^{-3}", "10^{-3}\n"], True),  # e-notation response, Minerva alternatives
    (boxed("2.7778e-6"), "2.7778 \\times 10^{-6}\n", True),
    (boxed("5.89e-7"), "5.89 \\times 10^{-7}\n", True),
    (boxed("2.55e-10"), "3.61e-10", True),  # authors' leniency: both round to 0 at 6 decimals
    (boxed("4.5e33"), "4.5 \\times 10^{33}", False),
    (boxed("0.003"), "0.003^{\\prime \\prime}\n", True),
    (boxed("-3./2"), "-3/2\n", True),
    (boxed("E_{1},E_{2}"), "E_1, E_2", True),
    (boxed("\\frac{1}{m} t"), ["\\frac{t}{m}\n", "\\frac{1}{m}t\n"], True),
    (boxed("1+\\sqrt{3} i"), ["1 + i\\sqrt{3}\n", "1 + i \\sqrt{3}\n"], False),
    # --- gold lists (Minerva: 2-3 accepted answers): any may match ---
    (boxed("6630"), ["6630.65\n", "6630\n"], True),
    (boxed("6630.65"), ["6630.65\n", "6630\n"], True),
    (boxed("3"), ["2", "3"], True),
    (boxed("4"), ["2", "3"], False),
    (boxed("0.6"), ["6/10", "0.6"], True),
    # --- what counts as the final answer: only \boxed{...}, the last one, braced and closed ---
    ("\\fbox{5}", "5", False),
    ("$\\boxed 5$.", "5", False),
    ("\\boxed{3} then \\fbox{4}", "4", False),
    ("\\boxed{3} then \\fbox{4}", "3", True),  # \fbox is ignored, the last \boxed counts
    ("The answer is 4.", "4", False),
    ("I think \\boxed{3}. Wait, no: \\boxed{4}", "4", True),
    ("I think \\boxed{3}. Wait, no: \\boxed{4}", "3", False),
    ("\\boxed{4} and a stray \\boxed", "4", False),  # the last \boxed has no argument: no answer
    ("... so \\boxed{\\frac{1}{", "0.5", False),  # cut inside the box
    ("\\boxed{}", "0", False),
    (boxed("\\frac{\\sqrt{3}}{2}"), "\\frac{\\sqrt3}{2}", True),  # nested braces
    # --- MATH (Hendrycks) normalisation ---
    (boxed("\\dfrac{1}{2}"), "\\frac{1}{2}", True),
    (boxed("\\tfrac12"), "\\frac{1}{2}", True),
    (boxed("0.5"), "\\frac{1}{2}", True),
    (boxed("1/2"), "\\frac{1}{2}", True),
    (boxed("\\text{Evelyn}"), "\\text{Evelyn}", True),
    (boxed("Evelyn"), "\\text{Evelyn}", True),
    (boxed("10\\text{ cm}"), "10", True),
    (boxed("5 \\text{ inches}"), "5", True),
    (boxed("x = 5"), "5", True),
    (boxed("k=5"), "5", True),
    (boxed("5\\sqrt2"), "5\\sqrt{2}", True),
    (boxed("\\left( 3, \\frac{\\pi}{2} \\right)"), "(3,\\frac{\\pi}{2})", True),
    (boxed("\\$18.90"), "18.90", True),
    (boxed("90^\\circ"), "90", True),
    (boxed(".5"), "0.5", True),
    (boxed("\\begin{bmatrix} 1 \\\\ 2 \\end{bmatrix}"), "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
    (boxed("x \\neq 2"), "x \\ne 2", True),
    (boxed("12 apples"), "12", True),  # unit words
    (boxed("3 sq m"), "3", True),
    (boxed("1950^\\circ C"), "1950", False),
    # --- PRM800K: normal forms, tuples and intervals, fractions as written, integers exactly, sympy ---
    (boxed("x^2+1"), "1+x^2", True),
    (boxed("(1,2)"), "[1,2]", False),
    (boxed("(1, 2)"), "(1,2)", True),
    (boxed("[0,1)"), "[0,1)", True),
    (boxed("[0,1]"), "[0,1)", False),
    (boxed("2/4"), "1/2", True),
    (boxed("3.0"), "3", True),
    (boxed("2.5"), "5/2", True),
    (boxed("1.5 million"), "1500000", False),
    (boxed("7 \\frac{3}{4}"), "\\frac{31}{4}", True),  # mixed number
    (boxed("\\frac{10}{4}"), "\\frac{5}{2}", True),
    (boxed("1,000"), "1000", True),
    (boxed("MONDAY"), "\\text{Monday}", True),  # text answers are case-insensitive
    (boxed("11\\text{ cm}"), "10", False),
    (boxed("-\\frac{1}{2}"), "0.5", False),
    (boxed("\\frac{1}{3}"), "0.33", False),
    (boxed("0.333"), "\\frac{1}{3}", False),
    # --- math-verify ---
    (boxed("\\pi/2"), "\\frac{\\pi}{2}", True),
    (boxed("\\{1,2\\}"), "\\{2,1\\}", True),
    (boxed("\\sqrt{8}"), "2\\sqrt{2}", True),
    (boxed("x \\in [1, 2]"), "[1,2]", True),
    (boxed("e^{i\\pi}"), "-1", False),
    (boxed("\\frac{\\sqrt{6}}{3}"), "\\sqrt{\\frac{2}{3}}", True),
    (boxed("2^{10}"), "1024", True),
    (boxed("y=2x+1"), "2x+1", True),
    (boxed("\\frac{4 A}{3+3 i} e^{i t}"), "\\frac{4A}{3+3i}e^{it}\n", True),
    # --- gold answers as datasets store them: numbers (AMC floats), boxed golds ---
    (boxed("142"), 142.0, True),
    (boxed("142.0"), 142.0, True),
    (boxed("143"), 142.0, False),
    (boxed("4"), "The answer is $\\boxed{4}$", True),
    (boxed("4"), "\\boxed 4", False),  # a gold whose box has no braces is no gold at all
    # --- long answers: repetition guard; a power tower is refused, not computed ---
    (boxed("1" * 200), "1" * 200, True),  # equal strings pass the first check before any guard
    (boxed("12" * 100), "12" * 100, True),
    (boxed("9**9**9"), "7", False),
]


def test_table_covers_at_least_sixty_cases_both_ways() -> None:
    assert len(CASES) >= 60
    assert sum(expected for *_, expected in CASES) >= 30 and sum(not e for *_, e in CASES) >= 20


@pytest.mark.parametrize(("response", "gold", "expected"), CASES)
def test_authors_decisions(response: str, gold: object, expected: bool) -> None:
    assert score_response(response, gold).reward == (1.0 if expected else 0.0)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{a^{b^{c}}}", "a^{b^{c}}"),
        ("first \\boxed{3}, then \\boxed{4}.", "4"),
        ("\\fbox{7}", None),
        ("\\boxed{1} and finally \\fbox{2}", "1"),
        ("$\\boxed 5$.", None),
        ("\\boxed{2} then \\boxed 3", None),
        ("no box at all", None),
        ("cut inside \\boxed{\\frac{1}{", None),
        ("\\boxed{}", ""),
        ("\\boxedx{3}", None),
    ],
)
def test_last_boxed_answer(text: str, answer: str | None) -> None:
    assert last_boxed_answer(text) == answer


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        (" \\text{ 12 } ", "12"),
        ("k = \\frac12", "\\frac{1}{2}"),
        ("\\sqrt3 + 1", "\\sqrt{3}+1"),
        ("3/4", "\\frac{3}{4}"),
        ("50\\%", "50"),
        ("5 \\text{ cm}", "5"),
        ("x \\text{ a} + \\text{ b}", "x"),  # a trailing \text{...} goes first, from the first \text{ on
        ("\\text{ q} + \\text{ r} + 1", "\\text{ q} + \\text{ r} + 1"),  # two "\text{ " groups: input kept
        ("2\\sqrt", "2\\sqrt"),  # a trailing \sqrt cannot be fixed: the input is kept
        ("\\frac1", "\\frac1"),
        ("4 apples", "4"),
    ],
)
def test_hendrycks_normal_form(raw: str, normal: str) -> None:
    assert normalize_hendrycks(raw) == normal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("\\$5", "5"),
        ("10\\%", "10"),
        ("3 or 4", "3,4"),
        ("2 million", "2*10^6"),
        ("5 meters", "5"),
        ("90^\\circ", "90"),
        ("{7}", "7"),
        ("1,\\!000", "1000"),
        ("4.0", "4"),
        ("\\frac{1}{2}", "1/2"),
        ("\\sqrt{2}", "sqrt(2)"),
        ("7 3/4", "7+3/4"),
        ("\\text{Yes}", "yes"),
        ("1,000,000", "1000000"),
    ],
)
def test_prm800k_normal_form(raw: str, normal: str) -> None:
    assert normalize_prm800k(raw) == normal


def _lcp_sum_brute_force(text: str) -> int:
    suffixes = sorted(text[i:] for i in range(len(text)))
    total = 0
    for a, b in itertools.pairwise(suffixes):
        total += next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return total


def test_repetitive_is_the_common_prefix_fraction() -> None:
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 90)
        alphabet = rng.choice(["ab", "abc", "0123456789"])
        if rng.random() < 0.5:
            unit = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            text = (unit * n)[:n]
        else:
            text = "".join(rng.choice(alphabet) for _ in range(n))
        assert repetitive(text) == (_lcp_sum_brute_force(text) * 2 / (n * (n + 1)) > 0.2)
    assert repetitive("ab" * 100) and not repetitive("".join(chr(0x4E00 + i) for i in range(200)))
    assert not repetitive("") and not repetitive("x")


def test_long_repetitive_answer_is_refused_before_math_verify() -> None:
    """1+1+...+1 (100 ones) is 100 for math-verify, but at 199 characters it is repetition: refused. Sixty ones
    (119 characters) are short enough to be read."""
    ones = "+".join(["1"] * 100)
    assert len(ones) > 128 and repetitive(ones)
    assert score_response(boxed(ones), "100").reward == 0.0
    assert score_response(boxed("+".join(["1"] * 60)), "60").reward == 1.0


def test_gold_types() -> None:
    assert gold_list(142.0) == ["142.0"] and gold_list(7) == ["7"]
    assert gold_list(["a", 2.5]) == ["a", "2.5"]
    with pytest.raises(TypeError, match="gold answer"):
        gold_list(True)
    with pytest.raises(TypeError, match="gold answer"):
        gold_list([["nested"]])
    with pytest.raises(TypeError, match="gold answer"):
        gold_list(None)  # type: ignore[arg-type]
    assert not grade_answer(None, "4")


def test_score_records_the_final_answer() -> None:
    assert score_response("\\boxed{3} then \\boxed{\\frac{1}{2}}", "0.5") == Score(1.0, "\\frac{1}{2}")
    assert score_response("\\boxed{x}", "y").extracted == "x"
    assert score_response("no box", "y").extracted is None


def test_training_reward_is_the_score_of_the_response() -> None:
    response = "\\boxed{4} and then I kept talking"
    assert math_reward(response, "4") == score_response(response, "4").reward == 1.0
    assert math_reward(response, "5") == 0.0


def test_grading_off_the_main_thread() -> None:
    """Signals (the time limits) are main-thread only; a Ray worker thread or pool must still grade."""
    results: list[float] = []
    thread = threading.Thread(
        target=lambda: results.extend(score_response(boxed(a), g).reward for a, g in [("\\dfrac{2}{4}", "0.5")])
    )
    thread.start()
    thread.join()
    assert results == [1.0]


def test_time_limit_interrupts_and_restores() -> None:
    started = time.monotonic()
    with pytest.raises(GradingTimeout), time_limit(0.05):
        while True:
            pass
    assert time.monotonic() - started < 5
    with time_limit(5):  # a body that finishes in time leaves no alarm behind
        pass
    time.sleep(0.1)
