"""HölderPO GRPO training with NeMo RL: ``python -m holder_nemo.nemo_rl.run_grpo --config RECIPE.yaml [overrides]``.

Same flow as NeMo RL v0.7.0's ``examples/run_grpo.py`` (a config loader with ``defaults:`` inheritance and Hydra
overrides, ``MasterConfig``, ``init_ray``, tokenizer, generation config, ``setup_response_data``, ``setup``,
``grpo_train``), in three steps that read top to bottom:

1. ``prepare`` (before Ray): the recipe through the project's loader (``holder_nemo.config``, which resolves every
   recipe exactly as NeMo RL's ``load_config`` + ``parse_hydra_overrides`` do, and refuses duplicate keys), every
   rule of ``holderpo recipe check`` (one rule set, ``preflight.py``, strict: the data must be here), NeMo RL's
   ``MasterConfig``, the loss ``grpo_train`` will get (``HolderPOLossFn(master_config.loss_fn)``; the
   ``ClippedPGLossFn`` that ``setup`` builds is discarded), the environments the recipe names by dotted path
   (``env.<name>._component_``, ``components.py``), the resume guard. A bad recipe is a ``ConfigError``: its
   problems are printed one per line, exit 2. Anything else is a bug and ends in a traceback (exit 1);
2. ``setup``: Ray, tokenizer, data, NeMo RL's ``grpo.setup``, and the step hook (every ``policy.train`` call carries
   the global step: resume-exact p, ``steps.py``);
3. ``train``: ``grpo_train`` under the stop contract (``holder_nemo.run_control``: SIGUSR1/SIGTERM/
   ``$HOLDERPO_STOP_FILE`` -> checkpoint after the current step and exit 75; optional save-and-exit before the
   Slurm allocation ends), or the training loop a component supplies in its place (ALFWorld's per-step layout) on
   the same session. A stop during the final step completes the run. Every completed step, validation and
   checkpoint goes to the progress record (``progress.py``).

A restarted driver first repairs what a killed one left in the checkpoint directory (``run_control``).

Exit codes: 0 run complete (``COMPLETED`` written in ``checkpointing.checkpoint_dir``), 75 checkpointed on request
(requeue to resume), 2 bad config or arguments, 3 no usable NeMo RL, 1 anything else (a traceback).
Supported NeMo RL: 0.7.x (synchronous GRPO, ``data_plane`` off). Set ``HOLDERPO_ALLOW_ANY_NEMO_RL=1`` to try others.
"""

from __future__ import annotations

import argparse
import pprint
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holder_nemo.config.errors import ConfigError, make_run_dir, print_problems, problems_from_pydantic
from holder_nemo.run_control import EXIT_COMPLETED, exit_code_after_training, final_step

EXIT_NO_NEMO_RL = 3
PROG = "holder_nemo.nemo_rl.run_grpo"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m holder_nemo.nemo_rl.run_grpo",
        description="HölderPO GRPO training on NeMo RL (overrides: key=value, +new.key=value, ++key=value, ~key)",
        epilog="Exit codes: 0 complete, 75 checkpointed on request (rerun to resume), 2 bad config, 3 no NeMo RL.",
    )
    parser.add_argument("--config", required=True, help="recipe YAML (NeMo RL format, `defaults:` inheritance)")
    parser.add_argument(
        "--accept-config-change",
        action="store_true",
        help="resume although the recipe differs from the one the run was started with (the change is recorded)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="load and validate the config with NeMo RL (MasterConfig + the HölderPO loss), print it, exit; no Ray",
    )
    return parser.parse_known_args(argv)


# ------------------------------------------------------------------------------------------- 1. prepare (no Ray)


@dataclass
class Prepared:
    """What ``prepare`` established before Ray starts."""

    config: Any  # NeMo RL MasterConfig
    loss_fn: Any  # HolderPOLossFn, the object grpo_train gets
    registered: list[str]
    training: Any  # components.Training replacing grpo_train, or None
    datasets: tuple | None  # the training's (train, validation, task_to_env, val_task_to_env), listed before Ray


