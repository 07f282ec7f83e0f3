"""Which training replies were cut by a length limit (vLLM ``finish_reason == "length"``), from token counts."""

from __future__ import annotations

import pytest

from holder_nemo.eval.rollout_limits import cut_by_length, length_limits


def conversation(*lengths: tuple[str, int]) -> list[dict]:
    return [{"role": role, "content": "", "token_ids": [0] * n} for role, n in lengths]


@pytest.mark.parametrize(
    ("turns", "max_new_tokens", "max_model_len", "cut"),
    [
        ((("user", 10), ("assistant", 5)), 8, 100, False),
        ((("user", 10), ("assistant", 8)), 8, 100, True),  # reached max_new_tokens
        ((("user", 10), ("assistant", 9)), 8, 100, True),
        ((("user", 95), ("assistant", 5)), 8, 100, True),  # prompt + reply reached max_model_len
        ((("user", 94), ("assistant", 5)), 8, 100, False),
        ((("system", 40), ("user", 55), ("assistant", 5)), 8, 100, True),  # every message before counts
        ((("user", 10), ("assistant", 8)), None, None, False),  # limits off: graded like any reply
        ((("user", 10), ("assistant", 8), ("environment", 50)), 9, 60, False),  # later messages do not count
        ((("user", 10),), 1, 1, False),  # no reply
    ],
)
def test_cut_by_length(turns, max_new_tokens, max_model_len, cut) -> None:
    assert cut_by_length(conversation(*turns), max_new_tokens, max_model_len) is cut


def test_message_without_token_ids_counts_zero() -> None:
    assert not cut_by_length([{"role": "user"}, {"role": "assistant", "content": "x"}], 1, 1)


def test_length_limits_config() -> None:
    assert length_limits({"num_workers": 8, "max_new_tokens": 3000, "max_model_len": 4096}) == (3000, 4096)
    assert length_limits({"num_workers": 8}) == (None, None)
    with pytest.raises(ValueError, match=r"env.holder_math: unknown keys \['max_tokens'\]"):
        length_limits({"num_workers": 8, "max_tokens": 3})
    with pytest.raises(ValueError, match=r"env.holder_math.max_model_len must be an integer >= 1 or null, got 0"):
        length_limits({"max_model_len": 0})
    with pytest.raises(ValueError, match="max_new_tokens"):
        length_limits({"max_new_tokens": True})
