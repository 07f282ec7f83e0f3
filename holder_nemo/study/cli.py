"""``holderpo study``: does annealed p help? Every arm x task x seed as a reference run, then tables with 95 % CIs.

    holderpo study                                   # 8 arms x 2 tasks x 5 seeds into runs/study (CPU, resumable)
    holderpo study --seeds 10 --jobs 4               # more seeds; the 5 already finished are not redone
    holderpo study --arms grpo,holder_anneal --tasks repeat --seeds 2 --steps 20 --out-dir /tmp/mini
    holderpo study --report-only                     # rebuild study.md / study.json / study.png from finished runs
    holderpo study --list                            # print the arms and tasks with their overrides
    holderpo study --dry-run                         # validate every run's recipe, print the runs, run nothing

Runs live in ``OUT/runs/<task>/<arm>/seed_<k>`` (ordinary ``holderpo train`` run directories); the report goes to
``OUT/study.{json,md,png}``. Exit codes: 0 complete, 75 stopped on request (rerun to continue), 2 bad arguments,
1 a run failed (its ``train.log`` says why).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from holder_nemo.study.spec import ARMS, BASELINE_ARM, DEFAULT_SEEDS, STUDY_BASE, TASKS

EXIT_BAD_ARGS = 2
DEFAULT_STEPS = 300
RUN_ARGS_FILE = "study_run.json"  # the exact `holderpo train` arguments a run directory was started with
INVOCATIONS_FILE = "invocations.jsonl"


def _names(value: str, known: dict, what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--{what}: unknown {unknown or value!r}; choose from {', '.join(known)}")
    return names


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
    parser.add_argument("--list", action="store_true", help="print arms and tasks with their overrides, then exit")
    parser.add_argument("--dry-run", action="store_true", help="validate every run's recipe and print the runs")
    ns = parser.parse_args(argv)
    try:
        ns.arms = _names(ns.arms, ARMS, "arms")
        ns.tasks = _names(ns.tasks, TASKS, "tasks")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if ns.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {ns.seeds}")
    if ns.steps < 1:
        parser.error(f"--steps must be >= 1, got {ns.steps}")
    if ns.jobs is not None and ns.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {ns.jobs}")
    args = list(ns.args)
    ns.recipe = args.pop(0) if args and args[0].endswith((".yaml", ".yml")) and "=" not in args[0] else None
    ns.overrides = args
    for o in ns.overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key in ("grpo.max_num_steps", "grpo.seed", "checkpointing.checkpoint_dir", "loss_fn.holder.schedule.steps"):
            parser.error(f"{key} is set by the study (use --steps / --seeds / --out-dir), not by an override")
    return ns


def run_specs(ns: argparse.Namespace, recipe: Path):
    """Every (task, arm, seed) run, seed-major so a stopped study has whole seeds of every arm first."""
    from holder_nemo.study.runner import RunSpec

    shared = [*STUDY_BASE, f"grpo.max_num_steps={ns.steps}", f"loss_fn.holder.schedule.steps={ns.steps}"]
    specs = []
    for seed in range(ns.seeds):
        for task in ns.tasks:
            for arm in ns.arms:
                run_dir = ns.out_dir / "runs" / task / arm / f"seed_{seed}"
                overrides = [*shared, *TASKS[task].overrides, *ns.overrides, *ARMS[arm].overrides]
                argv = (str(recipe), *overrides, f"grpo.seed={seed}", f"checkpointing.checkpoint_dir={run_dir}")
                specs.append(RunSpec(task, arm, seed, run_dir, argv))
    return specs


def check_run_args(specs) -> list[str]:
    """Record each run's arguments on first use; a run directory started with other settings is an error."""
    problems = []
    for spec in specs:
        path = spec.run_dir / RUN_ARGS_FILE
        if path.exists():
            before = json.loads(path.read_text())["argv"]
            if before[1:-1] != list(spec.argv[1:-1]):  # the recipe path and run directory may be spelt differently
                changed = sorted(set(before[1:-1]) ^ set(spec.argv[1:-1]))
                problems.append(f"{spec.run_dir} was started with different settings ({' '.join(changed)})")
        else:
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"argv": list(spec.argv)}, indent=1) + "\n")
    return problems


