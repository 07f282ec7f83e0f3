"""Rollout layout (NeMo RL's shift convention), sampler log-probs vs learner log-probs, GRPO / Dr.GRPO advantages."""

from __future__ import annotations

import torch

from holder_nemo.reference.model import build_char_tokenizer
from holder_nemo.reference.rollout import (
    build_batch,
    decode_responses,
    full_logprobs,
    group_advantages,
    sample_groups,
)
from holder_nemo.reference.tasks import DigitsTask


def test_group_advantages_match_hand_computation_in_float64():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    adv = group_advantages(rewards, 4, normalize_std=True)
    # group 1: mean 0.5, unbiased std sqrt(1/3); group 2: constant -> 0
    s = (1 / 3) ** 0.5
    expected = torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(adv, expected, rtol=1e-7, atol=1e-7)
    dr = group_advantages(rewards, 4, normalize_std=False)  # Dr.GRPO: mean only
    torch.testing.assert_close(dr, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0], dtype=torch.float64))


def test_build_batch_layout_by_hand():
    pad, eos = 0, 1
    prompt_ids = torch.tensor([[0, 5, 6], [7, 8, 9]])  # left-padded: lengths 2 and 3
    response_ids = torch.tensor([[3, eos, 0], [4, 4, 4]])  # row 0 ends with <eos>, row 1 truncated
    response_logprobs = torch.tensor([[-0.1, -0.2, -9.0], [-0.3, -0.4, -0.5]])
    batch, finished, lengths = build_batch(prompt_ids, response_ids, response_logprobs, [2, 3], pad, eos)
    assert batch["input_ids"].tolist() == [[5, 6, 3, eos, pad, pad], [7, 8, 9, 4, 4, 4]]
    assert batch["token_mask"].tolist() == [[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]]
    assert batch["input_lengths"].tolist() == [4, 6]
    torch.testing.assert_close(batch["generation_logprobs"][0], torch.tensor([0, 0, -0.1, -0.2, 0, 0]))
    assert finished.tolist() == [True, False]
    assert lengths.tolist() == [2, 3]


def test_sampler_logprobs_equal_learner_logprobs_at_the_shifted_positions(tiny_qwen2):
    """generation_logprobs (from generate's scores) and full_logprobs (teacher-forced) agree token by token,
    which pins down the [B, S] / next_token [B, S-1] shift and the temperature scaling."""
    torch.manual_seed(0)
    tok = build_char_tokenizer(DigitsTask.alphabet)
    sizes = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64}
    model = tiny_qwen2(tok, **sizes, max_position_embeddings=32).eval()
    task = DigitsTask("add", 1, 2, "exact", seed=0)  # prompts of different lengths -> left padding in generate
    examples = task.prompts(0, 6)
    temperature = 0.7
    out = sample_groups(model, tok, examples, 3, temperature=temperature, max_new_tokens=5)
    batch, finished, lengths = build_batch(*out, tok.pad_token_id, tok.eos_token_id)
    learner = full_logprobs(model, batch, temperature, micro_batch=5)
    mask = batch["token_mask"].bool()
    assert mask.sum() == lengths.sum()
    torch.testing.assert_close(learner[mask], batch["generation_logprobs"][mask], rtol=1e-4, atol=1e-4)
    texts = decode_responses(tok, out[1], lengths, finished)
    assert all(isinstance(t, str) and "<" not in t for t in texts)


def test_decode_can_keep_special_tokens_inside_a_response():
    tok = build_char_tokenizer(DigitsTask.alphabet)
    eos, bos, pad = tok.eos_token_id, tok.bos_token_id, tok.pad_token_id
    one, two = tok.convert_tokens_to_ids(["1", "2"])
    ids = torch.tensor([[bos, one, eos, pad], [one, pad, two, two]])
    finished, lengths = torch.tensor([True, False]), torch.tensor([3, 4])
    assert decode_responses(tok, ids, lengths, finished) == ["1", "122"]
    kept = decode_responses(tok, ids, lengths, finished, skip_special_tokens=False)
    assert kept == ["<bos>1", "1<pad>22"]  # the trailing <eos> and the padding after it are never part of the text
