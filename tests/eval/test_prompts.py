"""The qwen_math prompt: exact string, and the Jinja template for NeMo RL renders the same text and token ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from holder_nemo.eval.prompts import (
    QWEN_MATH_CHAT_TEMPLATE,
    QWEN_MATH_SYSTEM_PROMPT,
    apply_qwen_math_template,
    apply_template,
)

PROBLEM = "Let $f(x) = \\frac{1}{x}$. Find $f(2)$.\nGive {braces} a try."


def test_qwen_math_string_is_the_papers() -> None:
    assert QWEN_MATH_SYSTEM_PROMPT == "Please reason step by step, and put your final answer within \\boxed{}."
    assert apply_qwen_math_template("Q") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    )
    assert apply_template("no", PROBLEM) == PROBLEM


@pytest.mark.parametrize(
    "messages",
    [
        # system + user, as NeMo RL's math processor sends with a system prompt file
        [{"role": "system", "content": QWEN_MATH_SYSTEM_PROMPT}, {"role": "user", "content": PROBLEM}],
        [{"role": "user", "content": PROBLEM}],  # no system prompt file: the template supplies it
        [{"role": "system", "content": QWEN_MATH_SYSTEM_PROMPT + "\n"}, {"role": "user", "content": PROBLEM}],
    ],
)
def test_jinja_template_renders_the_same_prompt(tiny_model_dir: Path, messages: list[dict[str, str]]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = QWEN_MATH_CHAT_TEMPLATE  # the text of QWEN_MATH_JINJA_PATH
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == apply_qwen_math_template(PROBLEM)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == tokenizer(apply_qwen_math_template(PROBLEM), add_special_tokens=True)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # special tokens are single ids


def test_training_recipe_renders_the_same_prompt(tiny_model_dir: Path) -> None:
    """Training / in-training validation (recipes/holderpo_base.yaml) and `holderpo eval` see the same prompt."""
    import yaml
    from transformers import AutoTokenizer

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "holderpo_base.yaml"
    if not recipe.is_file():
        pytest.skip(f"{recipe} not present")
    tokenizer_cfg = yaml.safe_load(recipe.read_text())["policy"]["tokenizer"]
    template = str(tokenizer_cfg["chat_template"])
    if template.endswith(".jinja"):  # a path, relative to the repository root where runs start
        template = (recipe.parents[1] / template).read_text()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = template
    messages = [{"role": "user", "content": PROBLEM}]  # data.default.system_prompt_file: null, prompt_file: null
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == apply_qwen_math_template(PROBLEM)
