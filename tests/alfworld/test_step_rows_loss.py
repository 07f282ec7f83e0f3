"""A few CPU training steps of the paper protocol with a random-init tiny Qwen2: rollout, reward, advantages, update.

The tiny model never produces a winning episode, so each group also holds one planner-played episode on the same
game (off-policy text scored by the current policy); that gives non-zero advantages, and the test checks the update
moves the policy towards the positive-advantage rows.
"""

from __future__ import annotations

import copy
import importlib.util
import string

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_policy(tiny_qwen2):
    from holder_nemo.reference.model import build_char_tokenizer

    tokenizer = build_char_tokenizer(string.printable)
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = tiny_qwen2(tokenizer, hidden_size=32, num_layers=2, intermediate_size=64, max_position_embeddings=4096)
    return model, tokenizer


def _positive_row_logprob(model, tokenizer, episodes):
    from holder_nemo.alfworld.step_samples import build_step_samples, tokenize_step_samples
    from holder_nemo.alfworld.train_step import frozen_logprobs

    samples = build_step_samples(episodes)
    batch = tokenize_step_samples(samples, tokenizer)
    lp = frozen_logprobs(model, batch)
    mask = batch.response_mask[:, 1:]
    pos = batch.advantages > 0
    return ((lp * mask)[pos].sum() / mask[pos].sum()).item()


def test_reference_steps_rollout_reward_advantages_update(tiny_policy, game_by_task):
    from holder_nemo.alfworld.evaluate import play_expert
    from holder_nemo.alfworld.protocol import ProtocolConfig
    from holder_nemo.alfworld.reference import PAPER_SCHEDULE, train_on_episodes
    from holder_nemo.alfworld.rollout import hf_policy, run_episodes
    from holder_nemo.alfworld.train_step import UpdateConfig

    model, tokenizer = tiny_policy
    ref_model = copy.deepcopy(model).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    config = ProtocolConfig(max_steps=4)
    game = str(game_by_task["look_at_obj_in_light"])  # 4-step expert plan
    policy = hf_policy(model, tokenizer, max_new_tokens=12, temperature=1.0)

    torch.manual_seed(1)
    sampled = run_episodes(policy, [game], group_size=2, config=config)
    assert len(sampled) == 2 and all(len(ep.steps) == 4 and not ep.won for ep in sampled)  # step limit
    assert all(s.response_token_ids is not None for ep in sampled for s in ep.steps)
    expert = play_expert(game, config)
    assert expert.won and len(expert.steps) == 4
    expert.group_id, expert.episode_id = sampled[0].group_id, 2
    episodes = [*sampled, expert]

    before = _positive_row_logprob(model, tokenizer, episodes)
    history = []
    for step, rows in ((1, 12), (2, 6)):  # one update of 12 rows, then two of 6
        metrics = train_on_episodes(
            model,
            ref_model,
            optimizer,
            tokenizer,
            episodes,
            step=step,
            update=UpdateConfig(kl_coef=0.01, entropy_coeff=0.001),
            mini_batch_rows=rows,
        )
        history.append(metrics)
    after = _positive_row_logprob(model, tokenizer, episodes)

    assert [m["p"] for m in history] == pytest.approx([PAPER_SCHEDULE(1), PAPER_SCHEDULE(2)])
    assert history[0]["p"] == pytest.approx(1.0 - 2.0 / 150)
    for m in history:
        assert m["rows"] == 12 and m["stepped"] == 1.0
        assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
        assert m["success_rate"] == pytest.approx(1 / 3)
        assert m["advantage_abs_mean"] > 0.5
    assert [m["updates"] for m in history] == [1, 2]
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before the first update
    assert history[1]["kl"] > 0.0
    assert after > before + 1e-3  # the update raised the likelihood of the winning episode's responses


def test_step_rows_through_the_nemo_rl_loss_plugin_match_the_reference_loss(tiny_policy, game_by_task):
    """Per-step rows in NeMo RL's train_data contract give HolderPOLossFn the same HölderPO loss as train_step."""
    from holder_nemo.alfworld.evaluate import play_expert
    from holder_nemo.alfworld.protocol import ProtocolConfig
    from holder_nemo.alfworld.step_samples import (
        Episode,
        StepRecord,
        build_step_samples,
        to_nemo_rl_train_data,
        tokenize_step_samples,
    )
    from holder_nemo.alfworld.train_step import token_logprobs_and_entropy
    from holder_nemo.core import holder_po_loss
    from holder_nemo.nemo_rl.loss import HolderPOLossFn

    model, tokenizer = tiny_policy
    game = str(game_by_task["look_at_obj_in_light"])
    expert = play_expert(game, ProtocolConfig(max_steps=4))
    loser = Episode(group_id=0, episode_id=1, game_file=game)
    loser.steps = [StepRecord(s.prompt, "no tags at all", False, 0.0) for s in expert.steps[:2]]
    batch = tokenize_step_samples(build_step_samples([expert, loser]), tokenizer)
    data = to_nemo_rl_train_data(batch)
    assert data["token_mask"].sum() == batch.response_mask.sum() and data["advantages"].shape == batch.input_ids.shape

    with torch.no_grad():
        curr, _, mask = token_logprobs_and_entropy(model, batch)  # [B, T-1]: token t+1 at column t
    curr = curr.double()  # float64 end to end: the positive and negative rows nearly cancel in the mean
    torch.manual_seed(3)
    old = curr + 0.05 * torch.randn_like(curr)  # a stale behaviour policy, so ratios differ from 1
    # NeMo RL stores log-probs with column t = token t (column 0 unused)
    data["prev_logprobs"] = torch.cat([torch.zeros(len(old), 1, dtype=old.dtype), old], dim=1)
    cfg = {
        "reference_policy_kl_penalty": 0.0,
        "ratio_clip_min": 0.2,
        "ratio_clip_max": 0.2,
        "holder": {"schedule": {"kind": "linear_dec", "p_max": 1.0, "p_min": -1.0, "steps": 150}},
    }
    loss_fn = HolderPOLossFn(cfg)
    loss_fn.set_step(40)
    rows = torch.tensor(float(len(old)))
    loss, _ = loss_fn(curr, data, global_valid_seqs=rows, global_valid_toks=mask.sum())
    per_row, _ = holder_po_loss(curr, old, batch.advantages, mask, loss_fn.p, clip_mode="sequence")
    assert loss_fn.p == pytest.approx(1.0 - 2.0 * 40 / 150)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(per_row.mean().item(), rel=1e-9, abs=1e-12)
