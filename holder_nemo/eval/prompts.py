"""Prompt templates of the paper's maths runs (oat / understand-r1-zero ``--prompt_template qwen_math``).

The template is a fixed ChatML string applied to the raw problem, *not* the model tokenizer's own chat template:
the authors apply it with ``apply_chat_template=False`` for every base model (Qwen2.5-Math, R1-Distill-Qwen, Qwen3).
Using the tokenizer's template instead would change the prompt for R1-Distill and Qwen3, so both our evaluation
backends and NeMo RL's in-training validation (through ``QWEN_MATH_CHAT_TEMPLATE`` / its file
``QWEN_MATH_JINJA_PATH`` as ``policy.tokenizer.chat_template``) render exactly this string.
"""

from __future__ import annotations

from pathlib import Path

QWEN_MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# Jinja chat template for NeMo RL (``policy.tokenizer.chat_template``, as a path or as this string): renders, for the
# messages [system?, user] with add_generation_prompt=True, the same string as ``apply_qwen_math_template``. A leading
# system message replaces the default system prompt (trimmed, so a prompt file's trailing newline does not matter).
QWEN_MATH_JINJA_PATH = Path(__file__).with_name("templates") / "qwen_math.jinja"
QWEN_MATH_CHAT_TEMPLATE = QWEN_MATH_JINJA_PATH.read_text(encoding="utf-8")


def apply_qwen_math_template(problem: str) -> str:
    """The qwen_math prompt for one problem: system prompt, user turn, open assistant turn."""
    return (
        f"<|im_start|>system\n{QWEN_MATH_SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{problem}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def apply_template(name: str, problem: str) -> str:
    """Format ``problem`` with the template called ``name`` (``EvalConfig.prompt_template`` allows these two):
    "qwen_math", or "no", the raw problem (oat's ``--prompt_template no``)."""
    return apply_qwen_math_template(problem) if name == "qwen_math" else problem
