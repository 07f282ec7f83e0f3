"""``holderpo train [RECIPE.yaml] [key=value ...]``: the reference GRPO run with annealed-p HölderPO, one process.

    holderpo train                                     # recipes/smoke_cpu.yaml: tiny Qwen2 learns a digit task
    holderpo train recipes/smoke_cpu.yaml grpo.max_num_steps=6 checkpointing.checkpoint_dir=/tmp/run

Each step: sample prompts -> G responses each (temperature sampling, <eos>, max length) -> verifiable rewards ->
group-normalised advantages -> recompute old log-probs -> several mini-batch updates with the NeMo RL plugin's
``HolderPOLossFn`` (p from the schedule at the global step), fed a batch in NeMo RL's data layout.

Run directory (RUN_DIR = ``checkpointing.checkpoint_dir``): ``metrics.jsonl`` (one JSON object per step),
``step_N/`` checkpoints, ``tb/`` (TensorBoard, when installed), ``training.png``, and ``COMPLETED`` once done.

Exit codes (the stop contract shared with the NeMo RL entry point): 0 = complete (final checkpoint written);
75 = stopped on request (SIGUSR1, SIGTERM, Ctrl-C, or the file named by $HOLDERPO_STOP_FILE): the current step
finished, a checkpoint was written, rerun the same command to resume; 2 = bad recipe or arguments (one line per
problem, before any work: the recipe, its local paths, the run directory); 130 = a second Ctrl-C (no checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from holder_nemo.config import ConfigError, load_recipe, print_problems
from holder_nemo.config.errors import make_run_dir
from holder_nemo.reference import checkpoint as ckpt
from holder_nemo.reference.schema import (
    ReferenceConfig,
    default_recipe_path,
    is_reference_recipe,
    missing_paths,
    validate_reference_config,
)
from holder_nemo.reference.trainer import ReferenceRecipe
from holder_nemo.run_control import (
    ACCEPT_FLAG,
    CHANGE_LOG,
    COMPLETED_FILE,
    EXIT_COMPLETED,
    EXIT_STOPPED,
    check_resume_config,
    record_accepted_changes,
)

# Keys a resumed run may change freely (they do not change what is trained): logging, checkpoint cadence/retention.
OPERATIONAL_KEYS = ("logger", "checkpointing.save_period", "checkpointing.keep_last_k")
__all__ = ["EXIT_COMPLETED", "EXIT_STOPPED", "ReferenceRecipe"]
PROG = "holderpo train"
EXIT_INTERRUPTED = 130  # a second Ctrl-C: stopped at once, without a checkpoint (the shell's code for SIGINT)


def split_recipe(args: list[str]) -> tuple[Path, list[str]]:
    """(recipe, overrides) of ``[RECIPE] [overrides...]``: a first argument that is no override (no ``=``, no leading
    ``+``/``~``) is the recipe, whatever its suffix (the loader says what is wrong with it); else the default."""
    if args and "=" not in args[0] and not args[0].startswith(("+", "~")):
        return Path(args[0]), list(args[1:])
    return default_recipe_path(), list(args)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="holderpo train",
        description="Reference GRPO run with annealed-p HölderPO (one process, CPU or one GPU).",
        epilog="Exit codes: 0 complete, 75 checkpointed on request (rerun to resume), 2 bad recipe/arguments.",
    )
    parser.add_argument("args", nargs="*", help="[RECIPE.yaml] then Hydra-style overrides, e.g. grpo.max_num_steps=6")
    parser.add_argument(
        ACCEPT_FLAG,
        action="store_true",
        help="resume although the recipe differs from the one the run's checkpoints were made with (recorded in "
        f"RUN_DIR/{CHANGE_LOG})",
    )
    ns = parser.parse_args(argv)
    ns.recipe, ns.overrides = split_recipe(ns.args)
    return ns


def load_config(recipe: str | Path, overrides: list[str], *, paths: bool = True) -> tuple[ReferenceConfig, str]:
    """Recipe -> (validated config, resolved YAML text); raises ConfigError naming the keys (a NeMo RL recipe, a
    key of the schema, and with ``paths`` a local model directory or data file that does not exist here)."""
    from omegaconf import OmegaConf

    raw = load_recipe(recipe, overrides)
    if not is_reference_recipe(raw):
        raise ConfigError(
            str(recipe),
            "is a NeMo RL recipe (it has cluster / policy.megatron_cfg / policy.dtensor_cfg), not a reference-run one: "
            f"run it with `python -m holder_nemo.nemo_rl.run_grpo --config {recipe}` in the NeMo RL container or "
            "`sbatch slurm/holderpo_7b.sh` (docs/slurm.md); `holderpo recipe check` validates it here",
        )
    config = validate_reference_config(raw)
    missing = missing_paths(config) if paths else []
    if missing:
        raise ConfigError(missing)
    return config, OmegaConf.to_yaml(raw)


def _resolved(yaml_text: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from holder_nemo.config.loading import register_resolvers

    register_resolvers()
    return OmegaConf.to_container(OmegaConf.create(yaml_text), resolve=True)  # type: ignore[return-value]


def check_resume(run_dir: Path, resolved_yaml: str, *, accept: bool) -> None:
    """Refuse to resume the newest checkpoint with a recipe that differs from the one stored in it (a finished run
    included), unless ``accept``; an accepted change is recorded and reopens a finished run."""
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        return
    stored = _resolved((latest / ckpt.CONFIG_FILE).read_text())
    changes = check_resume_config(
        stored, _resolved(resolved_yaml), operational=OPERATIONAL_KEYS, accept=accept, where=str(latest)
    )
    if changes:
        for change in changes:
            print(f"holderpo train: accepted config change {change}", file=sys.stderr)
        record_accepted_changes(run_dir, changes, latest.name)
        (run_dir / COMPLETED_FILE).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    ns = parse_args(argv)
    try:
        cfg, resolved_yaml = load_config(ns.recipe, ns.overrides)
        run_dir = make_run_dir("checkpointing.checkpoint_dir", cfg.checkpointing.checkpoint_dir)
        check_resume(run_dir, resolved_yaml, accept=ns.accept_config_change)
    except ConfigError as exc:
        return print_problems(PROG, exc)
    if (run_dir / COMPLETED_FILE).exists():
        print(f"{PROG}: {run_dir} is already complete ({COMPLETED_FILE} exists); nothing to do")
        return EXIT_COMPLETED
    recipe = ReferenceRecipe(cfg, resolved_yaml)
    try:
        recipe.setup()
    except ConfigError as exc:  # the model directory or the data file the recipe names is unusable
        return print_problems(PROG, exc)
    try:
        return recipe.train()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (second Ctrl-C); the newest checkpoint in {run_dir} is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
