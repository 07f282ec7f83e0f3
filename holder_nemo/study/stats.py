"""Statistics of a multi-seed study: per-run summaries of a reward curve and Student-t intervals over seeds.

numpy and the standard library only (no scipy): the t quantile is found by bisection on a CDF integrated with
Simpson's rule, accurate to ~1e-6 for the degrees of freedom a study has (tested against printed tables).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


def _t_density(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_upper_half(x: float, df: int, intervals: int = 2000) -> float:
    """P(0 <= T <= x) for x >= 0 (composite Simpson rule; the density is smooth and bounded)."""
    h = x / intervals
    total = _t_density(0.0, df) + _t_density(x, df)
    for i in range(1, intervals):
        total += (4 if i % 2 else 2) * _t_density(i * h, df)
    return total * h / 3


@functools.lru_cache(maxsize=256)
def t_quantile(level: float, df: int) -> float:
    """Two-sided critical value: P(|T| <= t) = level for Student's t with ``df`` degrees of freedom (df >= 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    target = level / 2
    lo, hi = 0.0, 1.0
    while _t_cdf_upper_half(hi, df) < target:  # heavy tails at df = 1: 12.7 for 95 %
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_upper_half(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """Mean over seeds and the half-width of its two-sided t interval (nan with fewer than two seeds)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "low": self.low, "high": self.high}


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean +- t_{level, n-1} * s / sqrt(n) of ``values`` (sample std, ddof = 1)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), 0)
    if n == 1:
        return Interval(float(x[0]), float("nan"), 1)
    half = t_quantile(level, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(float(x.mean()), half, n)


def final_reward(rewards: Sequence[float]) -> float:
    """Mean reward over the last 10 % of steps (at least one step)."""
    n = max(1, len(rewards) // 10)
    return float(np.mean(rewards[-n:]))


def reward_auc(rewards: Sequence[float]) -> float:
    """Area under the per-step reward curve divided by the number of steps: the mean reward over the run, in [0, 1]
    for a [0, 1] reward. It rewards learning early as well as learning much."""
    return float(np.mean(rewards))


def trailing_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each step (fewer at the start); same length as ``values``."""
    from holder_nemo.reference.plotting import smooth  # the training figure's curve, so both plots agree

    return smooth(np.asarray(values, dtype=float), window)


def steps_to_threshold(rewards: Sequence[float], threshold: float, window: int) -> tuple[int, bool]:
    """First 1-based step at which the trailing ``window``-step mean reward reaches ``threshold``.

    Returns (step, reached). A run that never reaches it is censored at its last step: (len(rewards), False), so
    the mean over seeds is then a lower bound (the report says how many seeds reached the threshold).
    """
    smoothed = trailing_mean(rewards, window)
    hits = np.nonzero(smoothed >= threshold)[0]
    if len(hits):
        return int(hits[0]) + 1, True
    return len(smoothed), False


def paired_differences(arm: dict[int, float], baseline: dict[int, float]) -> list[float]:
    """arm[seed] - baseline[seed] over the seeds both have (same seed = same initial weights and prompt order)."""
    return [arm[s] - baseline[s] for s in sorted(set(arm) & set(baseline))]
