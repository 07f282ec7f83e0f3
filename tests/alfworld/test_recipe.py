"""recipes/holderpo_alfworld_qwen2.5-1.5b.yaml: passes `holderpo recipe check` and holds the paper's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from holder_nemo.alfworld.protocol import ProtocolConfig
from holder_nemo.config import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "holderpo_alfworld_qwen2.5-1.5b.yaml"


def test_recipe_passes_recipe_check(capsys):
    from holder_nemo.recipe_check.cli import main

    assert main(["check", str(RECIPE), "--no-config"]) == 0, capsys.readouterr().out


def test_recipe_holds_the_paper_settings():
    cfg = load_recipe(RECIPE)
    assert cfg.policy.model_name == "Qwen/Qwen2.5-1.5B-Instruct"
    assert (cfg.grpo.num_prompts_per_step, cfg.grpo.num_generations_per_prompt) == (16, 8)
    assert (cfg.grpo.max_num_steps, cfg.grpo.max_rollout_turns) == (150, 50)
    assert cfg.policy.optimizer.kwargs.lr == pytest.approx(1e-6)
    assert cfg.loss_fn.reference_policy_kl_penalty == pytest.approx(0.01)
    assert cfg.loss_fn.reference_policy_kl_type == "k3"
    assert (cfg.loss_fn.ratio_clip_min, cfg.loss_fn.ratio_clip_max) == (0.2, 0.2)
    schedule = cfg.loss_fn.holder.schedule
    assert (schedule.kind, schedule.p_max, schedule.p_min, schedule.steps) == ("linear_dec", 1.0, -1.0, 150)
    assert cfg.loss_fn.holder.clip_mode == "sequence"
    assert cfg.alfworld.entropy_coeff == pytest.approx(0.001)
    assert "sample_layout" not in cfg.alfworld  # one layout: a row per environment step
    assert cfg.policy.max_total_sequence_length == 2048 + 512 and cfg.policy.generation.max_new_tokens == 512
    protocol = ProtocolConfig.from_dict({k: v for k, v in cfg.env.alfworld.items() if k != "_component_"})
    assert (protocol.history_length, protocol.max_steps, protocol.invalid_action_penalty) == (2, 50, 0.1)
    assert protocol.success_reward == 10.0
