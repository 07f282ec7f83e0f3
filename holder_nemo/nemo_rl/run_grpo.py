"""HölderPO GRPO training with NeMo RL: ``python -m holder_nemo.nemo_rl.run_grpo --config RECIPE.yaml [overrides]``.

Same flow as NeMo RL v0.7.0's ``examples/run_grpo.py`` (NeMo RL's own config loader with ``defaults:`` inheritance
and Hydra overrides, ``MasterConfig``, ``init_ray``, tokenizer, generation config, ``setup_response_data``,
``setup``, ``grpo_train``), with five differences:

1. the loss passed to ``grpo_train`` is ``HolderPOLossFn(master_config.loss_fn)`` (the ``ClippedPGLossFn`` that
   ``setup`` builds is discarded);
2. ``policy.train`` is wrapped so every call carries the global step (p schedule, resume-exact; ``steps.py``);
3. the stop contract (``stop.py``): SIGUSR1/SIGTERM/``$HOLDERPO_STOP_FILE`` -> checkpoint after the current step and
   exit 75; optional save-and-exit before the Slurm allocation ends (``$HOLDERPO_SLURM_SAVE_MARGIN_S``);
4. before the data and environments are built, ``registration.register_components`` registers the ``holder_math``
   environment (rewards graded like ``holderpo eval``) and, when the recipe's datasets use them, the ALFWorld
   environment and data processor; unresolvable ``env_name`` / ``processor`` values are config errors (exit 2);
5. ``alfworld.sample_layout: per_step`` (the paper's ALFWorld layout, one training row per environment step): the
   datasets list the game files of ``data.{train,validation}.data_path`` and
   ``holder_nemo.alfworld.nemo_rl_train.alfworld_per_step_train`` runs instead of ``grpo_train`` (same setup,
   checkpoints, step hook and stop contract).

Exit codes: 0 run complete (``COMPLETED`` written in ``checkpointing.checkpoint_dir``), 75 checkpointed on request
(requeue to resume), 2 bad config or arguments, 3 no usable NeMo RL here, 1 anything else.
Supported NeMo RL: 0.7.x (synchronous GRPO, ``data_plane`` off). Set ``HOLDERPO_ALLOW_ANY_NEMO_RL=1`` to try others.
"""

from __future__ import annotations

import argparse
import functools
import os
import pprint
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_COMPLETED, EXIT_FAILED, EXIT_BAD_CONFIG, EXIT_NO_NEMO_RL, EXIT_STOPPED = 0, 1, 2, 3, 75
SUPPORTED_NEMO_RL = ((0, 7),)
ALLOW_ANY_VERSION_ENV = "HOLDERPO_ALLOW_ANY_NEMO_RL"


class NemoRLUnavailable(RuntimeError):
    """No importable, supported nemo_rl in this Python environment."""


def nemo_rl_release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a NeMo RL version string ("0.7.0", "0.7.1rc1", "0.7.0+7ea279ab", "v0.7.2"), or None."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:[.+\-]|rc|a|b|dev|$)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_nemo_rl(env: dict[str, str] | None = None) -> str:
    """The importable NeMo RL version; raises ``NemoRLUnavailable`` with what to do when absent or unsupported.

    Every 0.7.x build is accepted (patch releases, release candidates, local ``+<commit>`` builds); anything else is
    refused with the reason and the override variable, because the loss contract and ``grpo_train``'s save / stop
    path this entry point relies on are those of 0.7.
    """
    env = dict(os.environ) if env is None else env
    try:
        import nemo_rl
    except ImportError as exc:
        raise NemoRLUnavailable(
            f"nemo_rl is not importable ({exc}). Run this inside the NeMo RL container "
            "(nvcr.io/nvidia/nemo-rl:v0.7.0: `cd /opt/nemo-rl && uv run python -m holder_nemo.nemo_rl.run_grpo ...` "
            "with holder_nemo on PYTHONPATH), or with a NeMo RL v0.7.0 checkout on PYTHONPATH; see docs/nemo_rl.md."
        ) from None
    version = str(getattr(nemo_rl, "__version__", "unknown"))
    release = nemo_rl_release(version)
    if release not in SUPPORTED_NEMO_RL and env.get(ALLOW_ANY_VERSION_ENV) != "1":
        supported = ", ".join(f"{a}.{b}.x" for a, b in SUPPORTED_NEMO_RL)
        found = "an unparseable version" if release is None else f"release {release[0]}.{release[1]}"
        raise NemoRLUnavailable(
            f"nemo_rl {version!r} ({found}) is not supported by this entry point (supported: {supported}): its "
            "loss-function contract and grpo_train's checkpoint / stop path are those of 0.7. Use the "
            f"nvcr.io/nvidia/nemo-rl:v0.7.0 image, or set {ALLOW_ANY_VERSION_ENV}=1 to try anyway (0.6.x has the "
            "same loss interface; <= 0.5 passes logits, not log-probs, to the loss)."
        )
    return version


