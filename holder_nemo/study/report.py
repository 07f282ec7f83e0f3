"""A study's results: per-run summaries, per-arm 95 % Student-t intervals over seeds, paired differences against GRPO.

Outputs in the study directory:
    study.json   settings, arms, tasks, per-run values, per-arm intervals and diagnostics, curves
    study.md     the same as tables (mean +- 95 % t half-width over seeds)
    study.png    per task: mean reward curve with its 95 % band per arm (top), p(t) per arm (bottom)
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

from holder_nemo.files import atomic_write
from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.reference.plotting import smooth  # the training figure's trailing mean, so both plots agree
from holder_nemo.study.runner import RunSpec
from holder_nemo.study.spec import ARMS, BASELINE_ARM, TASKS

JSON_FILE, MARKDOWN_FILE, FIGURE_FILE = "study.json", "study.md", "study.png"
OUTCOMES = ("final_reward", "auc", "steps_to_threshold")  # the results table's metrics, also paired against GRPO
# (metrics.jsonl key, name in study.json, column in study.md, digits): means over a run's steps, then over seeds
DIAGNOSTICS = (
    ("holder_p", "p", "p", 2),
    ("holder/jensen_gap", "jensen_gap", "Jensen gap", 5),
    ("holder/effective_tokens", "effective_tokens", "effective tokens", 2),
    ("response_length_mean", "response_tokens", "response tokens", 2),
    ("holder/seq_clip_frac_low", "seq_clip_low", "seq clip low", 4),
    ("holder/seq_clip_frac_high", "seq_clip_high", "seq clip high", 4),
    ("holder/token_clip_frac", "token_clip", "token clip", 4),
    ("holder/kl_to_old", "kl_to_old", "KL(old‖new)", 5),
)


@functools.cache  # a report asks for the same few df thousands of times (one interval per step per arm)
def t975(df: int) -> float:
    """Two-sided 95 % critical value of Student's t with ``df`` >= 1 degrees of freedom: P(|T| <= t) = 0.95."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    # P(|T| > t) = I_x(df/2, 1/2) with x = df / (df + t^2) (the regularised incomplete beta function), solved for
    # 0.05 between t(0.975, inf) = 1.96 and t(0.975, 1) = 12.71
    return float(
        mpmath.findroot(
            lambda t: mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True) - 0.05,
            (1.9, 13.0),
            solver="anderson",
        )
    )


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


def steps_to_threshold(rewards: Sequence[float], threshold: float, window: int) -> tuple[int, bool]:
    """First 1-based step at which the trailing ``window``-step mean reward reaches ``threshold``.

    Returns (step, reached). A run that never reaches it is censored at its last step: (len(rewards), False), so
    the mean over seeds is then a lower bound (the report says how many seeds reached the threshold).
    """
    hits = np.nonzero(smooth(np.asarray(rewards, dtype=float), window) >= threshold)[0]
    return (int(hits[0]) + 1, True) if len(hits) else (len(rewards), False)


