"""Verifiable tasks for the reference run: a built-in digit task (learnable from random init) and maths JSONL.

A task is a prompt source plus a reward: ``prompts(start, count) -> list[Example]`` is a pure function of the task's
seed and the data position ``start`` (so a resumed run sees exactly the prompts the uninterrupted run saw), and
``reward(example, response_text, finished) -> float`` in [0, 1].
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from holder_nemo.config.errors import ConfigError

# A response is decoded with its special tokens kept (``keep_special_tokens``): "<bos>" counts as one wrong token.
SPECIAL_OR_CHAR = re.compile(r"<[a-z]+>|.", re.DOTALL)


@dataclass(frozen=True)
class Example:
    """One prompt: ``prompt`` is the text fed to the model, ``answer`` the reference the reward checks against."""

    prompt: str
    answer: str


class DigitsTask:
    """``op`` over random numbers of ``min_digits..max_digits`` digits: "123=" -> "123" (copy), "321" (reverse);
    "12+34=" -> "46" (add); "12=" -> "12121212" (repeat: the number tiled to ``repeat_length`` digits).

    Rewards: "exact" is 1.0 iff the response is the answer followed by <eos>; "partial" is the fraction of positions
    where the response tokens (with <eos> if the model emitted it) equal answer + <eos>, over the longer of the two,
    so an exact answer scores 1.0 and a truncated or over-long one less. Both are verifiable: no learned judge.
    """

    alphabet = "0123456789+="
    # The reward sees every token the model emitted: decoding must not drop a "<bos>" or "<pad>" inside a response
    # (a policy learnt to emit them to shorten its answer without <eos> when they were dropped).
    keep_special_tokens = True

    def __init__(
        self, op: str, min_digits: int, max_digits: int, reward: str, seed: int, *, repeat_length: int = 8
    ) -> None:
        # op, reward and repeat_length are checked by the recipe schema (reference/schema.py, DigitsSection)
        self.op, self.reward_kind, self.seed = op, reward, seed
        self.min_digits, self.max_digits, self.repeat_length = min_digits, max_digits, repeat_length

    def _number(self, rng: np.random.Generator) -> str:
        n = int(rng.integers(self.min_digits, self.max_digits + 1))
        return "".join(str(d) for d in rng.integers(0, 10, size=n))

    def example(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, index])
        a = self._number(rng)
        if self.op == "copy":
            return Example(f"{a}=", a)
        if self.op == "reverse":
            return Example(f"{a}=", a[::-1])
        if self.op == "repeat":
            return Example(f"{a}=", (a * self.repeat_length)[: self.repeat_length])
        b = self._number(rng)
        return Example(f"{a}+{b}=", str(int(a) + int(b)))

    def prompts(self, start: int, count: int) -> list[Example]:
        return [self.example(i) for i in range(start, start + count)]

    def reward(self, example: Example, response: str, finished: bool) -> float:
        if self.reward_kind == "exact":
            return float(finished and response == example.answer)
        target = [*example.answer, "<eos>"]
        got = SPECIAL_OR_CHAR.findall(response) + (["<eos>"] if finished else [])
        hits = sum(t == g for t, g in zip(target, got, strict=False))
        return hits / max(len(target), len(got))


def boxed_answer_reward(example: Example, response: str, finished: bool) -> float:
    """``holderpo eval``'s scorer: 1.0 iff the last ``\\boxed{}`` equals the answer under math-verify; truncated
    responses score 0, as in the paper's setup."""
    if not finished:
        return 0.0
    from holder_nemo.eval.scoring import math_reward

    return float(math_reward(response, example.answer))


