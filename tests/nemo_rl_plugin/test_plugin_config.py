"""The loss_fn section: defaults, the shipped recipes, and errors that name the key and the allowed range."""

from __future__ import annotations

from pathlib import Path

import pytest

from holder_nemo.nemo_rl import HolderPOLossFn, LossConfigError, parse_loss_config

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("holderpo_*.yaml"))


def test_defaults_are_clipped_pg_and_paper_values():
    cfg = parse_loss_config({})
    assert (cfg.ratio_clip_min, cfg.ratio_clip_max, cfg.ratio_clip_c) == (0.2, 0.2, None)
    assert cfg.reference_policy_kl_penalty == 0.01 and cfg.reference_policy_kl_type == "k3"
    sched = cfg.holder.schedule
    assert (sched.kind, sched.p_max, sched.p_min, sched.steps) == ("linear_dec", 2.0, -2.0, 500)
    assert cfg.holder.clip_mode == "sequence" and cfg.holder.check_finite is True
    assert cfg.holder.is_correction_level == "sequence_mean" and cfg.holder.importance_ratio == "train_vs_old"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_build_the_loss(recipe):
    from holder_nemo.config import load_recipe

    cfg = load_recipe(recipe)
    loss_fn = HolderPOLossFn(dict(cfg["loss_fn"]))
    assert loss_fn.schedule.steps >= 1


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ({"holder": {"clip_mode": "seq"}}, "loss_fn.holder.clip_mode", "'sequence', 'token', 'token_log' or 'none'"),
        ({"ratio_clip_min": 1.0}, "loss_fn.ratio_clip_min", "less than 1"),
        ({"ratio_clip_max": -0.1}, "loss_fn.ratio_clip_max", "greater than or equal to 0"),
        ({"ratio_clip_c": 0.5}, "loss_fn.ratio_clip_c", "greater than 1"),
        ({"reference_policy_kl_type": "k4"}, "loss_fn.reference_policy_kl_type", "'k1', 'k2' or 'k3'"),
        ({"typo_key": 1}, "loss_fn.typo_key", "unknown key"),
        ({"holder": {"p": 1.0}}, "loss_fn.holder.p", "unknown key"),
        ({"holder": {"schedule": {"steps": 0}}}, "loss_fn.holder.schedule", "steps must be an integer >= 1"),
        ({"holder": {"schedule": {"kind": "cosine"}}}, "loss_fn.holder.schedule", "kind must be one of"),
        ({"holder": {"schedule": {"kind": "reward"}}}, "loss_fn.holder.schedule", "mean reward"),
        ({"holder": {"schedule": {"p_min": 3.0}}}, "loss_fn.holder.schedule", "p_min"),
        ({"holder": {"check_finite": "yes"}}, "loss_fn.holder.check_finite", "boolean"),
        ({"holder": {"is_correction_level": "token"}}, "loss_fn.holder.is_correction_level", "sequence_mean"),
        ({"token_level_loss": True}, "loss_fn.token_level_loss", "must be False"),
        ({"sequence_level_importance_ratios": True}, "loss_fn.sequence_level_importance_ratios", "GSPO"),
        ({"use_cispo": True}, "loss_fn.use_cispo", "must be False"),
        ({"force_on_policy_ratio": True}, "loss_fn.force_on_policy_ratio", "prev_logprobs"),
        ({"positive_example_nll_weight": 0.1}, "loss_fn.positive_example_nll_weight", "must be 0.0"),
        (
            {"truncated_importance_sampling_type": "tis", "truncated_importance_sampling_ratio": 2.0},
            "loss_fn.truncated_importance_sampling_type",
            "use_importance_sampling_correction",
        ),
        (
            {
                "use_importance_sampling_correction": True,
                "truncated_importance_sampling_type": "icepop",
                "truncated_importance_sampling_ratio": 2.0,
            },
            "loss_fn.truncated_importance_sampling_ratio_min",
            "must be set",
        ),
        (
            {"use_importance_sampling_correction": True, "holder": {"importance_ratio": "train_vs_generation"}},
            "loss_fn.holder.importance_ratio",
            "correct twice",
        ),
    ],
)
def test_errors_name_the_key(section, key, fragment):
    with pytest.raises(LossConfigError) as info:
        HolderPOLossFn(section)
    message = str(info.value)
    assert f"{key}:" in message and fragment in message


def test_clipped_pg_config_object_is_accepted():
    """NeMo RL v0.7 hands a pydantic ClippedPGLossConfig (extra='allow'); anything with model_dump works."""
    from pydantic import BaseModel, ConfigDict

    class FakeClippedPGConfig(BaseModel):  # stand-in for nemo_rl's ClippedPGLossConfig (not importable here)
        model_config = ConfigDict(extra="allow")
        ratio_clip_min: float = 0.2
        token_level_loss: bool = False

    loss_fn = HolderPOLossFn(FakeClippedPGConfig(ratio_clip_min=0.1, holder={"clip_mode": "token"}))
    assert loss_fn.config.ratio_clip_min == 0.1 and loss_fn.config.holder.clip_mode == "token"
