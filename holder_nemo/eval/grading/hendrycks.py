"""First check of the authors' grader: equality after the MATH (Hendrycks et al.) answer normalisation.

understand-r1-zero's ``grade_answer_mathd`` compares the two answers after the normalisation of the MATH release,
which the authors extended (matrices, ``\\neq``/``\\leq``/``\\geq``, ``\\left``/``\\right``, a trailing ``\\text{...}``
and a list of unit words). Decisions depend on every step and on their order, so this module reproduces them in
order; each step says what it does to the string. When the MATH normalisation fails half-way (two ``\\text{ ``
unit groups, a trailing ``\\sqrt`` or ``\\frac`` with nothing after it) the authors fall back to the input (trimmed,
an enclosing ``\\text{}`` removed): so do we.
"""

from __future__ import annotations

import re

# Unit and filler words removed as whole words (``(^|\W)word($|\W)``), twice over, in this order. This is data, not
# code: the list the authors' normaliser uses (understand-r1-zero ``math_grader.unit_texts``, "mainly from MathQA",
# MIT licence), followed by each word with an "s" appended, duplicates included. The words are regex fragments as
# given (not escaped), so "q ." also removes "q x". Order matters: "sq m" must go before "m".
_UNIT_WORDS_SINGULAR: tuple[str, ...] = (
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey", "prime",
    "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab", "way", "west",
    "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h", "no change", "men", "soldier", "pie", "bc",
    "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th", "π r 2",
    "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw", "yr", "women", "feet", "am", "pm",
    "hr", "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph",
    "day", "hour", "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³",
    "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm",
    "apple", "liter", "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre",
    "pi sq m", "s .", "metre", "meter", "inch",
)  # fmt: skip
UNIT_WORDS: tuple[str, ...] = _UNIT_WORDS_SINGULAR + tuple(word + "s" for word in _UNIT_WORDS_SINGULAR)
_UNIT_PATTERNS = tuple(re.compile(r"(^|\W)" + word + r"($|\W)") for word in UNIT_WORDS)

_TEXT_WRAPPED = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_ARRAY_BEGIN = re.compile(r"\\begin\{array\}\{.*?\}")
_ARRAY_END = re.compile(r"\\end\{array\}")
_TRAILING_TEXT = re.compile(r"\\text{.*?}$")


class _Fallback(Exception):
    """The MATH normalisation cannot go on; the caller returns its input instead."""


def _braced_sqrt(s: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}`` (one character); a ``\\sqrt`` at the very end cannot be fixed."""
    if "\\sqrt" not in s:
        return s
    head, *pieces = s.split("\\sqrt")
    out = [head]
    for piece in pieces:
        if not piece:
            raise _Fallback
        out.append("\\sqrt" + piece if piece[0] == "{" else "\\sqrt{" + piece[0] + "}" + piece[1:])
    return "".join(out)


def _braced_frac(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``; unchanged if a ``\\frac`` is followed
    by a single character; a ``\\frac`` at the very end cannot be fixed."""
    head, *pieces = s.split("\\frac")
    out = [head]
    for piece in pieces:
        out.append("\\frac")
        if not piece:
            raise _Fallback
        if piece[0] == "{":
            out.append(piece)
            continue
        if len(piece) < 2:
            return s
        numerator, second, rest = piece[0], piece[1], piece[2:]
        out.append("{" + numerator + "}" + (second if second == "{" else "{" + second + "}") + rest)
    return "".join(out)


def _slash_to_frac(s: str) -> str:
    """``a/b`` with two integers written plainly -> ``\\frac{a}{b}``."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        numerator, denominator = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    if s != f"{numerator}/{denominator}":
        return s
    return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


def _canonical(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = _ARRAY_END.sub(r"\\end{pmatrix}", _ARRAY_BEGIN.sub(r"\\begin{pmatrix}", s)).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "")
    without_text = _TRAILING_TEXT.sub("", s).strip()  # "5\text{ cm}" -> "5", unless nothing would remain
    if without_text:
        s = without_text
    for _ in range(2):
        for pattern in _UNIT_PATTERNS:
            without_unit = pattern.sub(r"\1\2", s)
            if without_unit:
                s = without_unit
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # MATH: "\text{ " only ever introduces units on the right
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise _Fallback
        s = parts[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> "5"
        s = sides[1]
    s = _braced_sqrt(s).replace(" ", "")
    s = _braced_frac(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def normalize_hendrycks(answer: str | None) -> str | None:
    """The answer in the MATH normal form (None stays None)."""
    if answer is None:
        return None
    answer = answer.strip()
    wrapped = _TEXT_WRAPPED.search(answer)
    if wrapped is not None:
        answer = wrapped.group("text").strip()
    try:
        return _canonical(answer)
    except _Fallback:
        return answer


def hendrycks_equal(given: str, gold: str | None) -> bool:
    """True when both answers have the same MATH normal form."""
    return normalize_hendrycks(gold) == normalize_hendrycks(given)
