"""The reward-driven p schedule in the reference run: p = clip(p_max exp(-gamma * mean reward), p_min, p_max) with
the mean reward of the step's own rollout; exact on resume; other schedules unchanged; NeMo RL still refuses it."""

from __future__ import annotations

import math

import pytest
from reference_helpers import SMOKE, tiny

from holder_nemo.nemo_rl import HolderPOLossFn, LossConfigError
from holder_nemo.nemo_rl.loss_config import parse_loss_config
from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.reference.train import EXIT_COMPLETED, EXIT_STOPPED, main

REWARD_SCHEDULE = {"kind": "reward", "p_max": 2.0, "p_min": -2.0, "gamma": 2.0, "steps": 10}
REWARD_OVERRIDES = ["loss_fn.holder.schedule.kind=reward", "++loss_fn.holder.schedule.gamma=2.0"]
STEPS = 4


def make_loss_fn(loss_fn_config: dict) -> HolderPOLossFn:
    """The loss as the reference run builds it: its schema allows the reward schedule (it knows each reward)."""
    return HolderPOLossFn(parse_loss_config(loss_fn_config, mean_reward_known=True))


def _loss_config(schedule: dict) -> dict:
    return {"reference_policy_kl_penalty": 0.0, "holder": {"schedule": schedule, "clip_mode": "sequence"}}


def test_reward_schedule_follows_the_mean_reward():
    loss_fn = make_loss_fn(_loss_config(REWARD_SCHEDULE))
    loss_fn.set_step(3)
    with pytest.raises(ValueError, match="mean_reward"):
        _ = loss_fn.p  # no reward yet: refuse rather than guess
    for reward, expected in [(0.0, 2.0), (0.5, 2 * math.exp(-1.0)), (1.0, 2 * math.exp(-2.0))]:
        loss_fn.set_mean_reward(reward)
        assert loss_fn.p == pytest.approx(expected, rel=1e-12)
    clipped = make_loss_fn(_loss_config({**REWARD_SCHEDULE, "p_max": 1.0, "p_min": 0.5}))
    clipped.set_mean_reward(1.0)
    assert clipped.p == 0.5  # exp(-2) = 0.135 < p_min


def test_step_schedules_are_the_plugins_own():
    schedule = {"kind": "linear_dec", "p_max": 2.0, "p_min": -2.0, "steps": 10}
    ours, plugin = make_loss_fn(_loss_config(schedule)), HolderPOLossFn(_loss_config(schedule))
    for step in range(12):
        ours.set_step(step)
        plugin.set_step(step)
        ours.set_mean_reward(0.3)  # ignored by step schedules
        assert ours.p == plugin.p


def test_nemo_rl_plugin_still_refuses_the_reward_schedule_and_bad_values_name_the_key():
    with pytest.raises(LossConfigError, match="reward"):
        HolderPOLossFn(_loss_config(REWARD_SCHEDULE))
    with pytest.raises(ValueError, match=r"loss_fn\.holder\.schedule: PSchedule\.gamma"):
        make_loss_fn(_loss_config({**REWARD_SCHEDULE, "gamma": -1.0}))
    with pytest.raises(LossConfigError, match=r"loss_fn\.holder\.clip_mode"):  # the rest is still the plugin's check
        make_loss_fn({**_loss_config(REWARD_SCHEDULE), "holder": {"schedule": REWARD_SCHEDULE, "clip_mode": "x"}})


def _reproducible(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def test_reward_schedule_run_logs_p_of_its_reward_and_resumes_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    assert main([str(SMOKE), *tiny(STEPS, straight, *REWARD_OVERRIDES)]) == EXIT_COMPLETED
    records = read_metrics(straight)
    for r in records:
        assert r["holder_p"] == pytest.approx(min(2.0, max(-2.0, 2.0 * math.exp(-2.0 * r["reward_mean"]))), rel=1e-6)
    assert len({r["holder_p"] for r in records}) > 1  # it moves with the reward

    stop_file = tmp_path / "STOP"
    stop_file.touch()
    monkeypatch.setenv("HOLDERPO_STOP_FILE", str(stop_file))
    stopped = tmp_path / "stopped"
    codes = [main([str(SMOKE), *tiny(STEPS, stopped, *REWARD_OVERRIDES)]) for _ in range(STEPS)]
    assert codes == [EXIT_STOPPED] * (STEPS - 1) + [EXIT_COMPLETED]
    assert _reproducible(read_metrics(stopped)) == _reproducible(records)


def test_recipe_check_accepts_the_reward_schedule_for_reference_recipes_only_when_valid(capsys):
    from holder_nemo.recipe_check.cli import main as recipe_main

    assert recipe_main(["check", str(SMOKE), *REWARD_OVERRIDES, "--no-config"]) == 0
    capsys.readouterr()
    bad_gamma = "++loss_fn.holder.schedule.gamma=-1"
    assert recipe_main(["check", str(SMOKE), *REWARD_OVERRIDES, bad_gamma, "--no-config"]) == 2  # bad input
    err = capsys.readouterr().err
    assert "loss_fn.holder.schedule: PSchedule.gamma must be >= 0" in err and "1 error(s)" in err