def smoothing_window(steps: int) -> int:
    """Trailing window for curves and steps-to-threshold: 5 % of the run, at least 1 step."""
    return max(1, steps // 20)


def run_summary(records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Final reward (last 10 % of steps), AUC, steps to threshold and diagnostic means of one run."""
    rewards = [r["reward_mean"] for r in records]
    step, reached = steps_to_threshold(rewards, threshold, smoothing_window(len(rewards)))
    # AUC: the area under the per-step reward curve over the number of steps, i.e. the mean reward over the run (in
    # [0, 1] for a [0, 1] reward): it credits learning early as well as learning much
    out: dict[str, Any] = {
        "steps": len(rewards),
        "final_reward": float(np.mean(rewards[-max(1, len(rewards) // 10) :])),  # the last 10 % of steps, at least one
        "auc": float(np.mean(rewards)),
        "steps_to_threshold": step,
        "reached_threshold": reached,
    }
    for key, name, _, _ in DIAGNOSTICS:
        values = [r[key] for r in records if isinstance(r.get(key), int | float)]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def arm_results(per_seed: dict[int, dict[str, Any]], baseline: dict[int, dict[str, Any]] | None) -> dict[str, Any]:
    """Intervals over seeds of one arm's run summaries, and its paired differences against the baseline arm."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {"seeds": seeds, "n_reached_threshold": sum(per_seed[s]["reached_threshold"] for s in seeds)}
    for metric in (*OUTCOMES, *(name for _, name, _, _ in DIAGNOSTICS)):
        out[metric] = mean_interval([per_seed[s][metric] for s in seeds])
    if baseline is not None:  # paired by seed (same initial weights and prompt order), over the seeds both have
        common = [s for s in seeds if s in baseline]
        out["vs_grpo"] = {m: mean_interval([per_seed[s][m] - baseline[s][m] for s in common]) for m in OUTCOMES}
    return out


def curves(records_by_seed: dict[int, list[dict[str, Any]]], window: int) -> dict[str, list[float]]:
    """Per step: mean over seeds of the smoothed reward with its 95 % band, and the mean p."""
    steps = min(len(r) for r in records_by_seed.values())
    runs = [recs[:steps] for recs in records_by_seed.values()]
    rewards = np.array([smooth(np.array([r["reward_mean"] for r in recs], dtype=float), window) for recs in runs])
    ps = np.array([[r["holder_p"] for r in recs] for recs in runs])
    bands = [mean_interval(rewards[:, t]) for t in range(steps)]
    return {
        "step": list(range(1, steps + 1)),
        "reward_mean": [b["mean"] for b in bands],
        "reward_half_width": [0.0 if np.isnan(b["half_width"]) else b["half_width"] for b in bands],
        "p_mean": ps.mean(0).tolist(),
        "p_min": ps.min(0).tolist(),
        "p_max": ps.max(0).tolist(),
    }


def _fmt(interval: dict[str, float], digits: int = 3, signed: bool = False) -> str:
    """``mean ± half-width``; the mean alone with one seed, a dash without any."""
    mean, half = interval["mean"], interval["half_width"]
    if np.isnan(mean):
        return "–"
    text = f"{mean:{'+' if signed else ''}.{digits}f}"
    return text if np.isnan(half) else f"{text} ± {half:.{digits}f}"


def _delta(interval: dict[str, float], digits: int) -> str:
    """A paired difference; bold when its 95 % interval excludes 0."""
    text = _fmt(interval, digits, signed=True)
    return f"**{text}**" if excludes_zero(interval) else text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(study: dict[str, Any]) -> str:
    s, labels = study["settings"], {a: v["label"] for a, v in study["arms"].items()}
    lines = [
        "# HölderPO aggregation study",
        "",
        f"Command: `{s['command']}`",
        "",
        f"{s['seeds']} seeds per arm (seed k: same initial weights and prompt order in every arm), "
        f"{s['steps']} steps per run. Values are mean ± half-width of the 95 % Student-t interval over seeds. "
        "**Final reward**: mean reward of the last 10 % of steps. "
        "**AUC**: mean reward over all steps (area under the reward curve / steps). "
        f"**Steps to threshold**: first step where the trailing {s['window']}-step mean reward reaches the task's "
        f"threshold (runs that never do count as their last step; `k/n` say how many reached it). "
        f"**Δ vs GRPO**: per-seed paired difference arm − GRPO; bold when its 95 % interval excludes 0.",
        "",
    ]
    header = ["arm", "final reward", "AUC", "steps to threshold", "Δ final vs GRPO", "Δ AUC vs GRPO", "Δ steps vs GRPO"]
    for task, arms in study["results"].items():
        t, rows = study["tasks"][task], []
        for arm, r in arms.items():
            steps = f"{_fmt(r['steps_to_threshold'], 0)} ({r['n_reached_threshold']}/{len(r['seeds'])})"
            vs = r.get("vs_grpo")
            deltas = [_delta(vs[m], 0 if m == "steps_to_threshold" else 3) for m in OUTCOMES] if vs else None
            rows.append([labels[arm], _fmt(r["final_reward"]), _fmt(r["auc"]), steps, *(deltas or ["(baseline)"] * 3)])
        lines += [f"## Task `{task}`: {t['summary']}", "", f"Threshold {t['threshold']}.", "", *_table(header, rows)]
        lines += [
            "",
            "Diagnostics (means over steps, then over seeds): p; Jensen gap log ρ_p − log ρ_0 per sequence (0 when "
            "every token ratio is equal; how far the arm's aggregate is from the geometric mean); effective tokens "
            "exp(entropy of the token weights) against the response length; sequence- and token-clip fractions; "
            "KL(old ‖ new) per token.",
            "",
            *_table(
                ["arm", *(column for _, _, column, _ in DIAGNOSTICS)],
                [[labels[arm], *(_fmt(r[n], d) for _, n, _, d in DIAGNOSTICS)] for arm, r in arms.items()],
            ),
            "",
        ]
    arm_rows = [
        [f"{a['label']} (`{arm}`)", a["summary"], f"`{' '.join(a['overrides'])}`"] for arm, a in study["arms"].items()
    ]
    lines += ["## Arms", "", *_table(["arm", "what", "overrides"], arm_rows)]
    lines += ["", "## Shared settings", "", f"Recipe `{s['recipe']}` with `{' '.join(s['overrides'])}`."]
    lines += ["", f"![study]({FIGURE_FILE})", ""]
    return "\n".join(lines)


def plot(study_curves: dict[str, dict[str, Any]], labels: dict[str, str], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2,
        len(study_curves),
        figsize=(7.5 * len(study_curves), 8),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [2.2, 1]},
        constrained_layout=True,
    )
    colors = plt.get_cmap("tab10")
    for (top, bottom), (task, by_arm) in zip(axes.T, study_curves.items(), strict=True):
        for i, (arm, c) in enumerate(by_arm.items()):
            steps, mean, half = np.array(c["step"]), np.array(c["reward_mean"]), np.array(c["reward_half_width"])
            color = colors(i % 10)
            top.plot(steps, mean, color=color, label=labels[arm], lw=1.4)
            top.fill_between(steps, mean - half, mean + half, color=color, alpha=0.15, lw=0)
            bottom.plot(steps, c["p_mean"], color=color, lw=1.4)
            bottom.fill_between(steps, c["p_min"], c["p_max"], color=color, alpha=0.15, lw=0)  # seeds' p differ: reward
        top.set(title=f"task {task}: mean reward (trailing mean) ± 95 % CI over seeds", ylabel="reward")
        bottom.set(title="Hölder order p (mean over seeds; band: min–max)", xlabel="step", ylabel="p")
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
        top.legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_report(out_dir: Path, specs: list[RunSpec], settings: dict[str, Any]) -> list[Path]:
    """Summarise every finished run of ``specs`` into study.json, study.md and study.png in ``out_dir``; returns
    their paths. Unfinished runs are left out (and named); raises SystemExit when no run has finished."""
    finished = [spec for spec in specs if spec.completed()]
    missing = [spec.name for spec in specs if not spec.completed()]
    if missing:
        more = " ..." if len(missing) > 8 else ""
        print(
            f"holderpo study: report without {len(missing)} unfinished run(s): {', '.join(missing[:8])}{more}",
            file=sys.stderr,
        )
    if not finished:
        raise SystemExit("holderpo study: no finished run to report on")
    records: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {}  # [task][arm][seed] = metrics.jsonl rows
    for spec in finished:
        records.setdefault(spec.task, {}).setdefault(spec.arm, {})[spec.seed] = read_metrics(spec.run_dir)
    per_run, results, study_curves = {}, {}, {}
    for task, arms in records.items():
        per_run[task] = {
            a: {s: run_summary(recs, TASKS[task].threshold) for s, recs in v.items()} for a, v in arms.items()
        }
        baseline = per_run[task].get(BASELINE_ARM)
        results[task] = {a: arm_results(v, baseline if a != BASELINE_ARM else None) for a, v in per_run[task].items()}
        window = smoothing_window(max(len(recs) for seeds in arms.values() for recs in seeds.values()))
        study_curves[task] = {arm: curves(seeds, window) for arm, seeds in arms.items()}
    study = {
        "settings": settings,
        "arms": {a: asdict(ARMS[a]) for a in dict.fromkeys(s.arm for s in specs)},  # label, summary, overrides
        "tasks": {t: asdict(TASKS[t]) for t in dict.fromkeys(s.task for s in specs)},  # summary, overrides, threshold
        "results": results,
        "runs": per_run,  # [task][arm][seed] (JSON writes the seeds as strings)
        "missing_runs": missing,
    }
    json_path, md_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    with atomic_write(json_path) as fh:
        fh.write(json.dumps({**study, "curves": study_curves}, indent=1, allow_nan=True) + "\n")
    md_path.write_text(markdown(study))
    labels = {arm: a["label"] for arm, a in study["arms"].items()}
    return [json_path, md_path, plot(study_curves, labels, out_dir / FIGURE_FILE, f"{settings['seeds']} seeds per arm")]
