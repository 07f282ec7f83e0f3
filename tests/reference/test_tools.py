"""`holderpo plot`, `holderpo schedule` and the metric reductions of the reference run."""

from __future__ import annotations

import json

import pytest
from reference_helpers import SMOKE

from holder_nemo.reference import plotting, schedule_cli


def test_plot_redraws_from_metrics(tmp_path, capsys):
    records = [
        {"step": s, "reward_mean": s / 10, "holder_p": 2 - s / 5, "grad_norm": 1.0 + s, "holder/kl_to_old": 1e-3 * s}
        for s in range(1, 11)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plotting.main([str(tmp_path)]) == 0
    assert (tmp_path / "training.png").stat().st_size > 10_000
    assert plotting.main([str(tmp_path / "empty")]) == 2  # bad input: a directory of no run
    assert "no metrics" in capsys.readouterr().err


def test_smooth_is_a_trailing_mean():
    out = plotting.smooth(__import__("numpy").array([1.0, 2.0, 3.0, 4.0]), 2)
    assert out.tolist() == [1.0, 1.5, 2.5, 3.5]


def test_schedule_prints_paper_convention(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert schedule_cli.main([str(SMOKE), "grpo.max_num_steps=500", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "linear_dec" in text
    rows = {int(a): float(b) for a, b in (line.split() for line in text.splitlines() if line.strip()[:1].isdigit())}
    assert rows[1] == pytest.approx(1.992)  # p(1) = 2 - 4/500, paper/oat convention
    assert rows[500] == pytest.approx(-2.0)
    assert out.stat().st_size > 5_000


def test_schedule_bad_kind_names_key(capsys):
    assert schedule_cli.main([str(SMOKE), "loss_fn.holder.schedule.kind=zigzag"]) == 2
    assert "loss_fn.holder.schedule" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("~loss_fn.holder.schedule", "holderpo schedule: loss_fn.holder.schedule: required: the p schedule, e.g. "),
        ("loss_fn.holder.schedule.kind=reward", "holderpo schedule: loss_fn.holder.schedule.kind: 'reward' follows "),
    ],
)
def test_schedule_without_a_per_step_schedule_says_what_is_missing(capsys, override, line):
    assert schedule_cli.main([str(SMOKE), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err


def test_metric_reduction_follows_nemo_rl():
    from holder_nemo.nemo_rl import HolderPOLossFn
    from holder_nemo.reference.metrics_log import combine_metrics

    how = HolderPOLossFn.metric_reductions
    acc: dict[str, float] = {}
    for value in (0.25, 0.5):
        combine_metrics(acc, {"holder/seq_clip_frac_high": value}, how)
    assert acc["holder/seq_clip_frac_high"] == 0.75  # pre-normalised by global counts: micro-batches add up
    combine_metrics(acc, {"probs_ratio_min": 0.9, "probs_ratio_max": 1.1}, how)
    combine_metrics(acc, {"probs_ratio_min": 0.8, "probs_ratio_max": 1.3}, how)
    assert acc["probs_ratio_min"] == 0.8 and acc["probs_ratio_max"] == 1.3
