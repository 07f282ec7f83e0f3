"""Per-step training rows and verl-agent's GRPO advantage, checked against hand-computed closed forms."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from holder_nemo.alfworld.step_samples import (
    Episode,
    StepRecord,
    build_step_samples,
    tokenize_step_samples,
)


def _episode(group, eid, won, valids):
    steps = [
        StepRecord(prompt=f"p{eid}.{k}", response=f"r{eid}.{k}", valid=v, env_reward=0.0) for k, v in enumerate(valids)
    ]
    if won:
        steps[-1].env_reward = 10.0
    return Episode(group_id=group, episode_id=eid, game_file=f"g{group}", steps=steps, won=won)


def _reference(scores_pool, score, normalize=True, eps=1e-6):
    if len(scores_pool) == 1:
        mean, std = 0.0, 1.0
    else:
        mean, std = statistics.fmean(scores_pool), statistics.stdev(scores_pool)  # unbiased, as torch.std
    return (score - mean) / (std + eps) if normalize else score - mean


def test_step_rows_share_the_episode_advantage_and_penalty_hits_invalid_rows():
    episodes = [
        _episode("g", 0, True, [True, True, True]),  # won in 3 valid steps
        _episode("g", 1, False, [True, False]),  # lost, one malformed step
        _episode("h", 2, False, [False]),  # another group
    ]
    samples = build_step_samples(episodes, invalid_action_penalty=0.1)
    assert [(s.episode_id, s.step_index) for s in samples] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]
    assert [s.score for s in samples] == pytest.approx([10.0, 10.0, 10.0, 0.0, -0.1, -0.1])
    pool_g = [10.0, 10.0, 10.0, 0.0, -0.1]  # stats over all rows of the group ("steps")
    for s in samples[:5]:
        assert s.advantage == pytest.approx(_reference(pool_g, s.score), rel=1e-12)
    assert samples[5].advantage == pytest.approx(-0.1)  # single-row group: mean 0, std 1
    # rows of one episode share the advantage except where the penalty applies
    assert samples[0].advantage == samples[1].advantage == samples[2].advantage
    assert samples[3].advantage > samples[4].advantage
    assert samples[0].prompt == "p0.0" and samples[4].response == "r1.1"


def test_stats_over_episodes_uses_one_score_per_episode():
    episodes = [_episode(0, 0, True, [True] * 4), _episode(0, 1, False, [True] * 2), _episode(0, 2, False, [False] * 3)]
    samples = build_step_samples(episodes, stats_over="episodes")
    pool = [10.0, 0.0, -0.1]  # first row of each episode
    assert samples[0].advantage == pytest.approx(_reference(pool, 10.0), rel=1e-12)
    assert samples[-1].advantage == pytest.approx(_reference(pool, -0.1), rel=1e-12)


def test_identical_outcomes_give_zero_advantage():
    episodes = [_episode(0, i, False, [True, True]) for i in range(3)]
    assert all(s.advantage == 0.0 for s in build_step_samples(episodes))


class _WordTokenizer:
    """Whitespace tokenizer with a chat template, enough to check the row layout."""

    pad_token_id = 0

    def __init__(self):
        self.vocab = {"<pad>": 0}

    def _ids(self, text):
        return [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self._ids(text)}

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and not tokenize and len(messages) == 1
        return f"USER {messages[0]['content']} ASSISTANT"


def test_tokenize_rows_masks_exactly_the_response_tokens():
    episodes = [_episode(0, 0, True, [True]), _episode(0, 1, False, [True])]
    episodes[0].steps[0].prompt, episodes[0].steps[0].response = "a b c", "x y"
    episodes[1].steps[0].prompt, episodes[1].steps[0].response = "a", "z z z z"
    samples = build_step_samples(episodes)
    tok = _WordTokenizer()
    batch = tokenize_step_samples(samples, tok, max_prompt_tokens=5, max_response_tokens=3)
    # row 0: "USER a b c ASSISTANT" (5 tokens, the whole prompt) + "x y"; row 1: "USER a ASSISTANT" + 3 of 4 "z"
    assert batch.prompt_lengths.tolist() == [5, 3]
    assert batch.lengths.tolist() == [7, 6]
    assert batch.response_mask.tolist() == [[False] * 5 + [True] * 2, [False] * 3 + [True] * 3 + [False]]
    assert batch.input_ids[0, :5].tolist() == [tok.vocab[w] for w in ["USER", "a", "b", "c", "ASSISTANT"]]
    assert torch.allclose(batch.advantages, torch.tensor([s.advantage for s in samples]))
    assert math.isclose(batch.advantages[0].item(), -batch.advantages[1].item(), rel_tol=1e-6)
    # generator token ids win over re-tokenisation
    samples_ids = build_step_samples([_episode(0, 0, True, [True])])
    object.__setattr__(samples_ids[0], "response_token_ids", [7, 8])
    assert tokenize_step_samples(samples_ids, tok).input_ids[0, -2:].tolist() == [7, 8]


def test_a_prompt_over_the_budget_is_an_error_not_cut():
    """verl-agent runs with data.truncation='error': the paper's run stops on a long prompt rather than training on
    a prompt vLLM never saw."""
    from holder_nemo.alfworld.step_samples import PromptTooLong

    episodes = [_episode(0, 0, True, [True])]
    episodes[0].steps[0].prompt = "a b c"
    samples = build_step_samples(episodes)
    with pytest.raises(PromptTooLong, match=r"longer than data.max_input_seq_length = 4 tokens \(first: prompt 0, 5"):
        tokenize_step_samples(samples, _WordTokenizer(), max_prompt_tokens=4)
    assert issubclass(PromptTooLong, ValueError)
