"""PSchedule: closed forms of every kind (the authors' code), endpoints, purity and validation."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from holder_nemo.core import SCHEDULE_KINDS, PSchedule


def expected(kind: str, x: float, lo: float, hi: float, power: float = 2.0) -> float:
    mid, amp = (lo + hi) / 2, (hi - lo) / 2
    return {
        "linear": lo + (hi - lo) * x,
        "linear_dec": hi - (hi - lo) * x,
        "sin": mid - amp * math.cos(math.pi * x),
        "cos": mid + amp * math.cos(math.pi * x),
        "poly": lo + (hi - lo) * x**power,
        "poly_dec": hi - (hi - lo) * x**power,
        "cubic": mid + amp * (2 * x - 1) ** 3,
        "cubic_dec": mid - amp * (2 * x - 1) ** 3,
    }[kind]


SHAPED = [k for k in SCHEDULE_KINDS if k not in {"constant", "reward"}]


@pytest.mark.parametrize("kind", SHAPED)
def test_every_shape_matches_its_formula(kind):
    sched = PSchedule(kind=kind, p_max=2.0, p_min=-2.0, steps=500, power=3.0)
    for step in (0, 1, 37, 125, 250, 499, 500, 501, 10_000):
        x = min(1.0, step / 500)
        assert sched(step) == pytest.approx(expected(kind, x, -2.0, 2.0, 3.0), abs=1e-12)


@pytest.mark.parametrize("kind", SHAPED)
def test_endpoints_and_monotonicity(kind):
    sched = PSchedule(kind=kind, p_max=1.0, p_min=-1.0, steps=150)
    values = [sched(s) for s in range(0, 200)]
    descending = kind.endswith("_dec") or kind == "cos"
    start, end = (1.0, -1.0) if descending else (-1.0, 1.0)
    assert values[0] == pytest.approx(start) and values[150] == pytest.approx(end)
    assert all(v == pytest.approx(end) for v in values[150:])  # held after the schedule ends
    diffs = [b - a for a, b in itertools.pairwise(values)]
    assert all(d <= 1e-12 for d in diffs) if descending else all(d >= -1e-12 for d in diffs)


def test_paper_default_matches_the_authors_step_convention():
    sched = PSchedule()  # linear_dec 2 -> -2 over 500 steps
    assert sched.kind == "linear_dec"
    assert sched(1) == pytest.approx(1.992)  # oat's first step (steps count from 1)
    assert sched(250) == 0.0
    assert sched(500) == -2.0 and sched(800) == -2.0
    assert sched(-5) == 2.0


def test_constant_and_degenerate_range():
    assert PSchedule(kind="constant", p_max=3.0).__call__(123) == 3.0
    assert PSchedule(kind="linear_dec", p_max=0.5, p_min=0.5)(77) == 0.5


def test_reward_rule_is_clipped_and_needs_a_reward():
    sched = PSchedule(kind="reward", p_max=1.0, p_min=0.0, gamma=2.0)
    assert sched(10, mean_reward=0.0) == 1.0
    assert sched(10, mean_reward=0.5) == pytest.approx(math.exp(-1.0))
    assert PSchedule(kind="reward", p_max=1.0, p_min=0.5, gamma=5.0)(3, mean_reward=1.0) == 0.5
    with pytest.raises(ValueError, match="needs a finite mean_reward"):
        sched(3)


def test_schedule_is_a_pure_function_of_its_arguments():
    sched = PSchedule(kind="cos", steps=40)
    first = [sched(s) for s in range(50)]
    shuffled = {s: sched(s) for s in reversed(range(50))}
    assert first == [shuffled[s] for s in range(50)]
    assert PSchedule(kind="cos", steps=40)(17) == first[17]  # a new object (e.g. after a restart) agrees


def test_from_dict_round_trip_and_unknown_keys():
    cfg = {"kind": "poly_dec", "p_max": 1.5, "p_min": -0.5, "steps": 80, "power": 3.0, "gamma": 1.0}
    sched = PSchedule.from_dict(cfg)
    assert dataclasses.asdict(sched) == cfg
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stpes'\]"):
        PSchedule.from_dict({"kind": "linear", "stpes": 10})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "exp"}, "PSchedule.kind must be one of"),
        ({"p_min": 3.0}, r"PSchedule.p_min \(3.0\) must be <= PSchedule.p_max \(2.0\)"),
        ({"p_max": float("nan")}, "PSchedule.p_max must be a finite real number"),
        ({"p_min": float("-inf")}, "PSchedule.p_min must be a finite real number"),
        ({"steps": 0}, "PSchedule.steps must be an integer >= 1"),
        ({"steps": 2.5}, "PSchedule.steps must be an integer >= 1"),
        ({"power": 0.0}, "PSchedule.power must be > 0"),
        ({"gamma": -1.0}, "PSchedule.gamma must be >= 0"),
        ({"p_max": "2"}, "PSchedule.p_max must be a finite real number"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PSchedule(**kwargs)


def test_step_must_be_an_integer():
    with pytest.raises(ValueError, match="step must be an integer"):
        PSchedule()(1.5)
