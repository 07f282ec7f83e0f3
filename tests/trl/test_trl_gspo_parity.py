"""At p = 0 with sequence clip, HölderPO is GSPO: our loss and gradients equal TRL's own GSPO on the same batch.

TRL's GSPO is ``importance_sampling_level="sequence"`` with ``loss_type="grpo"`` (its documented GSPO setup): the
per-sequence loss averaged over sequences, divided by the gradient-accumulation steps. HolderPOTrainer normalises the
same way. The other loss types sum tokens, which weights a sequence-level ratio by completion length (TRL warns).
The batch is a real TRL rollout of the tiny model; old log-probs are shifted per sequence so that some sequences sit
inside the ε = 3e-4 / 4e-4 band and others are clipped on either side. Models run in float64 so the comparison is
not blurred by float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from trl_helpers import NEEDS_TRL, TRL_MODULE, base_args, even_digit_reward, prompts_dataset

pytest.importorskip(TRL_MODULE, reason=NEEDS_TRL)

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from holder_nemo.trl import HolderPOConfig, HolderPOTrainer

GSPO = {"epsilon": 3e-4, "epsilon_high": 4e-4, "per_device_train_batch_size": 8, "max_completion_length": 12}


def _trainer(cls, config, model_dir: Path, out: Path, **settings):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    args = config(**base_args(out, **GSPO, **settings))
    trainer = cls(
        model=model,
        reward_funcs=even_digit_reward,
        args=args,
        train_dataset=prompts_dataset(),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.current_gradient_accumulation_steps = 2  # normally set by the training loop; checks that scaling too
    trainer.model.train()
    return trainer


def _loss_and_grads(trainer, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_p0_sequence_clip_equals_trl_gspo(tiny_model_dir: Path, tmp_path: Path, beta: float) -> None:
    kl = {"beta": beta, "use_bias_correction_kl": False}
    trl_gspo = _trainer(
        GRPOTrainer, GRPOConfig, tiny_model_dir, tmp_path / "trl",
        importance_sampling_level="sequence", loss_type="grpo", **kl,
    )  # fmt: skip
    holder = _trainer(
        HolderPOTrainer, HolderPOConfig, tiny_model_dir, tmp_path / "holder",
        holder_p_schedule="constant", holder_p_max=0.0, holder_clip_mode="sequence", **kl,
    )  # fmt: skip
    assert holder.current_p() == 0.0

    torch.manual_seed(1)
    rows = [{"prompt": p} for p in prompts_dataset(2)["prompt"] for _ in range(4)]
    inputs = trl_gspo._generate_and_score_completions(rows)  # a real TRL rollout: ids, masks, advantages (+ ref)
    batch = inputs["completion_ids"].shape[0]
    inputs["advantages"] = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.25, 0.0], dtype=torch.float64)[:batch]
    with torch.no_grad():
        logps, _, _ = trl_gspo._get_per_token_logps_and_entropies(
            trl_gspo.model,
            torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            inputs["completion_ids"].shape[1],
        )
    # per-sequence shift of log pi_old (log ratio = -shift): rows 0-3 inside the clip band; row 4 (A > 0) clipped
    # high, row 5 (A < 0) clipped low, row 6 (A > 0, ratio < 1) outside the band but unclipped, row 7 has A = 0
    shift = torch.tensor([1e-4, -1e-4, 2e-4, -2e-4, -5e-3, 5e-3, 5e-3, 5e-3], dtype=torch.float64)[:batch]
    inputs["old_per_token_logps"] = logps + shift[:, None]
    if beta:  # a reference policy away from the current one, so the KL term and its gradient are not zero
        inputs["ref_per_token_logps"] = logps + 0.1 * torch.randn(logps.shape, dtype=torch.float64)

    trl_loss, trl_grads = _loss_and_grads(trl_gspo, inputs)
    holder_loss, holder_grads = _loss_and_grads(holder, inputs)

    assert trl_grads.keys() == holder_grads.keys() and len(trl_grads) > 0
    loss_diff = (trl_loss - holder_loss).abs().item()
    grad_diff = max((trl_grads[n] - holder_grads[n]).abs().max().item() for n in trl_grads)
    grad_scale = max(g.abs().max().item() for g in trl_grads.values())
    print(f"beta={beta}: loss {trl_loss.item():.6e} max|dloss|={loss_diff:.2e}; max|grad|={grad_scale:.2e} "
          f"max|dgrad|={grad_diff:.2e}")  # fmt: skip
    assert loss_diff < 1e-12
    assert grad_diff < 1e-12 * max(1.0, grad_scale)
    assert grad_scale > 1e-3  # the unclipped sequences carry gradient
    # the same clip decisions, logged under TRL's own metric names
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        assert trl_gspo._metrics["train"][key][-1] == pytest.approx(holder._metrics["train"][key][-1], abs=1e-12)
    assert holder._metrics["train"]["clip_ratio/region_mean"][-1] > 0
