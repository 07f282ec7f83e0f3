"""``holderpo study``: does annealed p help? Every arm x task x seed as a reference run, then tables with 95 % CIs.

Runs live in ``OUT/runs/<task>/<arm>/seed_<k>`` (ordinary ``holderpo train`` run directories); the report goes to
``OUT/study.{json,md,png}``. The commands, outputs and statistics are described in docs/study.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from holder_nemo.study.spec import ARMS, BASELINE_ARM, DEFAULT_SEEDS, STUDY_BASE, TASKS

DEFAULT_STEPS = 300
SET_BY_THE_STUDY = ("grpo.max_num_steps", "grpo.seed", "checkpointing.checkpoint_dir", "loss_fn.holder.schedule.steps")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="holderpo study",
        description="Multi-seed comparison of GRPO, GSPO, GMPO and HölderPO p schedules on the CPU reference run.",
        epilog="Exit codes: 0 complete, 75 stopped on request (rerun to continue), 1 a run failed, 2 bad arguments.",
    )
    parser.add_argument("args", nargs="*", help="[RECIPE.yaml] then overrides applied to every run (k=v)")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/study"), help="study directory (default runs/study)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"seeds per arm (default {DEFAULT_SEEDS})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"steps per run (default {DEFAULT_STEPS})")
    parser.add_argument("--jobs", type=int, default=None, help="parallel runs (default: the usable CPU cores)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of: {', '.join(ARMS)}")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of: {', '.join(TASKS)}")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    parser.add_argument("--dry-run", action="store_true", help="validate every run's recipe and print the runs")
    ns = parser.parse_args(argv)
    for what, known in (("arms", ARMS), ("tasks", TASKS)):
        names = [n.strip() for n in getattr(ns, what).split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            parser.error(f"--{what}: unknown {unknown or getattr(ns, what)!r}; choose from {', '.join(known)}")
        setattr(ns, what, names)
    for flag in ("seeds", "steps", "jobs"):
        if getattr(ns, flag) is not None and getattr(ns, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(ns, flag)}")
    for key in (o.lstrip("+~").split("=", 1)[0] for o in ns.args):
        if key in SET_BY_THE_STUDY:
            parser.error(f"{key} is set by the study (use --steps / --seeds / --out-dir), not by an override")
    return ns


def run_specs(ns: argparse.Namespace, recipe: Path, overrides: list[str]):
    """Every (task, arm, seed) run, seed-major so a stopped study has whole seeds of every arm first."""
    from holder_nemo.study.runner import RunSpec

    shared = [*STUDY_BASE, f"grpo.max_num_steps={ns.steps}", f"loss_fn.holder.schedule.steps={ns.steps}"]
    specs = []
    for seed in range(ns.seeds):
        for task in ns.tasks:
            for arm in ns.arms:
                run_dir = ns.out_dir / "runs" / task / arm / f"seed_{seed}"
                # later overrides win: an arm is always what its name says
                argv = (str(recipe), *shared, *TASKS[task].overrides, *overrides, *ARMS[arm].overrides)
                argv += (f"grpo.seed={seed}", f"checkpointing.checkpoint_dir={run_dir}")
                specs.append(RunSpec(task, arm, seed, run_dir, argv))
    return specs


def main(argv: list[str]) -> int:
    from holder_nemo.config import ConfigError, print_problems
    from holder_nemo.reference.train import check_resume, load_config, split_recipe
    from holder_nemo.study.report import smoothing_window, write_report
    from holder_nemo.study.runner import run_all

    ns = parse_args(argv)
    recipe, overrides = split_recipe(ns.args)
    recipe = recipe.resolve()
    specs = run_specs(ns, recipe, overrides)
    advice = "holderpo study keeps a run's settings (it has no --accept-config-change): restore them or use a new one"
    try:
        for spec in specs:
            _, resolved_yaml = load_config(spec.argv[0], list(spec.argv[1:]))
            # the run's own resume guard, before any run starts: a run directory of this study that was started with
            # other settings (an override, or the recipe file edited since) would silently mix two studies
            try:
                check_resume(spec.run_dir, resolved_yaml, accept=False)
            except ConfigError as exc:
                raise ConfigError([*exc.problems, ("--out-dir", advice)]) from None
    except ConfigError as exc:
        return print_problems("holderpo study", exc)
    # the cores this process may use (taskset, cgroups); macOS has no sched_getaffinity
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = ns.jobs or max(1, min(cores, len(specs)))
    if ns.dry_run:
        done = sum(spec.completed() for spec in specs)
        print(f"{len(specs)} runs ({done} complete) on {jobs} worker(s) into {ns.out_dir}:")
        print("\n".join(f"  {spec.name}: holderpo train {shlex.join(spec.argv)}" for spec in specs))
        return 0
    if not ns.report_only:
        code = run_all(specs, jobs, ns.out_dir)
        if code != 0:
            return code
    settings = {
        "command": shlex.join(["holderpo", "study", *argv]),
        "recipe": str(recipe),
        "overrides": [*STUDY_BASE, f"grpo.max_num_steps={ns.steps}", *overrides],
        "seeds": ns.seeds,
        "steps": ns.steps,
        "window": smoothing_window(ns.steps),
        "baseline": BASELINE_ARM,
        "confidence": 0.95,
    }
    paths = write_report(ns.out_dir, specs, settings)
    print(paths[1].read_text())
    print("holderpo study: wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