@contextlib.contextmanager
def study_lock(out_dir: Path) -> Iterator[bool]:
    """Exclusive lock on the study directory (False when another `holderpo study` holds it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / ".study.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def default_jobs(n_runs: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, n_runs))


def list_arms_and_tasks() -> str:
    lines = ["arms (baseline for paired differences: grpo):"]
    lines += [f"  {name:<16} {a.label}: {a.summary}\n  {'':<16} {' '.join(a.overrides)}" for name, a in ARMS.items()]
    lines += ["tasks:"]
    lines += [
        f"  {name:<16} {t.summary}; threshold {t.threshold}\n  {'':<16} {' '.join(t.overrides)}"
        for name, t in TASKS.items()
    ]
    lines += [f"shared overrides: {' '.join(STUDY_BASE)}"]
    return "\n".join(lines)


def build_report(ns: argparse.Namespace, specs, recipe: Path, command: str, jobs: int) -> list[Path]:
    from holder_nemo.reference.metrics_log import read_metrics
    from holder_nemo.study.report import build_results, smoothing_window, write_report
    from holder_nemo.study.runner import run_timing

    records: dict[str, dict[str, dict[int, list]]] = {}
    missing = []
    for spec in specs:
        if spec.completed():
            records.setdefault(spec.task, {}).setdefault(spec.arm, {})[spec.seed] = read_metrics(spec.run_dir)
        else:
            missing.append(spec.name)
    if missing:
        print(
            f"holderpo study: report without {len(missing)} unfinished run(s): {', '.join(missing[:8])}"
            f"{' ...' if len(missing) > 8 else ''}",
            file=sys.stderr,
        )
    if not records:
        raise SystemExit("holderpo study: no finished run to report on")
    results, curves, per_run = build_results(records, {t: TASKS[t].threshold for t in records})
    invocations_path = ns.out_dir / INVOCATIONS_FILE
    invocations = (
        [json.loads(line) for line in invocations_path.read_text().splitlines()] if invocations_path.exists() else []
    )
    timings = [run_timing(spec.run_dir) for spec in specs if spec.completed()]
    study = {
        "settings": {
            "command": command,
            "recipe": str(recipe),
            "overrides": [*STUDY_BASE, f"grpo.max_num_steps={ns.steps}", *ns.overrides],
            "seeds": ns.seeds,
            "steps": ns.steps,
            "window": smoothing_window(ns.steps),
            "baseline": BASELINE_ARM,
            "confidence": 0.95,
        },
        "arms": {
            a: {"label": ARMS[a].label, "summary": ARMS[a].summary, "overrides": list(ARMS[a].overrides)}
            for a in ns.arms
        },
        "tasks": {
            t: {"summary": TASKS[t].summary, "overrides": list(TASKS[t].overrides), "threshold": TASKS[t].threshold}
            for t in ns.tasks
        },
        "results": results,
        "runs": {
            t: {a: {str(s): v for s, v in seeds.items()} for a, seeds in arms.items()} for t, arms in per_run.items()
        },
        "missing_runs": missing,
        "timing": {
            "runs": len(timings),
            "cpu_s": sum(t["cpu_s"] for t in timings),
            "run_wall_s": sum(t["wall_s"] for t in timings),
            "study_wall_s": sum(i["wall_s"] for i in invocations),
            "invocations": len(invocations),
            "jobs": jobs,
        },
    }
    return write_report(ns.out_dir, study, curves)


def validate(specs, n_configs: int) -> None:
    """Resolve and validate the recipe of the first ``n_configs`` runs (one per arm and task: seeds only change
    ``grpo.seed``), loss section included (the reference schema holds the plugin's); raises ``ConfigError``."""
    from holder_nemo.reference.train import load_config

    for spec in specs[:n_configs]:
        load_config(spec.argv[0], list(spec.argv[1:]))


def plan(specs, jobs: int, out_dir: Path) -> str:
    done = sum(spec.completed() for spec in specs)
    lines = [f"{len(specs)} runs ({done} complete) on {jobs} worker(s) into {out_dir}:"]
    lines += [f"  {spec.name}: holderpo train {shlex.join(spec.argv)}" for spec in specs]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from holder_nemo.config import ConfigError, print_problems
    from holder_nemo.config.loading import read_yaml
    from holder_nemo.reference.default_recipe import default_recipe_path
    from holder_nemo.study.runner import run_all

    ns = parse_args(argv)
    if ns.list:
        print(list_arms_and_tasks())
        return 0
    recipe = (Path(ns.recipe) if ns.recipe else default_recipe_path()).resolve()
    try:
        read_yaml(recipe)  # a missing file, a directory, not YAML: one line
        specs = run_specs(ns, recipe)
        if not ns.report_only:
            validate(specs, len(ns.tasks) * len(ns.arms))
    except ConfigError as exc:
        return print_problems("holderpo study", exc)
    jobs = ns.jobs or default_jobs(len(specs))
    command = "holderpo study " + shlex.join(argv) if argv else "holderpo study"
    if ns.dry_run:
        print(plan(specs, jobs, ns.out_dir))
        return 0
    with study_lock(ns.out_dir) as locked:
        if not locked:
            print(f"holderpo study: another holderpo study is running in {ns.out_dir}", file=sys.stderr)
            return EXIT_BAD_ARGS
        if not ns.report_only:
            problems = check_run_args(specs)
            if problems:
                print("holderpo study: use a new --out-dir; changed runs:\n  " + "\n  ".join(problems), file=sys.stderr)
                return EXIT_BAD_ARGS
            start = time.perf_counter()
            code = run_all(specs, jobs, ns.out_dir)
            with (ns.out_dir / INVOCATIONS_FILE).open("a") as fh:
                fh.write(json.dumps({"wall_s": time.perf_counter() - start, "jobs": jobs, "exit": code}) + "\n")
            if code != 0:
                return code
        paths = build_report(ns, specs, recipe, command, jobs)
    print(paths[1].read_text())
    print("holderpo study: wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
