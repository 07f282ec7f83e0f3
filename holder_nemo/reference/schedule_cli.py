"""``holderpo schedule RECIPE.yaml [overrides] [-o OUT.png]``: print and plot p over a recipe's run.

Reads ``loss_fn.holder.schedule`` (validated by the NeMo RL plugin's config) and ``grpo.max_num_steps``, so it works
for the reference recipe and for the NeMo RL recipes alike. Steps count from 1: step k trains with p(k).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from holder_nemo.config import ConfigError, load_recipe, print_problems, to_plain
from holder_nemo.config.errors import output_file

PROG = "holderpo schedule"


def schedule_table(recipe: str | Path, overrides: list[str]) -> tuple[list[int], list[float], str]:
    """(steps 1..max_num_steps, p at each step, schedule description) of a recipe; ``ConfigError`` naming the key."""
    from holder_nemo.nemo_rl.loss_config import parse_loss_config, required_in_recipes

    cfg = to_plain(load_recipe(recipe, overrides))
    missing = required_in_recipes(cfg.get("loss_fn"))
    if missing:
        raise ConfigError(missing)
    schedule = parse_loss_config(cfg["loss_fn"], mean_reward_known=True).holder.schedule
    if schedule.kind == "reward":
        raise ConfigError("loss_fn.holder.schedule.kind", "'reward' follows each step's mean reward: no p per step")
    max_steps = (cfg.get("grpo") or {}).get("max_num_steps", schedule.steps)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError("grpo.max_num_steps", f"must be an integer >= 1, got {max_steps!r}")
    steps = list(range(1, max_steps + 1))
    desc = f"{schedule.kind}: p_max={schedule.p_max:g}, p_min={schedule.p_min:g}, over {schedule.steps} steps"
    return steps, [schedule(s) for s in steps], desc


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Print and plot the p schedule of a recipe.")
    parser.add_argument("recipe", type=Path)
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides, e.g. loss_fn.holder.schedule.kind=cos")
    parser.add_argument("-o", "--out", type=Path, default=None, help="PNG path (default: <recipe stem>_schedule.png)")
    ns = parser.parse_args(argv)
    try:
        steps, ps, desc = schedule_table(ns.recipe, ns.overrides)
        out = output_file("-o", ns.out or Path(f"{ns.recipe.stem}_schedule.png"))
    except ConfigError as exc:
        return print_problems(PROG, exc)
    print(f"{ns.recipe}: {desc}")
    print(f"{'step':>8}  {'p':>9}")
    stride = max(1, -(-len(steps) // 20))  # at most 21 rows, evenly spaced, the last step included
    shown = sorted({*range(0, len(steps), stride), len(steps) - 1})
    for i in shown:
        print(f"{steps[i]:>8}  {ps[i]:>+9.4f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot(steps, ps)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="training step", ylabel="Hölder order p", title=f"{ns.recipe.name}: {desc}")
    ax.grid(alpha=0.3)
    try:
        fig.savefig(out, dpi=90)
    except OSError as exc:
        return print_problems(PROG, ConfigError("-o", f"cannot write {str(out)!r} ({exc.strerror})"))
    finally:
        plt.close(fig)
    print(f"figure: {out}")
    return 0
