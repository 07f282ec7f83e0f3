"""The paper's per-step layout driven through NeMo RL's generation contract (scripted stand-in for vLLM)."""

from __future__ import annotations

import importlib.util
import string

import pytest
import torch
from alfworld_doubles import CHAT_TEMPLATE, ScriptedGeneration

from holder_nemo.alfworld.games import SPECS, task_description

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)


def test_per_step_rows_from_nemo_rl_generation(game_by_task):
    from holder_nemo.alfworld.protocol import ProtocolConfig
    from holder_nemo.alfworld.rollout import nemo_rl_policy, run_episodes
    from holder_nemo.alfworld.step_samples import build_step_samples, to_nemo_rl_train_data, tokenize_step_samples
    from holder_nemo.reference.model import build_char_tokenizer

    tokenizer = build_char_tokenizer(string.printable)
    tokenizer.chat_template = CHAT_TEMPLATE
    win, lose = "pick_cool_then_place_in_recep", "pick_clean_then_place_in_recep"
    generation = ScriptedGeneration(tokenizer, {task_description(SPECS[win]) + ".": SPECS[win].expert_plan})
    policy = nemo_rl_policy(generation, tokenizer)
    games = [str(game_by_task[win]), str(game_by_task[lose])]
    episodes = run_episodes(policy, games, group_size=2, config=ProtocolConfig(max_steps=7))

    assert [ep.won for ep in episodes] == [True, True, False, False]
    assert [len(ep.steps) for ep in episodes] == [6, 6, 7, 7]
    assert generation.calls == 7  # one batched generate per environment step
    first = episodes[0].steps[0]
    assert first.response == "<think>step 1</think><action>go to countertop 1</action>"
    assert first.response_token_ids[-1] == tokenizer.eos_token_id
    assert first.response_logprobs == pytest.approx([-0.5 - 0.01 * j for j in range(len(first.response_token_ids))])

    # GRPO compares within a group (same game): identical outcomes in both groups -> zero advantage everywhere
    assert all(s.advantage == 0.0 for s in build_step_samples(episodes))
    for ep in episodes:  # pool the four episodes into one group to get both signs
        ep.group_id = 0
    samples = build_step_samples(episodes)
    batch = tokenize_step_samples(samples, tokenizer)
    data = to_nemo_rl_train_data(batch)
    assert data["input_ids"].shape[0] == 26 and data["sample_mask"].sum() == 26
    # winners' rows positive, losers' rows negative: one advantage per episode on every response token
    signs = torch.sign(batch.advantages).tolist()
    assert signs == [1.0] * 12 + [-1.0] * 14
    mask = data["token_mask"].bool()
    assert torch.equal(data["advantages"][0][mask[0]], batch.advantages[0].expand(int(mask[0].sum())))
    # the generator's log-probs sit exactly on the response tokens, in order
    row0 = data["generation_logprobs"][0]
    assert row0[mask[0]].tolist() == pytest.approx(first.response_logprobs)
    assert row0[~mask[0]].abs().sum() == 0
    # the response tokens in the row are the generated ids, not a re-tokenisation
    assert data["input_ids"][0][mask[0]].tolist() == first.response_token_ids
