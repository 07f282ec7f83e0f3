"""Offline validation of a resolved NeMo RL recipe: every problem is reported with the dotted key it concerns.

Rules (each has a test with a recipe that breaks it, in ``tests/recipes/test_recipe_check.py``):

* required keys and types (``recipe_keys.py``), numeric lower bounds;
* the ``loss_fn`` section, validated by the NeMo RL plugin's schema (``holder_nemo.nemo_rl.config``): ClippedPG
  keys and the ``holder`` block (schedule built with ``holder_nemo.core.PSchedule``, clip mode, ``check_finite``,
  importance ratio, IS-correction level); the ``holder`` block must be written out;
* parallel layout (``parallel_layout.py``);
* batch arithmetic: prompts x generations divisible by the global batch (when ``grpo_train`` trains; a component's
  own loop checks its rows); the global batch divisible by DP x micro-batch; prompt + generation fit the model
  length;
* the recipe's components (``env.<name>._component_``): their own rules (``components.component_problems``);
* schedule length versus total steps (warning when p never reaches its end value);
* NeMo RL start-up conditions: a validation set when validation is on; no KL when reference logprobs are skipped;
  ``policy.train_micro_batch_size == policy.logprob_batch_size`` when TP >= 4 (``Policy.__init__``); no Megatron
  linear-CE fusion (it hands the loss precomputed log-probs, which NeMo RL's GRPO loss path does not support);
* checkpoint directory set when checkpointing is on; ``metric_name`` is ``val:...``/``train:...`` or null;
  ``model_save_format`` null unless the backend is DTensor v2 (``Policy.save_checkpoint`` raises at the first save
  otherwise), and one of ``torch_save`` / ``safetensors`` with DTensor v2; with DTensor v2 and checkpointing on,
  ``checkpointing.is_async: false``: its worker otherwise saves asynchronously and NeMo RL renames ``tmp_step_N`` to
  ``step_N`` before the files are written (a driver that stops or dies then leaves a half-written ``step_N``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from holder_nemo.nemo_rl.parallel_layout import ParallelLayout, check_layout
from holder_nemo.nemo_rl.recipe_keys import Report, check_required_keys, enabled, get, type_matches

# --------------------------------------------------------------------------------------------------------- holder

_CLIPPED_PG_TOKEN_LEVEL_LOSS_DEFAULT = True  # nemo_rl/algorithms/loss/loss_functions.py, ClippedPGLossConfig (v0.7.0)


def check_holder_block(
    cfg: Mapping, report: Report, *, nemo_rl_defaults: bool = False, mean_reward_known: bool = False
) -> None:
    """``loss_fn`` (ClippedPG keys + the ``holder`` block), validated by the NeMo RL plugin's own schema.

    The plugin (``holder_nemo.nemo_rl.config.parse_loss_config``) owns the key set; its errors are reported with
    their dotted keys. An explicit ``holder`` block is required here (the plugin would fill in defaults).
    """
    loss_fn = get(cfg, "loss_fn", None)
    if not isinstance(loss_fn, dict):
        report.error("loss_fn", f"expected a mapping, got {type(loss_fn).__name__}")
        return
    if loss_fn.get("holder") is None:
        report.error("loss_fn.holder", "the HölderPO block is missing (schedule, clip_mode, check_finite, ...)")
        return
    from holder_nemo.nemo_rl.config import LossConfigError, parse_loss_config

    if nemo_rl_defaults:
        # NeMo RL's ClippedPGLossConfig (which MasterConfig builds from this section) defaults token_level_loss to
        # true; the loss the entry point hands grpo_train is built from that object, so an absent key means true.
        loss_fn = {"token_level_loss": _CLIPPED_PG_TOKEN_LEVEL_LOSS_DEFAULT, **loss_fn}
    try:
        parse_loss_config(loss_fn, mean_reward_known=mean_reward_known)
    except LossConfigError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
        for line in lines:
            key, _, message = line.partition(": ")
            report.error(key, message or line)


def check_schedule_length(cfg: Mapping, report: Report) -> None:
    """Warn when the run stops before the schedule reaches its end value (p never gets to p_min)."""
    from holder_nemo.core import PSchedule

    schedule, total = get(cfg, "loss_fn.holder.schedule"), get(cfg, "grpo.max_num_steps")
    if not isinstance(schedule, dict) or not type_matches(total, "int"):
        return
    try:
        sched = PSchedule.from_dict(schedule)
    except (TypeError, ValueError):
        return  # reported by check_holder_block
    if sched.kind in ("constant", "reward") or sched.p_min == sched.p_max:
        return
    if sched.steps > total:
        report.warn(
            "loss_fn.holder.schedule.steps",
            f"schedule.steps ({sched.steps}) > grpo.max_num_steps ({total}): the run ends at p = {sched(total):.4g} "
            f"and never reaches its end value p = {sched(sched.steps):.4g}",
        )


def check_batch(cfg: Mapping, layout: ParallelLayout | None, report: Report, *, grpo_train: bool = True) -> None:
    prompts, gens = get(cfg, "grpo.num_prompts_per_step"), get(cfg, "grpo.num_generations_per_prompt")
    gbs, mbs = get(cfg, "policy.train_global_batch_size"), get(cfg, "policy.train_micro_batch_size")
    if not all(type_matches(v, "int") and v >= 1 for v in (prompts, gens, gbs, mbs)):
        return
    rows = prompts * gens
    # A component's own loop (ALFWorld's per-step rows) pads its rows to whole global batches itself.
    if grpo_train and rows % gbs:
        report.error(
            "policy.train_global_batch_size",
            f"({gbs}) must divide grpo.num_prompts_per_step x grpo.num_generations_per_prompt "
            f"({prompts} x {gens} = {rows})",
        )
    layout_ok = layout is not None and layout.train_gpus >= 1
    if layout_ok and layout.train_gpus % (layout.tp * layout.pp * layout.cp) == 0 and gbs % (layout.dp * mbs):
        report.error(
            "policy.train_global_batch_size",
            f"({gbs}) must be divisible by data-parallel size x policy.train_micro_batch_size "
            f"({layout.dp} x {mbs} = {layout.dp * mbs})",
        )
    seq, new = get(cfg, "policy.max_total_sequence_length"), get(cfg, "policy.generation.max_new_tokens")
    if type_matches(seq, "int") and type_matches(new, "int"):
        if new >= seq:
            report.error(
                "policy.generation.max_new_tokens",
                f"({new}) must be < policy.max_total_sequence_length ({seq}), which also holds the prompt",
            )
        prompt = get(cfg, "data.max_input_seq_length")
        if type_matches(prompt, "int") and prompt + new > seq:
            report.warn(
                "data.max_input_seq_length",
                f"prompt ({prompt}) + policy.generation.max_new_tokens ({new}) > policy.max_total_sequence_length "
                f"({seq}): long prompts get fewer new tokens than the cap",
            )


def check_grpo_setup(cfg: Mapping, report: Report) -> None:
    """Conditions NeMo RL's GRPO ``setup()`` and ``Policy.__init__`` assert at start-up (reported here before any GPU
    is allocated)."""
    megatron = enabled(cfg, "policy.megatron_cfg.enabled")
    validating = (
        (type_matches(get(cfg, "grpo.val_period"), "int") and get(cfg, "grpo.val_period") > 0)
        or get(cfg, "grpo.val_at_start") is True
        or get(cfg, "grpo.val_at_end") is True
    )
    if validating and not get(cfg, "data.validation"):
        report.error(
            "data.validation",
            "a validation dataset is required when grpo.val_period > 0 or grpo.val_at_start/val_at_end is true",
        )
    tp_key = "megatron_cfg.tensor_model_parallel_size" if megatron else "dtensor_cfg.tensor_parallel_size"
    tp, policy = get(cfg, "policy." + tp_key), get(cfg, "policy", {})
    mbs, lbs = get(cfg, "policy.train_micro_batch_size"), get(cfg, "policy.logprob_batch_size")
    if (
        type_matches(tp, "int")
        and tp >= 4
        and isinstance(policy, dict)
        and "logprob_batch_size" in policy
        and mbs != lbs
    ):
        # Policy.__init__ (lm_policy.py) asserts this unless NRL_IGNORE_TP_ACCURACY_CHECK is set: TP >= 4 kernels are
        # batch-variant, so prev_logprobs computed at another batch size would not equal the training forward's.
        message = (
            f"must equal policy.train_micro_batch_size ({mbs}) when tensor parallel size >= 4 (policy.{tp_key} = "
            f"{tp}), got {lbs}: NeMo RL's Policy refuses it (TP >= 4 log-probs are batch-variant)"
        )
        if os.environ.get("NRL_IGNORE_TP_ACCURACY_CHECK"):
            report.warn("policy.logprob_batch_size", message + "; bypassed by NRL_IGNORE_TP_ACCURACY_CHECK")
        else:
            report.error("policy.logprob_batch_size", message)
    if megatron and enabled(cfg, "policy.megatron_cfg.use_linear_ce_fusion_loss"):
        report.error(
            "policy.megatron_cfg.use_linear_ce_fusion_loss",
            "must be false: the fused linear-CE forward returns precomputed log-probs (at temperature 1), which "
            "NeMo RL v0.7.0's GRPO loss path (ClippedPGLossFn, and so HölderPO) does not support",
        )
    kl = get(cfg, "loss_fn.reference_policy_kl_penalty")
    if get(cfg, "grpo.skip_reference_policy_logprobs_calculation") is True and type_matches(kl, "float") and kl != 0:
        report.error(
            "grpo.skip_reference_policy_logprobs_calculation",
            f"true requires loss_fn.reference_policy_kl_penalty == 0, got {kl}",
        )


def check_checkpointing(cfg: Mapping, report: Report) -> None:
    if enabled(cfg, "checkpointing.enabled"):
        directory = get(cfg, "checkpointing.checkpoint_dir")
        if not isinstance(directory, str) or not directory.strip():
            report.error("checkpointing.checkpoint_dir", "must be a non-empty path when checkpointing.enabled is true")
    save_format = get(cfg, "checkpointing.model_save_format")
    dtensor_v2 = enabled(cfg, "policy.dtensor_cfg.enabled") and enabled(cfg, "policy.dtensor_cfg._v2")
    if dtensor_v2:
        if save_format not in (None, "torch_save", "safetensors"):
            report.error(
                "checkpointing.model_save_format",
                f"must be 'torch_save', 'safetensors' or null with DTensor v2, got {save_format!r}",
            )
        # The v2 worker builds Automodel's Checkpointer with is_async=True and passes checkpointing.is_async only
        # when the recipe sets it; its save_checkpoint returns once the DCP write is handed to a background process,
        # and grpo_train's finalize_checkpoint renames the directory at once (NeMo RL v0.7.0 never waits for it).
        if enabled(cfg, "checkpointing.enabled") and get(cfg, "checkpointing.is_async") is not False:
            report.error(
                "checkpointing.is_async",
                "must be false with DTensor v2: NeMo RL v0.7.0 renames tmp_step_N to step_N without waiting for the "
                "worker's asynchronous save, so a stop or a crash right after leaves step_N half-written, got "
                f"{get(cfg, 'checkpointing.is_async')!r}",
            )
    elif save_format is not None:
        # Policy.save_checkpoint (lm_policy.py) raises at the first save: only the DTensor v2 worker takes a format;
        # the Megatron worker always writes Megatron's distributed checkpoint, DTensor v1 torch DCP.
        backend = "Megatron" if enabled(cfg, "policy.megatron_cfg.enabled") else "DTensor v1"
        report.error(
            "checkpointing.model_save_format",
            f"must be null with the {backend} backend (only DTensor v2, policy.dtensor_cfg._v2: true, takes a "
            f"format; NeMo RL's Policy.save_checkpoint raises at the first save), got {save_format!r}",
        )
    metric = get(cfg, "checkpointing.metric_name")
    if isinstance(metric, str) and not metric.startswith(("val:", "train:")):
        report.error("checkpointing.metric_name", f"must start with 'val:' or 'train:' (or be null), got {metric!r}")


def check_nemo_rl_recipe(cfg: Mapping) -> tuple[Report, ParallelLayout | None]:
    """All rules for a NeMo RL GRPO recipe given as a resolved plain dict, its components' included."""
    from holder_nemo.nemo_rl.components import component_problems, component_training, components

    report = Report()
    check_required_keys(cfg, report)
    check_holder_block(cfg, report, nemo_rl_defaults=True)
    check_schedule_length(cfg, report)
    layout = check_layout(cfg, report)
    try:
        for key, message in component_problems(cfg):
            report.error(key, message)
        grpo_train = component_training(components(cfg), cfg) is None
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        report.error(key if message else "env", message or str(exc))
        grpo_train = True
    check_batch(cfg, layout, report, grpo_train=grpo_train)
    check_grpo_setup(cfg, report)
    check_checkpointing(cfg, report)
    return report, layout