def prepare(config_path: str, overrides: Sequence[str], *, dry_run: bool, accept_change: bool) -> Prepared:
    """Every check that can run before Ray, the model or vLLM start; raises ``ConfigError`` naming the keys.

    Order: the loader and overrides -> ``holderpo recipe check``'s rules (NeMo RL's keys, features this entry point
    refuses, layout, batch arithmetic, NeMo RL's start-up assertions, the components' own rules, the data and model
    paths: strict unless ``dry_run``) -> NeMo RL's
    ``MasterConfig`` -> the loss built from ``MasterConfig.loss_fn`` (the object ``grpo_train`` will get, with NeMo
    RL's defaults filled in) -> the components' registration -> the resume guard (this recipe must be the one the
    run's checkpoints were made with) -> the completion marker.
    """
    from holder_nemo.config import load_recipe, to_plain
    from holder_nemo.nemo_rl import components as comp
    from holder_nemo.nemo_rl.loss import HolderPOLossFn
    from holder_nemo.nemo_rl.master_config import typed_dict_for_old_python
    from holder_nemo.nemo_rl.preflight import check_nemo_rl_recipe
    from holder_nemo.run_control import COMPLETED_FILE, guard_resume, repair_checkpoint_dir

    typed_dict_for_old_python()
    from nemo_rl.algorithms.grpo import MasterConfig
    from pydantic import ValidationError

    raw = to_plain(load_recipe(config_path, overrides))
    report, _layout = check_nemo_rl_recipe(raw, strict=not dry_run)
    for finding in report.warnings:
        print(f"holder_nemo: WARNING {finding.key}: {finding.message}", flush=True)
    report.raise_errors()
    try:
        config = MasterConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(problems_from_pydantic(exc)) from None
    loss_fn = HolderPOLossFn(config.loss_fn)
    found = comp.components(config)
    registered = [done for name, component in found.items() for done in component.register(name, config)]
    problems = comp.registration_problems(config.data, config.env)
    if problems:
        raise ConfigError(problems)
    training = comp.component_training(found, config)
    comp.strip_component_keys(config.env)  # NeMo RL hands each env section to its actor
    datasets = training.datasets(config) if training is not None and not dry_run else None
    checkpoint_dir = config.checkpointing.get("checkpoint_dir")
    if checkpoint_dir and not dry_run:
        make_run_dir("checkpointing.checkpoint_dir", checkpoint_dir)
    if checkpoint_dir:
        changes = guard_resume(raw, Path(checkpoint_dir), accept=accept_change, write=not dry_run)
        marker = Path(checkpoint_dir) / COMPLETED_FILE
        if changes and marker.exists() and not dry_run:
            marker.unlink()  # an accepted change (e.g. more steps) reopens a finished run
        if not dry_run:
            repair_checkpoint_dir(Path(checkpoint_dir), config.checkpointing)
    return Prepared(config, loss_fn, registered, training, datasets)


# ------------------------------------------------------------------------------------------------- 2. setup


@dataclass
class Session:
    """The objects NeMo RL's ``grpo.setup`` returns, with the data and the HölderPO loss: what a training loop gets."""

    policy: Any
    policy_generation: Any
    tokenizer: Any
    loss_fn: Any
    dataset: Any
    val_dataset: Any
    dataloader: Any
    val_dataloader: Any
    task_to_env: dict
    val_task_to_env: dict
    logger: Any
    checkpointer: Any
    grpo_state: dict
    master_config: Any
    steps: Any  # steps.StepScheduledTrain: the step hook on policy.train (completed_steps)
    progress: Any  # progress.ProgressRecorder


def setup(prepared: Prepared, progress: Any) -> Session:
    """Ray, tokenizer, generation config, data (the component's, or ``setup_response_data``), ``grpo.setup``, the
    step hook and the progress record's hooks, in NeMo RL's ``examples/run_grpo.py`` order."""
    from nemo_rl.algorithms import grpo
    from nemo_rl.algorithms.utils import get_tokenizer
    from nemo_rl.data.utils import setup_response_data
    from nemo_rl.distributed.virtual_cluster import init_ray
    from nemo_rl.models.generation import configure_generation_config
    from nemo_rl.utils.logger import get_next_experiment_dir

    from holder_nemo.nemo_rl.progress import recording_checkpoints
    from holder_nemo.nemo_rl.steps import install_step_schedule

    config, loss_fn = prepared.config, prepared.loss_fn
    config.logger["log_dir"] = get_next_experiment_dir(config.logger["log_dir"])
    init_ray()
    tokenizer = get_tokenizer(config.policy["tokenizer"])
    megatron_cfg = config.policy.get("megatron_cfg") or {}
    config.policy["generation"] = configure_generation_config(
        config.policy["generation"],
        tokenizer,
        has_refit_draft_weights=bool(config.policy["draft"]["enabled"]),
        trains_mtp=bool(megatron_cfg.get("mtp_num_layers")),
    )
    data = prepared.datasets or setup_response_data(tokenizer, config.data, config.env)
    dataset, val_dataset, task_to_env, val_task_to_env = data
    # Every value grpo.setup returns, named as in NeMo RL's examples/run_grpo.py; the loss it built (ClippedPGLossFn)
    # is replaced by ours, and this entry point runs no NeMo Gym, distillation teachers or async GRPO.
    (
        policy,
        policy_generation,
        _nemo_gym,
        _clusters,
        dataloader,
        val_dataloader,
        _clipped_pg_loss_fn,
        logger,
        checkpointer,
        grpo_state,
        master_config,
        _teacher_worker_groups,
        _alias_to_group_alias,
    ) = grpo.setup(config, tokenizer, dataset, val_dataset)
    schedule = install_step_schedule(
        policy, loss_fn, grpo_state, logger, on_step_done=lambda step: progress.completed("step", step)
    )
    recording_checkpoints(checkpointer, progress)
    print(
        f"holder_nemo: HölderPO loss, {loss_fn.schedule}, resuming after step {schedule.completed_steps} "
        f"(next p = {loss_fn.p:.6g})",
        flush=True,
    )
    return Session(policy, policy_generation, tokenizer, loss_fn, dataset, val_dataset, dataloader, val_dataloader,
                   task_to_env, val_task_to_env, logger, checkpointer, grpo_state, master_config, schedule,
                   progress)  # fmt: skip


