"""HölderPO GRPO training with NeMo RL: ``python -m holder_nemo.nemo_rl.run_grpo --config RECIPE.yaml [overrides]``.

Same flow as NeMo RL v0.7.0's ``examples/run_grpo.py`` (NeMo RL's own config loader with ``defaults:`` inheritance
and Hydra overrides, ``MasterConfig``, ``init_ray``, tokenizer, generation config, ``setup_response_data``,
``setup``, ``grpo_train``), in three steps that read top to bottom:

1. ``prepare`` (before Ray): the recipe through NeMo RL's loader, every rule of ``holderpo recipe check``, NeMo RL's
   ``MasterConfig``, the loss ``grpo_train`` will get (``HolderPOLossFn(master_config.loss_fn)``; the
   ``ClippedPGLossFn`` that ``setup`` builds is discarded), the environments the recipe names by dotted path
   (``env.<name>._component_``, ``components.py``), the resume guard;
2. ``setup``: Ray, tokenizer, data, NeMo RL's ``grpo.setup``, and the step hook (every ``policy.train`` call carries
   the global step: resume-exact p, ``steps.py``);
3. ``train``: ``grpo_train`` under the stop contract (``stop.py``: SIGUSR1/SIGTERM/``$HOLDERPO_STOP_FILE`` ->
   checkpoint after the current step and exit 75; optional save-and-exit before the Slurm allocation ends), or the
   training loop a component supplies in its place (ALFWorld's per-step layout) on the same session. A stop that
   comes during the final step does not stop the run: it completes (exit 0).

Restarts: the run resumes from the newest complete ``step_N`` (NeMo RL's rule). Before that, the entry point removes
what a killed save or checkpoint retention left (``resume.tidy_checkpoint_dir``), completes NeMo RL's retention, and
writes ``COMPLETED`` at once when ``step_N`` is already the final step (a driver killed before writing it).
Progress: with ``$HOLDERPO_PROGRESS_FILE`` set, every completed step, validation and checkpoint is recorded there for
the batch shell's progress watchdog (``progress.py``).

Exit codes: 0 run complete (``COMPLETED`` written in ``checkpointing.checkpoint_dir``), 75 checkpointed on request
(requeue to resume), 2 bad config or arguments, 3 no usable NeMo RL, 1 anything else.
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

EXIT_COMPLETED, EXIT_FAILED, EXIT_BAD_CONFIG, EXIT_NO_NEMO_RL, EXIT_STOPPED = 0, 1, 2, 3, 75


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


def unsupported_features(config: dict[str, Any]) -> list[str]:
    """Config switches this entry point refuses (each names its key)."""
    problems = []
    if ((config.get("grpo") or {}).get("async_grpo") or {}).get("enabled"):
        problems.append("grpo.async_grpo.enabled: async GRPO is not supported by the HölderPO entry point")
    if (config.get("data_plane") or {}).get("enabled"):
        problems.append("data_plane.enabled: the TransferQueue trainer is not supported by the HölderPO entry point")
    return problems


def final_step(config: Any, dataloader_len: int | None, own_loop: bool) -> int:
    """The global step at which the training loop ends by itself.

    ``grpo.max_num_steps``; for ``grpo_train`` with one dataloader and no dynamic sampling, the end of the last of
    ``grpo.max_num_epochs`` epochs when that comes first (NeMo RL's ``is_last_step``: each epoch is one step per
    batch then). A component's own loop (``own_loop``) runs ``grpo.max_num_steps`` steps.
    """
    grpo, data = config.grpo, config.data
    last = int(grpo["max_num_steps"])
    if own_loop or dataloader_len is None or data.get("use_multiple_dataloader") or grpo.get("use_dynamic_sampling"):
        return last
    return min(last, int(grpo["max_num_epochs"]) * dataloader_len)


def exit_code_after_training(stop_reason: str | None, checkpointing: dict[str, Any], *, finished: bool = False) -> int:
    """0 (complete, ``COMPLETED`` written), 75 (stopped with a checkpoint) or 1 (stopped without one).

    ``finished``: the loop trained its final step. A stop requested during it changes nothing that step does (NeMo
    RL saves the final step anyway), so the run is complete, not stopped: exit 75 would pay one more attempt, with
    its whole set-up, only to write ``COMPLETED``.
    """
    enabled = bool(checkpointing.get("enabled"))
    if stop_reason is not None and finished:
        print(f"holder_nemo: stop requested ({stop_reason}) during the final step: the run is complete", flush=True)
    elif stop_reason is not None:
        if not enabled:
            print(f"holder_nemo: stopped ({stop_reason}) but checkpointing.enabled is false: nothing saved", flush=True)
            return EXIT_FAILED
        print(f"holder_nemo: checkpointed and stopped ({stop_reason}); exit {EXIT_STOPPED}", flush=True)
        return EXIT_STOPPED
    if enabled and checkpointing.get("checkpoint_dir"):
        from holder_nemo.nemo_rl.resume import write_completed_marker

        write_completed_marker(Path(checkpointing["checkpoint_dir"]))
    return EXIT_COMPLETED


# ------------------------------------------------------------------------------------------- 1. prepare (no Ray)


@dataclass
class Prepared:
    """What ``prepare`` established before Ray starts."""

    config: Any  # NeMo RL MasterConfig
    loss_fn: Any  # HolderPOLossFn, the object grpo_train gets
    registered: list[str]
    training: Any  # components.Training replacing grpo_train, or None
    datasets: tuple | None  # the training's (train, validation, task_to_env, val_task_to_env), listed before Ray


def _checked_master_config(config_path: str, overrides: Sequence[str]) -> tuple[dict[str, Any], Any]:
    """(raw recipe, ``MasterConfig``) after every rule that can run on the recipe alone; ValueError otherwise."""
    from holder_nemo.nemo_rl.master_config import load_master_config, typed_dict_for_old_python
    from holder_nemo.nemo_rl.recipe_checks import check_nemo_rl_recipe

    typed_dict_for_old_python()
    from nemo_rl.algorithms.grpo import MasterConfig

    raw = load_master_config(config_path, overrides)
    problems = unsupported_features(raw)
    report, _layout = check_nemo_rl_recipe(raw)
    problems += [f"{f.key}: {f.message}" for f in report.errors]
    for finding in report.warnings:
        print(f"holder_nemo: WARNING {finding.key}: {finding.message}", flush=True)
    if problems:
        raise ValueError("\n  ".join(["the recipe would fail in NeMo RL:", *problems]))
    return raw, MasterConfig(**raw)


def prepare(config_path: str, overrides: Sequence[str], *, dry_run: bool, accept_change: bool) -> Prepared:
    """Every check that can run before Ray, the model or vLLM start; raises ``ValueError`` naming the key.

    Order: NeMo RL's loader and overrides -> features this entry point refuses -> ``holderpo recipe check``'s rules
    (layout, batch arithmetic, NeMo RL's start-up conditions, the components' own rules) -> NeMo RL's
    ``MasterConfig`` -> the loss built from ``MasterConfig.loss_fn`` (the object ``grpo_train`` will get, with NeMo
    RL's defaults filled in) -> the components' registration -> the resume guard (this recipe must be the one the
    run's checkpoints were made with) -> the completion marker.
    """
    from holder_nemo.nemo_rl import components as comp
    from holder_nemo.nemo_rl.loss import HolderPOLossFn
    from holder_nemo.nemo_rl.resume import COMPLETED_FILE, guard_resume, tidy_checkpoint_dir

    raw, config = _checked_master_config(config_path, overrides)
    loss_fn = HolderPOLossFn(config.loss_fn)
    found = comp.components(config)
    registered = [done for name, component in found.items() for done in component.register(name, config)]
    problems = comp.registration_problems(config.data, config.env)
    if problems:
        raise ValueError("\n  ".join(["unresolvable data / env names:", *problems]))
    training = comp.component_training(found, config)
    comp.strip_component_keys(config.env)  # NeMo RL hands each env section to its actor
    datasets = training.datasets(config) if training is not None and not dry_run else None
    checkpoint_dir = config.checkpointing.get("checkpoint_dir")
    if checkpoint_dir:
        changes = guard_resume(raw, Path(checkpoint_dir), accept=accept_change, write=not dry_run)
        marker = Path(checkpoint_dir) / COMPLETED_FILE
        if changes and marker.exists() and not dry_run:
            marker.unlink()  # an accepted change (e.g. more steps) reopens a finished run
        if not dry_run:
            for path in tidy_checkpoint_dir(Path(checkpoint_dir)):
                print(f"holder_nemo: removed {path} (left by a save or a checkpoint deletion that was cut short)")
            _finish_checkpoint_retention(config.checkpointing)
    return Prepared(config, loss_fn, registered, training, datasets)


def _finish_checkpoint_retention(checkpointing: dict[str, Any]) -> None:
    """NeMo RL's own retention (``keep_top_k``), as ``finalize_checkpoint`` runs it after every rename: a driver
    killed between a rename and the end of that pass left checkpoints an uninterrupted run would have deleted, and
    nothing deletes them when no save follows (the final step)."""
    if not checkpointing.get("enabled") or checkpointing.get("keep_top_k") is None:
        return
    from nemo_rl.utils.checkpoint import CheckpointManager

    CheckpointManager(checkpointing).remove_old_checkpoints()


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
    # grpo.setup returns (policy, generation, gym, clusters, dataloader, val_dataloader, ClippedPGLossFn, logger,
    # checkpointer, save state, master config, teachers, aliases); the loss it built is replaced by ours.
    setup_out = grpo.setup(config, tokenizer, dataset, val_dataset)
    policy, generation, dataloader, val_dataloader = setup_out[0], setup_out[1], setup_out[4], setup_out[5]
    logger, checkpointer, state, master_config = setup_out[7:11]
    schedule = install_step_schedule(
        policy, loss_fn, state, logger, on_step_done=lambda step: progress.completed("step", step)
    )
    recording_checkpoints(checkpointer, progress)
    print(
        f"holder_nemo: HölderPO loss, {loss_fn.schedule}, resuming after step {schedule.completed_steps} "
        f"(next p = {loss_fn.p:.6g})",
        flush=True,
    )
    return Session(policy, generation, tokenizer, loss_fn, dataset, val_dataset, dataloader, val_dataloader,
                   task_to_env, val_task_to_env, logger, checkpointer, state, master_config, schedule,
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
    from holder_nemo.nemo_rl.stop import patched_timeout_checker

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
        print(f"holder_nemo.nemo_rl.run_grpo: {exc}", file=sys.stderr)
        return EXIT_NO_NEMO_RL
    print(f"holder_nemo: NeMo RL {version}")

    from holder_nemo.nemo_rl.progress import ProgressRecorder
    from holder_nemo.nemo_rl.resume import COMPLETED_FILE, latest_complete_step, write_completed_marker
    from holder_nemo.nemo_rl.stop import StopRequest, slurm_deadline

    stop = StopRequest.from_env()
    stop.install_signal_handlers()
    try:
        prepared = prepare(args.config, overrides, dry_run=args.dry_run, accept_change=args.accept_config_change)
        stop.deadline = slurm_deadline()
    except Exception as exc:  # config errors from OmegaConf, Hydra, pydantic or ours, each naming its key
        print(f"holder_nemo.nemo_rl.run_grpo: bad config {args.config}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    config, loss_fn = prepared.config, prepared.loss_fn
    print("Final config:")
    pprint.pprint(config)
    print(f"holder_nemo: registered with NeMo RL: {', '.join(prepared.registered) or 'nothing'}")
    if args.dry_run:
        print(f"holder_nemo: config OK (dry run); HölderPO {loss_fn.schedule}, clip_mode {loss_fn.clip.mode}")
        return EXIT_COMPLETED
    progress = ProgressRecorder.from_env()
    progress.start()
    checkpoint_dir = config.checkpointing.get("checkpoint_dir")
    newest = latest_complete_step(Path(checkpoint_dir)) if checkpoint_dir else None
    marker_missing = checkpoint_dir and not (Path(checkpoint_dir) / COMPLETED_FILE).exists()
    final = newest is not None and newest >= config.grpo["max_num_steps"]
    if marker_missing and config.checkpointing["enabled"] and final:
        print(f"holder_nemo: step_{newest} is the final step (grpo.max_num_steps): the run is complete", flush=True)
        write_completed_marker(Path(checkpoint_dir))  # the driver that saved it stopped before this
    if checkpoint_dir and (Path(checkpoint_dir) / COMPLETED_FILE).exists():
        print(f"holder_nemo: run already complete ({Path(checkpoint_dir) / COMPLETED_FILE} exists); nothing to do")
        return EXIT_COMPLETED
    if not config.checkpointing["enabled"]:
        print("holder_nemo: WARNING checkpointing.enabled is false: a stop request cannot save the run", flush=True)
    session = setup(prepared, progress)
    stop.install_signal_handlers()  # Ray and friends may have replaced them during setup
    train(session, prepared.training, stop)
    own_loop = prepared.training is not None
    last = final_step(session.master_config, _length(session.dataloader), own_loop)
    finished = session.steps.completed_steps >= last
    return exit_code_after_training(stop.fired, session.master_config.checkpointing, finished=finished)


def _length(dataloader: Any) -> int | None:
    try:
        return len(dataloader)
    except TypeError:
        return None


if __name__ == "__main__":
    sys.exit(main())
