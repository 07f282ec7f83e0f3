"""Per-step rows through NeMo RL's loss plugin give exactly the HölderPO loss of ``holder_nemo.core`` (float64).

The rows come from a real game (a planner-played winning episode and a malformed losing one in the same group, so
the advantages have both signs); log-probs from a random-init tiny Qwen2.
"""

from __future__ import annotations

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


def _token_logprobs(model, batch):
    """Log-probs [B, T-1] of tokens 1..T-1 given their prefix (column t scores token t+1) and the response mask."""
    attention = torch.arange(batch.input_ids.shape[1])[None, :] < batch.lengths[:, None]
    logits = model(input_ids=batch.input_ids, attention_mask=attention.long()).logits[:, :-1].double()
    token_logprobs = torch.log_softmax(logits, -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return token_logprobs, batch.response_mask[:, 1:]


def test_step_rows_through_the_nemo_rl_loss_plugin_match_core_holder_po_loss(tiny_policy, game_by_task):
    """Per-step rows in NeMo RL's train_data contract give HolderPOLossFn the mean over rows of
    ``core.holder_po_loss`` (sequence clip), computed independently on the same log-probs."""
    from holder_nemo.alfworld.evaluate import play_expert
    from holder_nemo.alfworld.protocol import ProtocolConfig
    from holder_nemo.alfworld.step_samples import (
        Episode,
        StepRecord,
        build_step_samples,
        to_nemo_rl_train_data,
        tokenize_step_samples,
    )
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
        curr, mask = _token_logprobs(model, batch)  # float64 end to end: positive and negative rows nearly cancel
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
