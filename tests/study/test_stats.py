"""Study statistics against printed tables and hand computations."""

from __future__ import annotations

import math

import pytest

from holder_nemo.study.stats import (
    Interval,
    final_reward,
    mean_interval,
    paired_differences,
    reward_auc,
    steps_to_threshold,
    t_quantile,
    trailing_mean,
)


@pytest.mark.parametrize(
    ("level", "df", "expected"),
    [  # two-sided critical values of Student's t (standard tables)
        (0.95, 1, 12.7062),
        (0.95, 2, 4.3027),
        (0.95, 4, 2.7764),
        (0.95, 9, 2.2622),
        (0.95, 30, 2.0423),
        (0.90, 4, 2.1318),
        (0.99, 4, 4.6041),
    ],
)
def test_t_quantile_matches_tables(level, df, expected):
    assert t_quantile(level, df) == pytest.approx(expected, abs=2e-4)


def test_t_quantile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.95, 0)


def test_mean_interval_by_hand():
    # mean 3, sample std sqrt(2.5), standard error sqrt(2.5 / 5) = 0.7071; t(0.95, 4) = 2.7764
    interval = mean_interval([1, 2, 3, 4, 5])
    assert interval.mean == pytest.approx(3.0)
    assert interval.half_width == pytest.approx(2.7764 * math.sqrt(0.5), abs=2e-4)
    assert interval.n == 5
    assert interval.excludes_zero()  # [1.04, 4.96]
    assert not mean_interval([-1.0, 1.0, 2.0]).excludes_zero()
    assert Interval(1.0, 0.5, 3).excludes_zero() and Interval(-1.0, 0.5, 3).excludes_zero()
    assert not Interval(1.0, 0.5, 1).excludes_zero()  # one seed supports no claim
    one = mean_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.half_width)
    assert mean_interval([]).n == 0


def test_run_summaries_by_hand():
    rewards = [0.0] * 18 + [0.5, 1.0]  # 20 steps: last 10 % = the last 2
    assert final_reward(rewards) == pytest.approx(0.75)
    assert reward_auc(rewards) == pytest.approx(1.5 / 20)
    assert final_reward([0.2, 0.4]) == pytest.approx(0.4)  # at least one step
    assert trailing_mean([1, 2, 3, 4], 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    assert steps_to_threshold([0.1, 0.2, 0.6, 0.9], 0.5, window=2) == (4, True)  # trailing means 0.1 .15 .4 .75
    assert steps_to_threshold([0.1, 0.2, 0.6, 0.9], 0.5, window=1) == (3, True)
    assert steps_to_threshold([0.1, 0.2], 0.5, window=1) == (2, False)  # censored at the last step


def test_paired_differences_use_common_seeds_only():
    assert paired_differences({0: 1.0, 1: 2.0, 2: 5.0}, {0: 0.5, 1: 2.5, 3: 9.0}) == [0.5, -0.5]