def _typed_dict_for_old_python() -> None:
    """NeMo RL targets Python 3.13; on < 3.12 pydantic needs typing_extensions.TypedDict for its config TypedDicts."""
    if sys.version_info < (3, 12) and "nemo_rl.algorithms.grpo" not in sys.modules:
        import typing

        import typing_extensions

        typing.TypedDict = typing_extensions.TypedDict  # type: ignore[misc]


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


def load_master_config(config_path: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe resolved by NeMo RL's own loader, as a plain dict (before ``MasterConfig``)."""
    from nemo_rl.utils.config import load_config, parse_hydra_overrides, register_omegaconf_resolvers
    from omegaconf import OmegaConf

    register_omegaconf_resolvers()
    config = load_config(config_path)
    if overrides:
        config = parse_hydra_overrides(config, list(overrides))
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]


def unsupported_features(config: dict[str, Any]) -> list[str]:
    """Config switches this entry point refuses (each names its key)."""
    problems = []
    if ((config.get("grpo") or {}).get("async_grpo") or {}).get("enabled"):
        problems.append("grpo.async_grpo.enabled: async GRPO is not supported by the HölderPO entry point")
    if (config.get("data_plane") or {}).get("enabled"):
        problems.append("data_plane.enabled: the TransferQueue trainer is not supported by the HölderPO entry point")
    return problems


def exit_code_after_training(stop_reason: str | None, checkpointing: dict[str, Any]) -> int:
    """0 (complete, ``COMPLETED`` written), 75 (stopped with a checkpoint) or 1 (stopped without one)."""
    enabled = bool(checkpointing.get("enabled"))
    if stop_reason is not None:
        if not enabled:
            print(f"holder_nemo: stopped ({stop_reason}) but checkpointing.enabled is false: nothing saved", flush=True)
            return EXIT_FAILED
        print(f"holder_nemo: checkpointed and stopped ({stop_reason}); exit {EXIT_STOPPED}", flush=True)
        return EXIT_STOPPED
    if enabled and checkpointing.get("checkpoint_dir"):
        from holder_nemo.nemo_rl.resume import write_completed_marker

        write_completed_marker(Path(checkpointing["checkpoint_dir"]))
    return EXIT_COMPLETED


def alfworld_layout(config: Any) -> str:
    """``alfworld.sample_layout`` of the recipe (``per_episode``, i.e. NeMo RL's own rollout, when absent)."""
    extra = config.get("alfworld") if isinstance(config, dict) else getattr(config, "alfworld", None)
    if not extra:
        return "per_episode"
    from holder_nemo.alfworld.nemo_rl_train import sample_layout

    return sample_layout(config)  # the whole recipe: per_step checks every setting its loop reads, before Ray


