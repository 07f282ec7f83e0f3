"""Statistics of a multi-seed study: per-run summaries of a reward curve and 95 % Student-t intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from holder_nemo.reference.plotting import smooth  # the training figure's trailing mean, so both plots agree

# t_{0.975, df} for df = 1..30 (two-sided 95 %), from the standard printed tables (4 decimals).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)  # fmt: skip
Z975 = 1.959963984540054  # the normal quantile the t quantile tends to


def t975(df: int) -> float:
    """Two-sided 95 % critical value of Student's t with ``df`` >= 1 degrees of freedom: P(|T| <= t) = 0.95."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    # beyond the table, the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5), within 1e-6 for df > 30:
    # t = z + g1/df + g2/df^2 + g3/df^3 + g4/df^4
    z = Z975
    g = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(gk / df ** (k + 1) for k, gk in enumerate(g))


def mean_interval(values: Sequence[float]) -> dict[str, float]:
    """Mean and the half-width of its two-sided 95 % t interval over seeds, t_{0.975, n-1} * s / sqrt(n) (sample
    std, ddof = 1); the half-width is nan with fewer than two values (one seed supports no interval)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    half = t975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n) if n >= 2 else float("nan")
    return {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half, "n": n}


def excludes_zero(interval: dict[str, Any]) -> bool:
    """Whether a (paired-difference) interval lies wholly on one side of 0; never with fewer than two seeds."""
    return interval["n"] >= 2 and (interval["low"] > 0 or interval["high"] < 0)


def final_reward(rewards: Sequence[float]) -> float:
    """Mean reward over the last 10 % of steps (at least one step)."""
    return float(np.mean(rewards[-max(1, len(rewards) // 10) :]))


def steps_to_threshold(rewards: Sequence[float], threshold: float, window: int) -> tuple[int, bool]:
    """First 1-based step at which the trailing ``window``-step mean reward reaches ``threshold``.

    Returns (step, reached). A run that never reaches it is censored at its last step: (len(rewards), False), so
    the mean over seeds is then a lower bound (the report says how many seeds reached the threshold).
    """
    hits = np.nonzero(smooth(np.asarray(rewards, dtype=float), window) >= threshold)[0]
    return (int(hits[0]) + 1, True) if len(hits) else (len(rewards), False)
