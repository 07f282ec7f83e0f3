"""``holderpo compare [RECIPE.yaml] [overrides] [--out-dir DIR]``: GRPO vs GSPO vs annealed HölderPO, one figure.

The three runs share the recipe, its seed (hence the initial weights and the prompt stream) and everything else but
the loss's ``holder`` block, which selects the special case:

    GRPO      clip_mode token, p = 1 (constant)     GRPO's per-token clipped loss, averaged per sequence
    GSPO      clip_mode sequence, p = 0 (constant)  GSPO's geometric-mean sequence ratio (with the recipe's eps)
    HölderPO  the recipe's own schedule and clip mode (default: sequence, p linear 2 -> -2)

Each run lives in DIR/<name> and is an ordinary reference run (resumable, exit 75 on a stop request).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.reference.plotting import smooth
from holder_nemo.reference.train import EXIT_COMPLETED, split_recipe, summarize

VARIANTS: dict[str, list[str]] = {
    "GRPO": [
        "loss_fn.holder.clip_mode=token",
        "loss_fn.holder.schedule.kind=constant",
        "loss_fn.holder.schedule.p_max=1.0",
    ],
    "GSPO": [
        "loss_fn.holder.clip_mode=sequence",
        "loss_fn.holder.schedule.kind=constant",
        "loss_fn.holder.schedule.p_max=0.0",
    ],
    "HölderPO": [],
}


def _dir_name(name: str) -> str:
    return name.lower().replace("ö", "o")


def run_variant(recipe: Path, overrides: list[str], run_dir: Path) -> int:
    """One reference run; returns its exit code (0 complete, 75 stopped, 2 bad config)."""
    from holder_nemo.reference.train import main as train_main

    return train_main([str(recipe), *overrides, f"checkpointing.checkpoint_dir={run_dir}", "logger.plot=false"])


def plot_comparison(run_dirs: dict[str, Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True)
    for name, run_dir in run_dirs.items():
        records = read_metrics(run_dir)
        steps = np.array([r["step"] for r in records])
        window = max(1, len(records) // 25)
        for ax, key in zip(axes, ("reward_mean", "holder_p", "holder/kl_to_old"), strict=True):
            values = np.array([r.get(key, np.nan) for r in records], dtype=float)
            ax.plot(steps, smooth(values, window) if key != "holder_p" else values, label=name)
    titles = ("Mean reward (moving average)", "Hölder order p", "KL(old || new) per token, k3")
    axes[2].set_yscale("log")  # heavy-tailed
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Same seed, task and recipe: GRPO (token clip, p=1) vs GSPO (sequence clip, p=0) vs HölderPO")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="holderpo compare", description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", help="[RECIPE.yaml] then overrides applied to all three runs")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/compare"), help="parent of the three run dirs")
    ns = parser.parse_args(argv)
    recipe, args = split_recipe(ns.args)
    run_dirs = {name: ns.out_dir / _dir_name(name) for name in VARIANTS}
    for name, extra in VARIANTS.items():
        print(f"holderpo compare: {name} -> {run_dirs[name]}", file=sys.stderr)
        code = run_variant(recipe, [*args, *extra], run_dirs[name])  # a bad recipe: holderpo train says why, exit 2
        if code != EXIT_COMPLETED:
            return code
    out = plot_comparison(run_dirs, ns.out_dir / "compare.png")
    print(f"{'method':<10} {'first 10%':>10} {'last 10%':>10} {'gain':>8}")
    for name, run_dir in run_dirs.items():
        s = summarize(read_metrics(run_dir))
        print(f"{name:<10} {s['reward_first_10pct']:>10.3f} {s['reward_last_10pct']:>10.3f} {s['reward_gain']:>+8.3f}")
    print(f"figure: {out}")
    return 0
