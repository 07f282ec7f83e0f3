"""``holderpo schedule RECIPE.yaml [overrides] [-o OUT.png]``: print and plot p over a recipe's run.

Reads ``loss_fn.holder.schedule`` (validated by the NeMo RL plugin's config) and ``grpo.max_num_steps``, so it works
for the reference recipe and for the NeMo RL recipes alike. Steps count from 1: step k trains with p(k).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from holder_nemo.config import ConfigError, load_recipe


def schedule_table(recipe: str | Path, overrides: list[str]) -> tuple[list[int], list[float], str]:
    """(steps 1..max_num_steps, p at each step, schedule description) of a recipe."""
    from omegaconf import OmegaConf

    from holder_nemo.nemo_rl.config import parse_loss_config

    cfg = load_recipe(recipe, overrides)
    loss_cfg = parse_loss_config(OmegaConf.to_container(cfg.loss_fn, resolve=True))
    schedule = loss_cfg.holder.schedule
    max_steps = int(OmegaConf.select(cfg, "grpo.max_num_steps", default=schedule.steps))
    steps = list(range(1, max_steps + 1))
    desc = f"{schedule.kind}: p_max={schedule.p_max:g}, p_min={schedule.p_min:g}, over {schedule.steps} steps"
    return steps, [schedule(s) for s in steps], desc


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="holderpo schedule", description="Print and plot the p schedule of a recipe.")
    parser.add_argument("recipe", type=Path)
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides, e.g. loss_fn.holder.schedule.kind=cos")
    parser.add_argument("-o", "--out", type=Path, default=None, help="PNG path (default: <recipe stem>_schedule.png)")
    parser.add_argument("--rows", type=int, default=21, help="table rows to print (evenly spaced, last step included)")
    ns = parser.parse_args(argv)
    try:
        steps, ps, desc = schedule_table(ns.recipe, ns.overrides)
    except (ConfigError, ValueError) as exc:
        print(f"holderpo schedule: {exc}", file=sys.stderr)
        return 2
    print(f"{ns.recipe}: {desc}")
    print(f"{'step':>8}  {'p':>9}")
    stride = max(1, -(-len(steps) // max(1, ns.rows - 1)))
    shown = sorted({*range(0, len(steps), stride), len(steps) - 1})
    for i in shown:
        print(f"{steps[i]:>8}  {ps[i]:>+9.4f}")
    out = ns.out or Path(f"{ns.recipe.stem}_schedule.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot(steps, ps)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="training step", ylabel="Hölder order p", title=f"{ns.recipe.name}: {desc}")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"figure: {out}")
    return 0