# ------------------------------------------------------------------------------------------------- 3. train


def train(session: Session, training: Any, stop: Any) -> None:
    """``grpo_train`` with the stop-aware timeout checker, or the component's loop on the same session."""
    session.progress.training_started()
    if training is not None:
        training.train(session, stop)
        return
    from nemo_rl.algorithms import grpo

    from holder_nemo.nemo_rl.progress import recording_validations
    from holder_nemo.run_control import patched_timeout_checker

    with patched_timeout_checker(grpo, stop), recording_validations(grpo, session.progress):
        grpo.grpo_train(
            session.policy,
            session.policy_generation,
            session.dataloader,
            session.val_dataloader,
            session.tokenizer,
            session.loss_fn,
            session.task_to_env,
            session.val_task_to_env,
            session.logger,
            session.checkpointer,
            session.grpo_state,
            session.master_config,
        )


def main(argv: Sequence[str] | None = None) -> int:
    from holder_nemo.nemo_rl.master_config import NemoRLUnavailable, check_nemo_rl

    args, overrides = parse_args(argv)
    try:
        version = check_nemo_rl()
    except NemoRLUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_NO_NEMO_RL
    print(f"holder_nemo: NeMo RL {version}")

    from holder_nemo.nemo_rl.progress import ProgressRecorder
    from holder_nemo.run_control import StopRequest, run_complete, slurm_deadline

    stop = StopRequest.from_env()
    stop.install_signal_handlers()
    try:
        prepared = prepare(args.config, overrides, dry_run=args.dry_run, accept_change=args.accept_config_change)
        stop.deadline = slurm_deadline()
    except ConfigError as exc:  # the recipe, an override or a setting; a bug in our code or NeMo RL's tracebacks
        print(f"{PROG}: bad config {args.config}:", file=sys.stderr)
        return print_problems(PROG, exc)
    config, loss_fn = prepared.config, prepared.loss_fn
    print("Final config:")
    pprint.pprint(config)
    print(f"holder_nemo: registered with NeMo RL: {', '.join(prepared.registered) or 'nothing'}")
    if args.dry_run:
        print(f"holder_nemo: config OK (dry run); HölderPO {loss_fn.schedule}, clip_mode {loss_fn.clip.mode}")
        return EXIT_COMPLETED
    progress = ProgressRecorder.from_env()
    progress.start()
    if run_complete(config.checkpointing, config.grpo["max_num_steps"]):
        print(f"holder_nemo: run already complete ({config.checkpointing['checkpoint_dir']}); nothing to do")
        return EXIT_COMPLETED
    if not config.checkpointing["enabled"]:
        print("holder_nemo: WARNING checkpointing.enabled is false: a stop request cannot save the run", flush=True)
    session = setup(prepared, progress)
    stop.install_signal_handlers()  # Ray and friends may have replaced them during setup
    train(session, prepared.training, stop)
    last = final_step(session.master_config, session.dataloader, own_loop=prepared.training is not None)
    finished = session.steps.completed_steps >= last
    return exit_code_after_training(stop.fired, session.master_config.checkpointing, finished=finished)


if __name__ == "__main__":
    sys.exit(main())
