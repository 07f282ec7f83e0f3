"""Study statistics against printed tables and hand computations."""

from __future__ import annotations

import itertools
import math

import pytest

from holder_nemo.study.report import (
    DIAGNOSTICS,
    OUTCOMES,
    arm_results,
    excludes_zero,
    mean_interval,
    run_summary,
    steps_to_threshold,
    t975,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    [  # two-sided 95 % critical values of Student's t from standard printed tables (4 decimals)
        (1, 12.7062),
        (2, 4.3027),
        (4, 2.7764),
        (9, 2.2622),
        (30, 2.0423),
        (31, 2.0395),
        (40, 2.0211),
        (60, 2.0003),
        (120, 1.9799),
        (10**6, 1.9600),
    ],
)
def test_t975_matches_tables(df, expected):
    assert t975(df) == pytest.approx(expected, abs=1e-4)


def test_t975_decreases_towards_the_normal_quantile():
    values = [t975(df) for df in range(1, 200)]
    assert all(a > b > 1.959963984540054 for a, b in itertools.pairwise(values))


def test_t975_rejects_df_below_one():
    with pytest.raises(ValueError, match="df must be >= 1, got 0"):
        t975(0)


def test_mean_interval_by_hand():
    # mean 3, sample std sqrt(2.5), standard error sqrt(2.5 / 5) = 0.7071; t(0.975, 4) = 2.7764
    interval = mean_interval([1, 2, 3, 4, 5])
    assert interval["mean"] == pytest.approx(3.0)
    assert interval["half_width"] == pytest.approx(2.7764 * math.sqrt(0.5), abs=2e-4)
    assert interval["n"] == 5
    assert excludes_zero(interval)  # [1.04, 4.96]
    assert not excludes_zero(mean_interval([-1.0, 1.0, 2.0]))
    assert excludes_zero(mean_interval([-1.0, -1.01]))  # -1.005 +- 0.064
    assert not excludes_zero(mean_interval([1.0]))  # one seed supports no claim
    one = mean_interval([0.4])
    assert one["mean"] == 0.4 and math.isnan(one["half_width"])
    assert mean_interval([])["n"] == 0


def test_run_summaries_by_hand():
    rewards = [0.0] * 18 + [0.5, 1.0]  # 20 steps: last 10 % = the last 2
    summary = run_summary([{"reward_mean": r} for r in rewards], threshold=0.5)
    assert summary["final_reward"] == pytest.approx(0.75)
    two_steps = run_summary([{"reward_mean": 0.2}, {"reward_mean": 0.4}], threshold=0.5)
    assert two_steps["final_reward"] == pytest.approx(0.4)  # at least one step
    assert summary["auc"] == pytest.approx(1.5 / 20)  # area under the reward curve / steps = the mean reward
    assert (summary["steps_to_threshold"], summary["reached_threshold"]) == (19, True)  # window 1 (5 % of 20 steps)
    assert steps_to_threshold([0.1, 0.2, 0.6, 0.9], 0.5, window=2) == (4, True)  # trailing means 0.1 .15 .4 .75
    assert steps_to_threshold([0.1, 0.2, 0.6, 0.9], 0.5, window=1) == (3, True)
    assert steps_to_threshold([0.1, 0.2], 0.5, window=1) == (2, False)  # censored at the last step


def test_paired_differences_use_common_seeds_only():
    """arm - baseline per seed, over the seeds both arms finished (seed 2 of the arm and 3 of the baseline drop out)."""
    arm = {0: 1.0, 1: 2.0, 2: 5.0}
    baseline = {0: 0.5, 1: 2.5, 3: 9.0}
    metrics = (*OUTCOMES, *(name for _, name, _, _ in DIAGNOSTICS))
    summaries = [
        {s: dict.fromkeys(metrics, v) | {"reached_threshold": True} for s, v in d.items()} for d in (arm, baseline)
    ]
    diff = arm_results(*summaries)["vs_grpo"]["final_reward"]
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(0.0)  # the differences 0.5 and -0.5
