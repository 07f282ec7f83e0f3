"""``holderpo plot RUN_DIR``: the training figure (reward, p, effective tokens, clip fractions, KL, grad norm,
response length, Jensen gap) drawn from ``RUN_DIR/metrics.jsonl`` into ``RUN_DIR/training.png``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from holder_nemo.config.errors import ConfigError, print_problems
from holder_nemo.reference.metrics_log import read_metrics

FIGURE_FILE = "training.png"

# (title, [(metric key, legend label)], y label); KL and gradient norm are heavy-tailed, so drawn on a log axis.
LOG_PANELS = ("KL(old || new), k3", "Gradient norm (pre-clip)")
PANELS: list[tuple[str, list[tuple[str, str]], str]] = [
    ("Reward", [("reward_mean", "mean reward"), ("exact_match", "exact match")], "reward"),
    ("Hölder order p", [("holder_p", "p")], "p"),
    ("Effective tokens", [("holder/effective_tokens", "exp(entropy of W(p))")], "tokens"),
    (
        "Clip fractions",
        [
            ("holder/seq_clip_frac_high", "sequence, high"),
            ("holder/seq_clip_frac_low", "sequence, low"),
            ("holder/token_clip_frac", "token"),
        ],
        "fraction",
    ),
    ("KL(old || new), k3", [("holder/kl_to_old", "per token")], "nats"),
    ("Gradient norm (pre-clip)", [("grad_norm", "L2")], "norm"),
    ("Response length", [("response_length_mean", "mean tokens")], "tokens"),
    ("Jensen gap log rho_p - log rho_0", [("holder/jensen_gap", "mean")], "nats"),
]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window clipped at the start), same length as ``values``."""
    if window <= 1 or len(values) == 0:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_run(run_dir: str | Path) -> Path:
    """Draw the 2 x 4 training figure of ``run_dir/metrics.jsonl`` into ``run_dir/training.png``."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        raise ConfigError(str(run_dir), "no metrics.jsonl records to plot: give the run directory of a holderpo train")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(1, len(records) // 25)
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5), constrained_layout=True)
    for ax, (panel_title, keys, ylabel) in zip(axes.flat, PANELS, strict=True):
        for key, label in keys:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
            if not points:
                continue
            steps, values = np.asarray([s for s, _ in points]), np.asarray([v for _, v in points], dtype=float)
            if key == "holder_p":
                ax.plot(steps, values, label=label)
                continue
            (line,) = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values, window), color=line.get_color(), label=f"{label} (avg {window})")
        if panel_title in LOG_PANELS and ax.lines:
            ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"HölderPO reference run: {run_dir.name}")
    out = run_dir / FIGURE_FILE
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="holderpo plot", description="Redraw the training figure of a run.")
    parser.add_argument("run_dir", type=Path, help="run directory containing metrics.jsonl")
    ns = parser.parse_args(argv)
    try:
        path = plot_run(ns.run_dir)
    except ConfigError as exc:
        return print_problems("holderpo plot", exc)
    print(path)
    return 0
