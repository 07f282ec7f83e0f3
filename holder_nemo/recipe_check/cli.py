"""``holderpo recipe check RECIPE.yaml [overrides...]``: resolve a recipe offline, validate it, print a summary.

Exit status: 0 when the recipe passes (warnings allowed); 2 when it does not: a rule fails, the recipe does not load,
or the arguments are wrong (the exit codes of every ``holderpo`` command, ``holder_nemo/config/errors.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from holder_nemo.config.errors import EXIT_BAD_INPUT, ConfigError, Report, print_problems
from holder_nemo.nemo_rl.parallel_layout import ParallelLayout
from holder_nemo.nemo_rl.preflight import (
    check_checkpointing,
    check_nemo_rl_recipe,
    check_schedule_length,
)
from holder_nemo.recipe_check.sizing_report import add_arguments as add_sizing_arguments
from holder_nemo.reference.schema import is_reference_recipe, missing_paths, validate_reference_config

PROG = "holderpo recipe check"


def check(
    cfg: Mapping[str, Any], kind: str = "auto", *, strict: bool = False
) -> tuple[Report, ParallelLayout | None, str, dict[str, Any]]:
    """Validate a resolved recipe (plain dict).

    Returns the report, the parallel layout (NeMo RL recipes), the kind, and the effective config (a reference
    recipe with its schema's defaults filled in: what the run will use).
    """
    if kind == "auto":
        kind = "reference" if is_reference_recipe(cfg) else "nemo_rl"
    if kind == "nemo_rl":
        report, layout = check_nemo_rl_recipe(cfg, strict=strict)
        return report, layout, kind, dict(cfg)
    # The reference run's own schema (its loss_fn is the plugin's), then the shared schedule and checkpoint rules and
    # the local paths it names.
    report = Report()
    try:
        config = validate_reference_config(cfg)
    except ConfigError as exc:
        report.add(exc.problems)
        return report, None, kind, dict(cfg)
    effective = {**config.model_dump(), "loss_fn": cfg.get("loss_fn")}
    check_schedule_length(effective, report)
    check_checkpointing(effective, report)
    report.add(missing_paths(config), "error" if strict else "warning")
    return report, None, kind, effective


def _nemo_rl_validation(args: argparse.Namespace, kind: str, report: Report) -> str:
    """Run NeMo RL's own loader + MasterConfig on a NeMo RL recipe; errors are added to ``report``."""
    from holder_nemo.nemo_rl.master_config import nemo_rl_available, validate_with_nemo_rl

    if kind != "nemo_rl" or args.nemo_rl == "off":
        return ""
    if not nemo_rl_available():
        if args.nemo_rl == "on":
            report.error("--nemo-rl", "on, but the nemo_rl package is not importable")
        return "NeMo RL MasterConfig validation: skipped (nemo_rl is not importable here)"
    _, errors = validate_with_nemo_rl(args.recipe, args.overrides)
    report.add((key, f"NeMo RL MasterConfig: {message}") for key, message in errors)
    return "NeMo RL MasterConfig validation: " + ("passed" if not errors else f"{len(errors)} error(s)")


def _sizing(args: argparse.Namespace, cfg: Mapping[str, Any], layout: ParallelLayout | None, report: Report) -> str:
    """The sizing block; what cannot fit is a warning (an error with ``--strict``)."""
    from holder_nemo.recipe_check.sizing_report import size_recipe

    if not report.ok:
        return "sizing: skipped (the recipe has errors)"
    sizing = size_recipe(cfg, layout, args, args.recipe)
    for key, message in sizing.warnings:
        (report.error if args.strict else report.warn)(key, f"sizing: {message}")
    return sizing.text()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="holderpo recipe",
        description="Resolve and validate a recipe offline.",
        epilog="Exit codes: 0 passes (warnings allowed), 2 fails (a rule, the recipe, or the arguments).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    chk = sub.add_parser("check", help="resolve inheritance + overrides, validate, print the config and a summary")
    chk.add_argument("recipe", help="path to a recipe YAML (recipes/*.yaml)")
    chk.add_argument("overrides", nargs="*", help="Hydra-style overrides: a.b=v, +a.b=v, ++a.b=v, ~a.b")
    chk.add_argument("--kind", choices=("auto", "nemo_rl", "reference"), default="auto", help="recipe kind")
    chk.add_argument("--no-config", action="store_true", help="do not print the resolved config")
    chk.add_argument(
        "--strict",
        action="store_true",
        help="what depends on this machine or the job's size is an error, not a warning: a local data file or model "
        "directory the recipe names that does not exist here, a layout or save that cannot fit (sizing)",
    )
    chk.add_argument(
        "--nemo-rl",
        choices=("auto", "on", "off"),
        default="auto",
        help="also build NeMo RL's own GRPO MasterConfig (auto: when nemo_rl is importable, e.g. in the container)",
    )
    add_sizing_arguments(chk)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]  # overrides may also follow the options
    from omegaconf import OmegaConf

    from holder_nemo.config import load_recipe, to_plain
    from holder_nemo.recipe_check.summary import summarize

    try:
        cfg_node = load_recipe(args.recipe, args.overrides)
    except ConfigError as exc:
        return print_problems(PROG, exc)
    cfg = to_plain(cfg_node)
    report, layout, kind, effective = check(cfg, args.kind, strict=args.strict)
    nemo_rl_note = _nemo_rl_validation(args, kind, report)

    if not args.no_config:
        print(f"# resolved recipe: {args.recipe}" + (f" with {' '.join(args.overrides)}" if args.overrides else ""))
        print(OmegaConf.to_yaml(cfg_node))
    print(f"summary ({kind} recipe {args.recipe}):")
    print(summarize(effective, layout))
    print(_sizing(args, effective, layout, report))
    if nemo_rl_note:
        print(nemo_rl_note)
    for finding in report.findings:
        print(finding, file=sys.stderr)
    if report.ok:
        print(f"OK: {args.recipe} passes all checks ({len(report.warnings)} warning(s))")
        return 0
    print(f"FAILED: {args.recipe}: {len(report.errors)} error(s)", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
