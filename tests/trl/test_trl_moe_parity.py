"""On a Mixture-of-Experts model HolderPOTrainer at p = 0 with sequence clip trains exactly as TRL's own GSPO.

TRL's GRPOTrainer asks an MoE model for its router logits (``output_router_logits``), adds
``router_aux_loss_coef x aux_loss`` (the load-balancing loss the model returns) to the policy loss with the same
gradient-accumulation normaliser, and logs ``aux_loss``. Both trainers here run TRL's whole loop for 3 optimizer
steps on a tiny random Qwen2-MoE (CPU, float32: transformers' grouped expert matmul takes no float64), with the same
seed, so the rollouts are the same; ``steps_per_generation=2`` makes every second step off-policy, so the
GSPO band (ε = 3e-4 / 4e-4, the GSPO paper's) clips sequences on both sides. The weights must then be bit for bit
TRL's: the Hölder mean at p = 0 reduces to the same masked mean, and the aux term is added in TRL's order. Without
the aux term the runs drift apart: max |ΔW| 1.1e-1 at the config's coefficient 0.001 and 1.2e-1 at 0.5 after 3 steps
(Adam at lr 3e-2 turns even the small aux gradient of the router into full-size steps; measured on the code before).
The logged metrics are compared too: every key TRL's GSPO logs is logged, and the shared ones have TRL's values.
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

SETTINGS = {"max_steps": 3, "steps_per_generation": 2, "epsilon": 3e-4, "epsilon_high": 4e-4}
# Keys whose values depend on wall time, not on the training.
TIMING = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def _train(cls, config, model_dir: Path, out: Path, **settings):
    args = config(**base_args(out, **SETTINGS, **settings))
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        reward_funcs=even_digit_reward,
        args=args,
        train_dataset=prompts_dataset(),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    ("coef", "beta"),
    [(None, 0.0), (0.5, 0.04)],
    ids=["config_coef_0.001", "coef_0.5_with_kl"],
)
def test_moe_holder_p0_trains_exactly_as_trl_gspo(tiny_moe_dir: Path, tmp_path: Path, coef, beta) -> None:
    shared = {"router_aux_loss_coef": coef, "beta": beta, "use_bias_correction_kl": False}
    gspo = _train(
        GRPOTrainer, GRPOConfig, tiny_moe_dir, tmp_path / "gspo",
        importance_sampling_level="sequence", loss_type="grpo", **shared,
    )  # fmt: skip
    holder = _train(
        HolderPOTrainer, HolderPOConfig, tiny_moe_dir, tmp_path / "holder",
        holder_p_schedule="constant", holder_p_max=0.0, holder_clip_mode="sequence", **shared,
    )  # fmt: skip
    assert gspo.aux_loss_enabled and holder.aux_loss_enabled
    assert holder.router_aux_loss_coef == (0.001 if coef is None else coef)

    ref, ours = gspo.model.state_dict(), holder.model.state_dict()
    drift = max((ref[name] - ours[name]).abs().max().item() for name in ref)
    print(f"coef={coef} beta={beta}: max|W_gspo - W_holder| after 3 steps = {drift:.1e}")
    for name, weight in ref.items():
        assert torch.equal(weight, ours[name]), (name, drift)

    logs_gspo = {h["step"]: h for h in gspo.state.log_history if "aux_loss" in h}
    logs_holder = {h["step"]: h for h in holder.state.log_history if "aux_loss" in h}
    assert sorted(logs_gspo) == sorted(logs_holder) == [1, 2, 3]
    clipped = 0.0
    for step, ref_log in logs_gspo.items():
        missing = ref_log.keys() - logs_holder[step].keys()
        assert not missing, f"step {step}: TRL's GSPO logs {sorted(missing)}, HolderPOTrainer does not"
        for key in ref_log.keys() - TIMING:
            assert logs_holder[step][key] == pytest.approx(ref_log[key], rel=1e-6, abs=1e-9), (step, key)
        clipped = max(clipped, ref_log["clip_ratio/region_mean"])
    assert clipped > 0, "the off-policy steps should clip some sequences at eps 3e-4 / 4e-4"
    assert {"aux_loss", "clip_ratio/low_min", "clip_ratio/high_max"} <= logs_holder[1].keys()
    assert ("kl" in logs_holder[1]) == (beta != 0.0)
