"""What the ALFWorld training loop reads from a recipe, and every setting it would ignore being an error.

The recipe is the real one (loaded with holder_nemo.config and overrides); no NeMo RL needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from holder_nemo.alfworld.training import PerStepSettings, check

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "holderpo_alfworld_qwen2.5-1.5b.yaml"


def _config(*overrides: str) -> dict:
    from omegaconf import OmegaConf

    from holder_nemo.config import load_recipe

    return OmegaConf.to_container(load_recipe(RECIPE, list(overrides)), resolve=True)


def test_the_recipe_is_the_papers_protocol() -> None:
    settings = PerStepSettings.from_config(_config())
    assert (settings.num_games, settings.group_size, settings.train_global_batch_size) == (16, 8, 256)
    assert (settings.entropy_coeff, settings.train_temperature, settings.val_temperature) == (0.001, 1.0, 0.4)
    assert (settings.max_val_samples, settings.val_seed, settings.val_period) == (128, 1000, 5)
    assert settings.max_prompt_tokens == 2048 and settings.val_at_start
    # validations at steps 0, 5, ..., 150: each one a new draw of verl-agent's validation environments
    assert [settings.validation_round(k) for k in (0, 5, 10, 150)] == [0, 1, 2, 30]
    assert check(_config()) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+alfworld.eval_split=valid_unseen", r"alfworld: unknown keys \['eval_split'\]"),
        ("+alfworld.sample_layout=per_episode", r"alfworld.sample_layout: no longer a setting.*got 'per_episode'"),
        ("+alfworld.sample_layout=per_step", r"alfworld.sample_layout: no longer a setting.*delete the key"),
        ("grpo.normalize_rewards=false", r"grpo.normalize_rewards: must be True for ALFWorld's per-step layout"),
        ("grpo.use_leave_one_out_baseline=true", r"grpo.use_leave_one_out_baseline: must be False"),
        ("grpo.reward_shaping.enabled=true", r"grpo.reward_shaping.enabled: must be False"),
        ("+env.alfworld.num_workers=4", r"env.alfworld: unknown keys \['num_workers'\]"),
        ("alfworld.entropy_coeff=-0.1", r"alfworld.entropy_coeff: must be >= 0"),
        ("alfworld.val_temperature=0.0", r"alfworld.val_temperature: must be > 0 or null"),
        ("alfworld.advantage_stats_over=tokens", r"alfworld.advantage_stats_over: must be 'steps' or 'episodes'"),
        ("policy.dtensor_cfg.context_parallel_size=2", r"alfworld.entropy_coeff: > 0 needs whole rows"),
        ("policy.sequence_packing.enabled=true", r"alfworld.entropy_coeff: > 0 needs whole rows"),
        ("grpo.max_val_samples=0", r"grpo.max_val_samples: validation episodes must be >= 1"),
        ("policy.make_sequence_length_divisible_by=0", r"policy.make_sequence_length_divisible_by: must be >= 1"),
        ("+env.alfworld.history=3", r"unknown keys \['history'\]"),
    ],
)
def test_settings_the_loop_would_ignore_or_cannot_use_are_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        PerStepSettings.from_config(_config(override))
    ((key, text),) = check(_config(override))  # the component's check: the same error as (key, message)
    assert f"{key}: {text}" == str(raised.value)


def test_no_bonus_and_no_separate_validation_temperature() -> None:
    settings = PerStepSettings.from_config(_config("alfworld.entropy_coeff=0", "alfworld.val_temperature=null"))
    assert settings.entropy_coeff == 0.0 and settings.val_temperature == settings.train_temperature == 1.0
    # with the bonus off, context parallelism is allowed again
    assert check(_config("alfworld.entropy_coeff=0", "policy.dtensor_cfg.context_parallel_size=2")) == []


def test_recipe_check_reports_the_same_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from holder_nemo.recipe_check.cli import main

    assert main(["check", str(RECIPE), "grpo.normalize_rewards=false", "--no-config"]) == 2  # bad input
    out = capsys.readouterr()
    assert "error: grpo.normalize_rewards: must be True for ALFWorld's per-step layout" in out.out + out.err
    assert main(["check", str(RECIPE), "--no-config"]) == 0
    assert "256 rows per optimizer update" in capsys.readouterr().out


@pytest.mark.parametrize("override", ["grpo.num_prompts_per_step=0", "policy.train_global_batch_size=0"])
def test_a_count_the_preflight_checks_is_reported_once(override: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The NeMo RL pre-flight owns the counts; the loop's settings do not check them a second time."""
    from holder_nemo.recipe_check.cli import main

    assert main(["check", str(RECIPE), override, "--no-config"]) == 2
    out = capsys.readouterr()
    key = override.split("=")[0]
    assert (out.out + out.err).count(f"error: {key}: must be >= 1, got 0") == 1
