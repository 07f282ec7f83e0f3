"""Second check of the authors' grader: PRM800K's normalisation, then element-wise sympy equivalence.

understand-r1-zero's ``grade_answer_sympy`` is OpenAI PRM800K's grader (``prm800k/grading/grader.py``): normalise
both answers (units, ``$``/``%``, ``\\text{}``, LaTeX rendered to text by pylatexenc, case), accept equal strings,
else split tuples/intervals and compare element by element: fractions ``a/b`` only as written (unreduced fractions are
wrong), integers only exactly, anything else by ``sympy.simplify(gold - given) == 0``.

sympy parses with ``parse_expr`` (Python evaluation), so PRM800K refuses expressions that could run for ever: more
than two distinct letters, ``^{``/``^(``, a power tower or a multi-digit exponent. One addition (a documented
difference, docs/eval.md): the same refusals apply to a literal ``**``, which PRM800K only meets through ``^``;
``9**9**9`` would otherwise hang the grader in big-integer arithmetic that no timer can interrupt.
"""

from __future__ import annotations

import contextlib
import re

import sympy
from pylatexenc import latex2text
from sympy.parsing import sympy_parser

_TEXT_WRAPPED = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_UNIT_NAMES = (
    "degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month", "year",
    "foot", "feet", "inch", "yard",
)  # fmt: skip
_UNIT_PATTERNS = tuple(re.compile(name + r"(es)?(s)? *(\^[0-9]+)?") for name in _UNIT_NAMES)
_DEGREE = re.compile(r"\^ *\\circ")
_THIN_SPACE_COMMA = re.compile(r",\\! *")
_MINUS_SPACE = re.compile(r"- *")
_MIXED_NUMBER = re.compile(r"([0-9]) +([0-9])")  # "7 3/4" -> "7+3/4"
_THOUSANDS_COMMA = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_TUPLE_CHARS = "()[]"
_UNSAFE_SUBSTRINGS = ("^{", "^(", "**{", "**(")
_UNSAFE_PATTERNS = tuple(
    re.compile(p) for p in (r"\^[0-9]+\^", r"\^[0-9][0-9]+", r"\*\*[0-9]+\*\*", r"\*\*[0-9][0-9]+")
)
_SYMPY_TRANSFORMS = (*sympy_parser.standard_transformations, sympy_parser.implicit_multiplication_application)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_integral(value: float) -> bool:
    try:
        return abs(value - round(value)) <= 1e-7
    except (OverflowError, ValueError):  # inf, nan
        return False


def _strip_thousands_commas(text: str) -> str:
    """``1,000,000`` -> ``1000000``; tuple commas (``1,2``) stay."""
    while True:
        stripped = _THOUSANDS_COMMA.sub(r"\1\3\4", text)
        if stripped == text:
            return text
        text = stripped


def _is_integer_string(text: str) -> bool:
    value = _float_or_none(_strip_thousands_commas(text))
    return value is not None and _is_integral(value)


def _latex_to_text(expr: str) -> str:
    """LaTeX rendered as plain text by pylatexenc, with the symbols sympy needs spelled out."""
    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    text = latex2text.LatexNodes2Text().latex_to_text(expr)
    for symbol, name in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        text = text.replace(symbol, name)
    return text.strip()


def normalize_prm800k(expr: str | None) -> str | None:
    """PRM800K's normal form of an answer (None stays None)."""
    if expr is None:
        return None
    wrapped = _TEXT_WRAPPED.search(expr)
    if wrapped is not None:
        expr = wrapped.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for pattern in _UNIT_PATTERNS:
        expr = pattern.sub("", expr)
    expr = _DEGREE.sub("", expr)
    if expr[:1] == "{" and expr[-1:] == "}":
        expr = expr[1:-1]
    expr = _THIN_SPACE_COMMA.sub("", expr)
    value = _float_or_none(expr)
    if value is not None and _is_integral(value):
        expr = str(round(value))
    if "\\" in expr:
        with contextlib.suppress(Exception):  # pylatexenc gives up on malformed LaTeX: keep the text as it is
            expr = _latex_to_text(expr)
    expr = _MIXED_NUMBER.sub(r"\1+\2", _MINUS_SPACE.sub("-", expr))
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _is_integer_string(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def _split_tuple(expr: str) -> list[str]:
    """Elements of ``(a,b)`` / ``[a,b)`` ...; anything else is one element."""
    expr = _strip_thousands_commas(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if (
        len(expr) > 2
        and expr[0] in _TUPLE_CHARS
        and expr[-1] in _TUPLE_CHARS
        and not any(c in inner for c in _TUPLE_CHARS)
    ):
        return [element.strip() for element in inner.split(",")]
    return [expr]


def _safe_for_sympy(expr: str) -> bool:
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2:
        return False
    if any(s in expr for s in _UNSAFE_SUBSTRINGS):
        return False
    return not any(p.search(expr) for p in _UNSAFE_PATTERNS)


def _sympy_equal(gold: str, given: str) -> bool:
    expr = f"({gold})-({given})"
    if not _safe_for_sympy(expr):
        return False
    try:
        difference = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=_SYMPY_TRANSFORMS)
        return bool(sympy.simplify(difference) == 0)
    except Exception:  # unparsable text, or sympy failing on it: not equal
        return False


def _element_equal(gold: str, given: str) -> bool:
    if _FRACTION.search(gold) and _FRACTION.search(given):
        return gold == given  # an unreduced fraction is not accepted for a reduced one
    if _is_integer_string(gold) != _is_integer_string(given):
        return False  # an integer gold needs an integer answer
    return _sympy_equal(gold, given)


def prm800k_equal(given: str, gold: str | None) -> bool:
    """PRM800K's decision: normal forms equal, or equal element by element under the rules above."""
    gold_norm, given_norm = normalize_prm800k(gold), normalize_prm800k(given)
    if gold_norm is None:
        return False
    if gold_norm == given_norm:
        return True
    if not given_norm:
        return False
    gold_elements, given_elements = _split_tuple(gold_norm), _split_tuple(given_norm)
    if len(gold_elements) > 1 and (gold_norm[0] != given_norm[0] or gold_norm[-1] != given_norm[-1]):
        return False  # brackets differ: (a,b) is not [a,b]
    if len(gold_elements) != len(given_elements):
        return False
    return all(_element_equal(g, a) for g, a in zip(gold_elements, given_elements, strict=True))