def alfworld_game_datasets(config: Any) -> tuple[Any, Any]:
    """(train, validation) game-file datasets from ``data.train.data_path`` / ``data.validation.data_path`` (the
    split folders of the ALFWorld data) for ``alfworld.sample_layout: per_step``; validation is None when the recipe
    has no validation dataset."""
    from holder_nemo.alfworld.nemo_rl_train import game_file_dataset, section

    data = section(config, "data")
    task_types = section(config, "alfworld").get("task_types")
    out = []
    for split in ("train", "validation"):
        entry = data.get(split)
        if entry is None and split == "validation":
            out.append(None)
            continue
        if not isinstance(entry, dict) or not entry.get("data_path"):
            raise ValueError(f"data.{split}.data_path: alfworld.sample_layout per_step needs one ALFWorld split folder")
        out.append(game_file_dataset(entry["data_path"], task_types))
    return out[0], out[1]


@dataclass
class Prepared:
    """What ``preflight`` established before Ray starts."""

    config: Any  # NeMo RL MasterConfig
    loss_fn: Any  # HolderPOLossFn, the object grpo_train gets
    registered: list[str]
    per_step: bool
    game_datasets: tuple[Any, Any] | None


def preflight(config_path: str, overrides: Sequence[str], *, dry_run: bool, accept_change: bool) -> Prepared:
    """Every check that can run before Ray, the model or vLLM start; raises ``ValueError`` naming the key.

    Order: NeMo RL's loader and overrides -> features this entry point refuses -> ``holderpo recipe check``'s rules
    (layout, batch arithmetic, NeMo RL's ``Policy`` / checkpoint-format start-up conditions) -> NeMo RL's
    ``MasterConfig`` -> the loss built from ``MasterConfig.loss_fn`` (the object ``grpo_train`` will get, with
    NeMo RL's defaults filled in) -> environment / processor registration -> the resume guard (this recipe must be
    the one the run's checkpoints were made with) -> the completion marker.
    """
    from holder_nemo.nemo_rl.loss import HolderPOLossFn
    from holder_nemo.nemo_rl.registration import register_components, registration_problems
    from holder_nemo.nemo_rl.resume import COMPLETED_FILE, guard_resume
    from holder_nemo.recipe.checks import check_nemo_rl_recipe

    _typed_dict_for_old_python()
    from nemo_rl.algorithms.grpo import MasterConfig

    raw = load_master_config(config_path, overrides)
    problems = unsupported_features(raw)
    report, _layout = check_nemo_rl_recipe(raw)
    problems += [f"{f.key}: {f.message}" for f in report.errors]
    for finding in report.warnings:
        print(f"holder_nemo: WARNING {finding.key}: {finding.message}", flush=True)
    if problems:
        raise ValueError("\n  ".join(["the recipe would fail in NeMo RL:", *problems]))
    config = MasterConfig(**raw)
    loss_fn = HolderPOLossFn(config.loss_fn)
    # holder_math (the paper's grader) always, ALFWorld's environment / processor when the datasets use them
    registered = register_components(config.data)
    problems = registration_problems(config.data, config.env)
    if problems:
        raise ValueError("\n  ".join(["unresolvable data / env names:", *problems]))
    per_step = alfworld_layout(config) == "per_step"
    game_datasets = alfworld_game_datasets(config) if per_step and not dry_run else None
    checkpointing = config.checkpointing
    if checkpointing.get("checkpoint_dir"):
        checkpoint_dir = Path(checkpointing["checkpoint_dir"])
        changes = guard_resume(raw, checkpoint_dir, accept=accept_change, write=not dry_run)
        marker = checkpoint_dir / COMPLETED_FILE
        if changes and marker.exists() and not dry_run:
            marker.unlink()  # an accepted change (e.g. more steps) reopens a finished run
    return Prepared(config, loss_fn, registered, per_step, game_datasets)


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    try:
        version = check_nemo_rl()
    except NemoRLUnavailable as exc:
        print(f"holder_nemo.nemo_rl.run_grpo: {exc}", file=sys.stderr)
        return EXIT_NO_NEMO_RL
    print(f"holder_nemo: NeMo RL {version}")

    from holder_nemo.nemo_rl.resume import COMPLETED_FILE
    from holder_nemo.nemo_rl.stop import StopRequest, patched_timeout_checker, slurm_deadline

    stop = StopRequest.from_env()
    stop.install_signal_handlers()
    try:
        prepared = preflight(args.config, overrides, dry_run=args.dry_run, accept_change=args.accept_config_change)
        stop.deadline = slurm_deadline()
    except Exception as exc:  # config errors from OmegaConf, Hydra, pydantic or ours, each naming its key
        print(f"holder_nemo.nemo_rl.run_grpo: bad config {args.config}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    config, loss_fn, per_step = prepared.config, prepared.loss_fn, prepared.per_step
    print("Final config:")
    pprint.pprint(config)
    print(f"holder_nemo: registered with NeMo RL: {', '.join(prepared.registered)}")
    if args.dry_run:
        mode = loss_fn.config.holder.clip_mode
        print(f"holder_nemo: config OK (dry run); HölderPO {loss_fn.schedule}, clip_mode {mode}")
        return EXIT_COMPLETED
    checkpoint_dir = config.checkpointing.get("checkpoint_dir")
    if checkpoint_dir and (Path(checkpoint_dir) / COMPLETED_FILE).exists():
        print(f"holder_nemo: run already complete ({Path(checkpoint_dir) / COMPLETED_FILE} exists); nothing to do")
        return EXIT_COMPLETED
    if not config.checkpointing["enabled"]:
        print("holder_nemo: WARNING checkpointing.enabled is false: a stop request cannot save the run", flush=True)

    from nemo_rl.algorithms import grpo as grpo_module
    from nemo_rl.algorithms.utils import get_tokenizer
    from nemo_rl.data.utils import setup_response_data
    from nemo_rl.distributed.virtual_cluster import init_ray
    from nemo_rl.models.generation import configure_generation_config
    from nemo_rl.utils.logger import get_next_experiment_dir

    from holder_nemo.nemo_rl.steps import install_step_schedule

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
    if per_step:  # the paper's ALFWorld layout: game-file datasets, our loop instead of grpo_train (5. above)
        dataset, val_dataset = prepared.game_datasets
        task_to_env, val_task_to_env = {}, {}
    else:
        dataset, val_dataset, task_to_env, val_task_to_env = setup_response_data(tokenizer, config.data, config.env)
    (
        policy,
        policy_generation,
        _nemo_gym,
        _clusters,
        dataloader,
        val_dataloader,
        _clipped_pg_loss,
        logger,
        checkpointer,
        grpo_state,
        master_config,
        _teacher_worker_groups,
        _alias_to_group_alias,
    ) = grpo_module.setup(config, tokenizer, dataset, val_dataset)

    schedule = install_step_schedule(policy, loss_fn, grpo_state, logger)
    print(
        f"holder_nemo: HölderPO loss, {loss_fn.schedule}, resuming after step {schedule.completed_steps} "
        f"(next p = {loss_fn.p:.6g})",
        flush=True,
    )
    stop.install_signal_handlers()  # Ray and friends may have replaced them during setup
    if per_step:
        from holder_nemo.alfworld.nemo_rl_train import alfworld_per_step_train

        generation_cfg = master_config.policy["generation"]
        alfworld_per_step_train(
            policy,
            policy_generation,
            tokenizer,
            loss_fn,
            logger,
            checkpointer,
            grpo_state,
            master_config,
            train_games=dataset.game_files,
            val_games=val_dataset.game_files if val_dataset is not None else (),
            refit=functools.partial(
                grpo_module.refit_policy_generation,
                colocated_inference=generation_cfg["colocated"]["enabled"],
                _refit_buffer_size_gb=master_config.policy.get("refit_buffer_size_gb"),
            ),
            stop=stop,
            dataloader=dataloader,
        )
        return exit_code_after_training(stop.fired, master_config.checkpointing)
    with patched_timeout_checker(grpo_module, stop):
        grpo_module.grpo_train(
            policy,
            policy_generation,
            dataloader,
            val_dataloader,
            tokenizer,
            loss_fn,
            task_to_env,
            val_task_to_env,
            logger,
            checkpointer,
            grpo_state,
            master_config,
        )
    return exit_code_after_training(stop.fired, master_config.checkpointing)


if __name__ == "__main__":
    sys.exit(main())