class MathJsonlTask:
    """Maths problems from local JSONL (``problem``, ``answer``), scored by ``holder_nemo.eval.scoring.math_reward``.

    Prompts follow the qwen_math chat template when the tokenizer has a chat template; the order is a seeded
    permutation per epoch, so the data position (an integer) fully determines the next prompts.
    """

    def __init__(self, path: str | Path, seed: int, tokenizer=None) -> None:
        path = Path(path)  # an existing file: checked with the recipe (schema.missing_paths)
        rows = []
        with path.open() as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if "problem" not in row or "answer" not in row:
                    raise ConfigError("data.train_path", f"{path}:{line_no} needs keys 'problem' and 'answer'")
                rows.append(Example(self._format(str(row["problem"]), tokenizer), str(row["answer"])))
        if not rows:
            raise ConfigError("data.train_path", f"{path} has no rows")
        self.rows, self.seed = rows, seed

    keep_special_tokens = False  # math-verify reads the text; special tokens are not part of an answer

    @staticmethod
    def _format(problem: str, tokenizer) -> str:
        from holder_nemo.eval.prompts import QWEN_MATH_SYSTEM_PROMPT as system  # the paper's, owned by the eval

        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": system}, {"role": "user", "content": problem}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{system}\n\n{problem}\n"

    def _row(self, index: int) -> Example:
        epoch, offset = divmod(index, len(self.rows))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        return self.rows[int(order[offset])]

    def prompts(self, start: int, count: int) -> list[Example]:
        return [self._row(i) for i in range(start, start + count)]

    def reward(self, example: Example, response: str, finished: bool) -> float:
        return boxed_answer_reward(example, response, finished)


# One addition of small numbers (a in 3..20, b in 2..9), phrased three ways. With subtraction phrasings mixed in
# ("gives 9 to a friend", "takes out 6") SmolLM2-135M-Instruct got 3 of 64 sampled answers right at step 0, against
# 7 of 64 for these additions: too few groups with a correct answer for GRPO to learn from in a CPU-sized run.
ARITHMETIC_TEMPLATES: tuple[str, ...] = (
    "{n} has {a} {i} and buys {b} more. How many {i} does {n} have now?",
    "{n} has {a} {i} and finds {b} more. How many {i} does {n} have now?",
    "There are {a} {i} in a box and {n} puts in {b} more. How many {i} are in the box?",
)
ARITHMETIC_NAMES = ("Tom", "Anna", "Sam", "Lena", "Omar", "Mia", "Ravi", "Zoe")
ARITHMETIC_ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "coins", "shells")
BOX_INSTRUCTION = " Put the final answer in \\boxed{}."
# One worked example as a previous chat turn: without it a 135M instruct model rarely boxes its answer at all.
ARITHMETIC_SHOT = (
    "Ben has 4 cards and buys 3 more. How many cards does Ben have now?" + BOX_INSTRUCTION,
    "Ben has 4 + 3 = 7 cards. The answer is \\boxed{7}.",
)


class ArithmeticWordTask:
    """One-step addition word problems ("Tom has 7 apples and buys 5 more. How many apples does Tom have now?"),
    generated from ``(seed, index)`` like the digit task: nothing to download, and the data position fully
    determines the next prompts. The answer is graded by ``holderpo eval``'s scorer (math-verify on the last
    ``\\boxed{}``; truncated responses score 0).

    Prompt: the tokenizer's chat template with one worked example as a previous turn, then the problem and "Put the
    final answer in \\boxed{}." (the qwen_math system prompt alone leaves SmolLM2-135M-Instruct near 0 reward: it
    rarely boxes; with the example it scores 10-25 % at temperature 1, so many GRPO groups have mixed rewards).
    """

    keep_special_tokens = False

    def __init__(self, seed: int, tokenizer) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "policy.model_name",
                "data.task 'arith_words' needs a tokenizer with a chat template (an instruct model)",
            )
        self.seed, self.tokenizer = seed, tokenizer

    def problem(self, index: int) -> tuple[str, str]:
        """(problem text, answer) of prompt ``index``."""
        rng = np.random.default_rng([self.seed, index])
        template = ARITHMETIC_TEMPLATES[int(rng.integers(len(ARITHMETIC_TEMPLATES)))]
        a, b = int(rng.integers(3, 21)), int(rng.integers(2, 10))
        name = ARITHMETIC_NAMES[int(rng.integers(len(ARITHMETIC_NAMES)))]
        item = ARITHMETIC_ITEMS[int(rng.integers(len(ARITHMETIC_ITEMS)))]
        return template.format(n=name, i=item, a=a, b=b), str(a + b)

    def format(self, problem: str) -> str:
        shot_user, shot_assistant = ARITHMETIC_SHOT
        messages = [
            {"role": "user", "content": shot_user},
            {"role": "assistant", "content": shot_assistant},
            {"role": "user", "content": problem + BOX_INSTRUCTION},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompts(self, start: int, count: int) -> list[Example]:
        out = []
        for index in range(start, start + count):
            text, answer = self.problem(index)
            out.append(Example(self.format(text), answer))
        return out

    def reward(self, example: Example, response: str, finished: bool) -> float:
        return boxed_answer_reward(example, response, finished)
