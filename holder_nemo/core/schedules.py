"""Schedules for the Hölder order p over training (paper §3, App. E; formulas of the authors' code).

With progress x = min(1, max(step, 0) / steps), mid = (p_min + p_max) / 2 and amp = (p_max - p_min) / 2:

    constant   p_max
    linear     p_min + (p_max - p_min) x           (ascending)
    linear_dec p_max - (p_max - p_min) x           (paper default, 2 -> -2 over 500 steps for maths)
    sin        mid - amp cos(pi x)                 (ascending S-curve)
    cos        mid + amp cos(pi x)                 (descending S-curve)
    poly       p_min + (p_max - p_min) x^power     ("Square Asc" at power 2)
    poly_dec   p_max - (p_max - p_min) x^power
    cubic      mid + amp (2x - 1)^3                (symmetric S-curve)
    cubic_dec  mid - amp (2x - 1)^3
    reward     clip(p_max exp(-gamma * mean_reward), p_min, p_max)   (APMPO-style feedback rule, for comparison)

Steps count from 1 as in the authors' code: the first training step uses p(1) (1.992 for 2 -> -2 over 500) and
step ``steps`` reaches the end value, held afterwards. The schedule is a pure function of its arguments, so a run
resumed at step k uses exactly p(k).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

SCHEDULE_KINDS = (
    "constant",
    "linear",
    "linear_dec",
    "cos",
    "sin",
    "poly",
    "poly_dec",
    "cubic",
    "cubic_dec",
    "reward",
)


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"PSchedule.{name} must be a finite real number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PSchedule:
    """p as a function of the training step; validated on construction (ValueError naming the field)."""

    kind: str = "linear_dec"
    p_max: float = 2.0
    p_min: float = -2.0
    steps: int = 500
    power: float = 2.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"PSchedule.kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        for name in ("p_max", "p_min", "power", "gamma"):
            object.__setattr__(self, name, _check_real(name, getattr(self, name)))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"PSchedule.steps must be an integer >= 1, got {self.steps!r}")
        if self.p_min > self.p_max:
            raise ValueError(f"PSchedule.p_min ({self.p_min}) must be <= PSchedule.p_max ({self.p_max})")
        if self.power <= 0:
            raise ValueError(f"PSchedule.power must be > 0, got {self.power}")
        if self.gamma < 0:
            raise ValueError(f"PSchedule.gamma must be >= 0, got {self.gamma}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> PSchedule:
        """Build from a config mapping (e.g. a recipe's ``loss_fn.holder.schedule``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"PSchedule: unknown key(s) {unknown}; allowed keys are {sorted(known)}")
        return cls(**dict(config))

    def progress(self, step: int) -> float:
        """Fraction of the schedule completed at ``step``, in [0, 1]."""
        return min(1.0, max(step, 0) / self.steps)

    def __call__(self, step: int, mean_reward: float | None = None) -> float:
        """p at training step ``step`` (1-based as in the paper's code; 0 gives the start value)."""
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"step must be an integer, got {step!r}")
        lo, hi = self.p_min, self.p_max
        if self.kind == "reward":
            if mean_reward is None or not math.isfinite(mean_reward):
                raise ValueError(f"the 'reward' schedule needs a finite mean_reward, got {mean_reward!r}")
            return min(hi, max(lo, hi * math.exp(-self.gamma * mean_reward)))
        if self.kind == "constant":
            return hi
        if lo == hi:
            return lo
        x = self.progress(step)
        mid, amp, span = (lo + hi) / 2, (hi - lo) / 2, hi - lo
        match self.kind:
            case "linear":
                return lo + span * x
            case "linear_dec":
                return hi - span * x
            case "sin":
                return mid - amp * math.cos(math.pi * x)
            case "cos":
                return mid + amp * math.cos(math.pi * x)
            case "poly":
                return lo + span * x**self.power
            case "poly_dec":
                return hi - span * x**self.power
            case "cubic":
                return mid + amp * (2 * x - 1) ** 3
            case "cubic_dec":
                return mid - amp * (2 * x - 1) ** 3
        raise AssertionError(f"unhandled schedule kind {self.kind!r}")  # unreachable: kind validated above
