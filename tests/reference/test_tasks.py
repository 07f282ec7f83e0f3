"""Built-in digit task and maths JSONL task: prompts are pure functions of the data position; rewards by hand."""

from __future__ import annotations

import json

import pytest

from holder_nemo.reference.tasks import ArithmeticWordTask, DigitsTask, Example, MathJsonlTask


def test_digit_prompts_are_deterministic_and_well_formed():
    task = DigitsTask("add", 1, 3, "exact", seed=7)
    a, b = task.prompts(10, 5), task.prompts(10, 5)
    assert a == b
    assert task.prompts(12, 1)[0] == a[2]  # position, not call history, determines the prompt
    for ex in a:
        lhs, rhs = ex.prompt.rstrip("=").split("+")
        assert ex.answer == str(int(lhs) + int(rhs))
    rev = DigitsTask("reverse", 3, 3, "exact", seed=0).example(0)
    assert rev.answer == rev.prompt.rstrip("=")[::-1]


def test_exact_reward():
    task = DigitsTask("copy", 1, 2, "exact", seed=0)
    ex = Example("12=", "12")
    assert task.reward(ex, "12", finished=True) == 1.0
    assert task.reward(ex, "12", finished=False) == 0.0  # truncated: no <eos>
    assert task.reward(ex, "13", finished=True) == 0.0


def test_partial_reward_by_hand():
    task = DigitsTask("copy", 1, 2, "partial", seed=0)
    ex = Example("12=", "12")  # target tokens: 1 2 <eos>
    assert task.reward(ex, "12", True) == 1.0
    assert task.reward(ex, "13", True) == pytest.approx(2 / 3)  # 1, <eos> match
    assert task.reward(ex, "12", False) == pytest.approx(2 / 3)  # 1, 2 match; <eos> missing
    assert task.reward(ex, "123", True) == pytest.approx(2 / 4)  # 1 2 3 <eos> vs 1 2 <eos>: 2 of 4
    assert task.reward(ex, "", True) == pytest.approx(0.0)  # <eos> vs 1
    assert task.reward(ex, "1", True) == pytest.approx(1 / 3)


def test_math_jsonl_order_is_a_seeded_permutation(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(5)))
    task = MathJsonlTask(path, seed=3)
    epoch0 = task.prompts(0, 5)
    assert sorted(ex.answer for ex in epoch0) == ["1", "2", "3", "4", "5"]  # every row once per epoch
    assert task.prompts(2, 4) == [*epoch0[2:], task.prompts(5, 1)[0]]  # crosses into epoch 1
    assert "\\boxed{}" in epoch0[0].prompt


def test_math_jsonl_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match="problem"):
        MathJsonlTask(bad, seed=0)


def test_math_reward_uses_math_verify(tmp_path):
    pytest.importorskip("holder_nemo.eval.scoring", reason="holder_nemo.eval.scoring (eval helper) not importable")
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"problem": "Half of 1?", "answer": "\\frac{1}{2}"}) + "\n")
    task = MathJsonlTask(path, seed=0)
    ex = task.prompts(0, 1)[0]
    assert task.reward(ex, "so the answer is \\boxed{0.5}", finished=True) == 1.0
    assert task.reward(ex, "so the answer is \\boxed{0.5}", finished=False) == 0.0  # truncated
    assert task.reward(ex, "\\boxed{2}", finished=True) == 0.0


def test_repeat_tiles_the_number_to_the_answer_length():
    task = DigitsTask("repeat", 1, 2, "partial", seed=3, repeat_length=8)
    for ex in task.prompts(0, 20):
        number = ex.prompt.rstrip("=")
        assert len(ex.answer) == 8
        assert ex.answer == (number * 8)[:8]
    three = DigitsTask("repeat", 3, 3, "exact", seed=0, repeat_length=5).example(0)
    assert three.answer == three.prompt[:3] + three.prompt[:2]


def test_special_tokens_inside_a_response_count_as_wrong_tokens():
    """Decoding used to drop "<bos>"/"<pad>", so a policy could shorten a truncated answer by emitting them and score
    above the honest ceiling (8/9 instead of 8/10 for 8 right digits, truncated at 10 tokens)."""
    task = DigitsTask("repeat", 1, 1, "partial", seed=0)
    ex = Example("7=", "77777777")  # target: 8 x "7", <eos>
    assert task.reward(ex, "7777777777", finished=False) == pytest.approx(8 / 10)
    # 10 tokens: <bos> and the 9th "7" are wrong (dropping <bos> made it 8 right of 9 = 0.889)
    assert task.reward(ex, "<bos>777777777", finished=False) == pytest.approx(7 / 10)
    assert task.reward(ex, "77777777<pad><pad>", finished=False) == pytest.approx(8 / 10)
    assert task.reward(ex, "77777777", finished=True) == 1.0
    assert DigitsTask("copy", 1, 2, "exact", seed=0).reward(Example("1=", "1"), "<bos>1", finished=True) == 0.0
    assert DigitsTask.keep_special_tokens and not MathJsonlTask.keep_special_tokens


def _chat_tokenizer():
    from holder_nemo.reference.model import build_char_tokenizer

    tok = build_char_tokenizer(DigitsTask.alphabet)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    return tok


def test_arithmetic_word_problems_are_deterministic_and_their_answers_right():
    import re

    task = ArithmeticWordTask(seed=5, tokenizer=_chat_tokenizer())
    assert task.prompts(3, 4) == task.prompts(3, 4)
    assert task.prompts(4, 1)[0] == task.prompts(3, 2)[1]  # the position, not the call history
    phrasings = set()
    for index in range(200):
        text, answer = task.problem(index)
        a, b = (int(x) for x in re.findall(r"\d+", text))
        assert int(answer) == a + b and 3 <= a <= 20 and 2 <= b <= 9
        phrasings.add(next(w for w in ("buys", "finds", "puts in") if w in text))
    assert len(phrasings) == 3
    prompt = task.prompts(0, 1)[0].prompt
    assert prompt.count("\\boxed{}") == 2  # the worked example's question and the problem both ask for a box
    assert "The answer is \\boxed{7}." in prompt and prompt.endswith("<assistant>")


def test_arithmetic_reward_is_holderpo_evals_scorer():
    pytest.importorskip("holder_nemo.eval.scoring", reason="holder_nemo.eval.scoring (eval helper) not importable")
    task = ArithmeticWordTask(seed=0, tokenizer=_chat_tokenizer())
    ex = Example("", "12")
    assert task.reward(ex, "7 + 5 = 12. The answer is \\boxed{12}.", finished=True) == 1.0
    assert task.reward(ex, "The answer is 12.", finished=True) == 0.0  # no box, no credit
    assert task.reward(ex, "\\boxed{12}", finished=False) == 0.0  # truncated
    assert task.reward(ex, "\\boxed{12} then \\boxed{13}", finished=True) == 0.0  # the last box counts
    with pytest.raises(ValueError, match="chat template"):
        ArithmeticWordTask(seed=0, tokenizer=object())
