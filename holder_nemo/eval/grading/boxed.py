"""The final answer of a response: the content of its last ``\\boxed{...}``, as the authors' grader reads it.

The rule (understand-r1-zero ``extract_answer``, which HölderPO's evaluation and training reward call):

* only ``\\boxed`` counts; ``\\fbox{...}`` is not an answer;
* the *last* occurrence of ``\\boxed`` is the answer's start, whatever follows it;
* it must be followed directly by ``{``: ``\\boxed 5`` or a trailing bare ``\\boxed`` means no answer, even when
  an earlier well-formed box exists;
* braces are matched, so nested groups (``\\frac{1}{2}``) stay inside; an unclosed box (a generation cut inside it)
  means no answer.
"""

from __future__ import annotations

BOX = "\\boxed"


def last_boxed_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` of ``text`` (braces matched), or None when there is no answer."""
    start = text.rfind(BOX)
    if start < 0:
        return None
    open_at = start + len(BOX)
    if not text.startswith("{", open_at):
        return None
    depth = 0
    for j in range(open_at, len(text)):
        char = text[j]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : j]
    return None
