"""The rules a NeMo RL recipe must pass before any GPU is allocated: one rule set for ``holderpo recipe check`` and
the entry point's pre-flight (``run_grpo.prepare``). Every problem is reported with the dotted key it concerns.

* NeMo RL's own keys and types: the table generated from v0.7.0's ``MasterConfig`` (``master_config_schema.py``);
* ``loss_fn``: the HölderPO plugin's schema (``holder_nemo.nemo_rl.loss_config``), which owns that section; the
  ``holder`` block and its schedule must be written out;
* this entry point: no async GRPO, no TransferQueue data plane (``grpo_train`` is what the step hook and the stop
  contract hook into);
* what NeMo RL v0.7.0 asserts only once Ray and the model are up, mirrored here (``docs/recipes.md`` lists them):
  ``grpo.setup`` (keys it reads although its TypedDicts say NotRequired; ``batch_multiplier`` only with dynamic
  sampling; the per-dataloader prompt split; a validation set when validating; no KL without reference log-probs;
  a known generation backend; vLLM FP8 needs IS correction, FP8 KV cache needs FP8 weights, no DTensor, no async
  rollouts, Megatron PP 1; dedicated generation resources, ``parallel_layout.py``), ``Policy.__init__`` (one
  backend; draft models need Megatron and no packing; DTensor v1 has no LoRA and no HSDP; TP >= 4 log-probs at the
  training micro-batch; world size; dynamic batching needs PP 1 and no packing) and ``VllmGeneration.__init__``
  (TP x PP divides the generation GPUs; PP > 1 needs the async engine; expert parallelism a multiple of TP and, when
  larger, no async engine; ``top_k``, ``top_p``; ``VllmConfig``'s keys);
* counts NeMo RL uses as sizes are >= 1; batch arithmetic (prompts x generations divisible by the global batch when
  ``grpo_train`` trains, the global batch by DP x micro-batch, prompt + generation within the sequence length);
* the recipe's components (``env.<name>._component_``): their own rules;
* the schedule length against the run (warning); checkpointing (directory, ``metric_name``, ``model_save_format``);
* local data files and model directories the recipe names: a warning where they are absent (a login node), an error
  with ``strict`` (``--strict``, and the entry point, which runs where the data must be);
* DTensor v2 with checkpointing on needs ``checkpointing.is_async: false``: its worker otherwise saves asynchronously
  and NeMo RL renames ``tmp_step_N`` to ``step_N`` before the files are written (a driver that stops or dies then
  leaves a half-written ``step_N``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from holder_nemo.config.errors import ConfigError, Report
from holder_nemo.nemo_rl.parallel_layout import ParallelLayout, check_layout, is_int, is_on

_at = functools.partial(OmegaConf.select, default=None)  # the value at a dotted key, None when absent


# ------------------------------------------------------------------------------------------ loss_fn and schedule

_CLIPPED_PG_TOKEN_LEVEL_LOSS_DEFAULT = True  # nemo_rl/algorithms/loss/loss_functions.py, ClippedPGLossConfig (v0.7.0)


def check_holder_block(cfg: Mapping, report: Report) -> None:
    """``loss_fn`` (ClippedPG keys + the ``holder`` block), validated by the NeMo RL plugin's own schema, which owns
    the section; the ``holder`` block and its schedule must be written out (the schema would fill in defaults)."""
    from holder_nemo.nemo_rl.loss_config import LossConfigError, parse_loss_config, required_in_recipes

    loss_fn = cfg.get("loss_fn")
    missing = required_in_recipes(loss_fn)
    if missing:
        report.add(missing)
        return
    # NeMo RL's ClippedPGLossConfig (which MasterConfig builds from this section) defaults token_level_loss to
    # true; the loss the entry point hands grpo_train is built from that object, so an absent key means true.
    loss_fn = {"token_level_loss": _CLIPPED_PG_TOKEN_LEVEL_LOSS_DEFAULT, **loss_fn}
    try:
        parse_loss_config(loss_fn)
    except LossConfigError as exc:
        report.add(exc.problems)


def check_schedule_length(cfg: Mapping, report: Report) -> None:
    """Warn when the run stops before the schedule reaches its end value (p never gets to p_min)."""
    from holder_nemo.core import PSchedule

    schedule = ((cfg.get("loss_fn") or {}).get("holder") or {}).get("schedule")
    total = (cfg.get("grpo") or {}).get("max_num_steps")
    if not isinstance(schedule, Mapping) or not is_int(total):
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


# ------------------------------------------------------------------------------------------ the entry point


def check_entry_point(cfg: DictConfig, report: Report) -> None:
    """What ``holder_nemo.nemo_rl.run_grpo`` does not run: it trains with ``grpo_train``, which the step hook (p per
    step) and the stop contract hook into."""
    if is_on(cfg, "grpo.async_grpo.enabled"):
        report.error("grpo.async_grpo.enabled", "must be false: the HölderPO entry point runs synchronous grpo_train")
    if is_on(cfg, "data_plane.enabled"):
        report.error(
            "data_plane.enabled",
            "must be false: the HölderPO entry point runs grpo_train, not the TransferQueue trainer",
        )


# ----------------------------------------------------------------------------- NeMo RL's start-up assertions

# Keys grpo.setup (nemo_rl/algorithms/grpo.py) indexes unconditionally although the TypedDicts mark them NotRequired.
_READ_BY_SETUP = (
    "grpo.batch_multiplier",
    "data.use_multiple_dataloader",
    "data.num_workers",
    "policy.generation.colocated.enabled",
)
_GENERATION_BACKENDS = ("vllm", "megatron", "sglang")


def _validating(cfg: DictConfig) -> bool:
    period = _at(cfg, "grpo.val_period")
    return (is_int(period) and period > 0) or is_on(cfg, "grpo.val_at_start") or is_on(cfg, "grpo.val_at_end")


def check_grpo_setup(cfg: DictConfig, report: Report) -> None:
    """Conditions NeMo RL v0.7.0's ``grpo.setup`` asserts after Ray is up (the layout ones: ``parallel_layout.py``)."""
    if OmegaConf.select(cfg, "policy.generation", default=KeyError) is None:
        report.error("policy.generation", "must be set: GRPO generates with it")
        return
    for key in _READ_BY_SETUP:
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            report.error(key, "required: NeMo RL's grpo.setup reads it")
    multiplier, dynamic = _at(cfg, "grpo.batch_multiplier"), is_on(cfg, "grpo.use_dynamic_sampling")
    if multiplier is not None and multiplier != 1 and not dynamic:
        report.error("grpo.batch_multiplier", f"must be 1 unless grpo.use_dynamic_sampling is true, got {multiplier}")
    per_loader, prompts = _at(cfg, "data.num_prompts_per_dataloader"), _at(cfg, "grpo.num_prompts_per_step")
    if is_on(cfg, "data.use_multiple_dataloader") and is_int(per_loader) and is_int(prompts) and prompts % per_loader:
        report.error(
            "data.num_prompts_per_dataloader", f"({per_loader}) must divide grpo.num_prompts_per_step ({prompts})"
        )
    if _validating(cfg) and not _at(cfg, "data.validation"):
        report.error(
            "data.validation",
            "a validation dataset is required when grpo.val_period > 0 or grpo.val_at_start/val_at_end is true",
        )
    kl = _at(cfg, "loss_fn.reference_policy_kl_penalty")
    if is_on(cfg, "grpo.skip_reference_policy_logprobs_calculation") and isinstance(kl, int | float) and kl != 0:
        report.error(
            "grpo.skip_reference_policy_logprobs_calculation",
            f"true requires loss_fn.reference_policy_kl_penalty == 0, got {kl}",
        )
    backend = _at(cfg, "policy.generation.backend")
    if isinstance(backend, str) and backend not in _GENERATION_BACKENDS:
        report.error("policy.generation.backend", f"must be one of {', '.join(_GENERATION_BACKENDS)}, got {backend!r}")
    if backend != "vllm":
        return
    # grpo.setup's FP8 rules for vLLM generation
    vllm = "policy.generation.vllm_cfg."
    if OmegaConf.select(cfg, vllm + "precision", default=KeyError) is KeyError:
        report.error(vllm + "precision", "required with the vLLM backend: NeMo RL's grpo.setup reads it")
    if _at(cfg, vllm + "precision") == "fp8" and not is_on(cfg, "loss_fn.use_importance_sampling_correction"):
        report.error(vllm + "precision", "'fp8' needs loss_fn.use_importance_sampling_correction: true (NeMo RL)")
    kv_cache = _at(cfg, vllm + "kv_cache_dtype")
    if isinstance(kv_cache, str) and kv_cache.startswith("fp8"):
        async_engine = is_on(cfg, vllm + "async_engine")
        for wrong, message in (
            (_at(cfg, vllm + "precision") != "fp8", "needs policy.generation.vllm_cfg.precision: fp8"),
            (is_on(cfg, "policy.dtensor_cfg.enabled"), "is not supported with the DTensor backend"),
            (async_engine, "is not supported with async rollouts (policy.generation.vllm_cfg.async_engine)"),
            ((_at(cfg, "policy.megatron_cfg.pipeline_model_parallel_size") or 1) != 1, "needs Megatron PP 1"),
        ):
            if wrong:
                report.error(vllm + "kv_cache_dtype", f"{kv_cache!r} {message} (NeMo RL's grpo.setup)")


def check_policy(cfg: DictConfig, layout: ParallelLayout | None, report: Report) -> None:
    """Conditions NeMo RL v0.7.0's ``Policy.__init__`` asserts (one backend and the world size: ``check_layout``)."""
    megatron, dtensor = is_on(cfg, "policy.megatron_cfg.enabled"), is_on(cfg, "policy.dtensor_cfg.enabled")
    if is_on(cfg, "policy.draft.enabled") and not megatron:
        report.error("policy.draft.enabled", "true needs the Megatron backend (policy.megatron_cfg.enabled)")
    if is_on(cfg, "policy.draft.enabled") and is_on(cfg, "policy.sequence_packing.enabled"):
        report.error("policy.draft.enabled", "true does not support policy.sequence_packing.enabled: true")
    if dtensor and not megatron and not is_on(cfg, "policy.dtensor_cfg._v2"):
        if is_on(cfg, "policy.dtensor_cfg.lora_cfg.enabled"):
            report.error("policy.dtensor_cfg.lora_cfg.enabled", "LoRA needs DTensor v2 (policy.dtensor_cfg._v2: true)")
        replicas = _at(cfg, "policy.dtensor_cfg.dp_replicate_size")
        if is_int(replicas) and replicas > 1:
            report.error(
                "policy.dtensor_cfg.dp_replicate_size",
                f"({replicas}) > 1 needs DTensor v2 (policy.dtensor_cfg._v2: true)",
            )
    if is_on(cfg, "policy.dynamic_batching.enabled") and layout is not None and layout.pp != 1:
        report.error("policy.dynamic_batching.enabled", f"true needs pipeline parallel size 1, got {layout.pp}")
    tp_key = "megatron_cfg.tensor_model_parallel_size" if megatron else "dtensor_cfg.tensor_parallel_size"
    tp, mbs, lbs = _at(cfg, "policy." + tp_key), _at(cfg, "policy.train_micro_batch_size"), None
    if is_int(tp) and tp >= 4 and "logprob_batch_size" in (_at(cfg, "policy") or {}):
        lbs = _at(cfg, "policy.logprob_batch_size")
    if lbs is not None and lbs != mbs:
        # TP >= 4 kernels are batch-variant: prev_logprobs computed at another batch size would not equal the
        # training forward's. Policy.__init__ asserts this unless NRL_IGNORE_TP_ACCURACY_CHECK is set.
        message = (
            f"must equal policy.train_micro_batch_size ({mbs}) when tensor parallel size >= 4 (policy.{tp_key} = "
            f"{tp}), got {lbs}: NeMo RL's Policy refuses it (TP >= 4 log-probs are batch-variant)"
        )
        if os.environ.get("NRL_IGNORE_TP_ACCURACY_CHECK"):
            report.warn("policy.logprob_batch_size", message + "; bypassed by NRL_IGNORE_TP_ACCURACY_CHECK")
        else:
            report.error("policy.logprob_batch_size", message)
    if megatron and is_on(cfg, "policy.megatron_cfg.use_linear_ce_fusion_loss"):
        report.error(
            "policy.megatron_cfg.use_linear_ce_fusion_loss",
            "must be false: the fused linear-CE forward "
            "returns precomputed log-probs (at temperature 1), which NeMo RL v0.7.0's GRPO loss path "
            "(ClippedPGLossFn, and so HölderPO) does not support",
        )


def check_vllm_generation(cfg: DictConfig, report: Report) -> None:
    """Conditions NeMo RL v0.7.0's ``VllmGeneration.__init__`` asserts (TP x PP against the GPUs: ``check_layout``;
    its required keys: the ``VllmConfig`` table)."""
    if _at(cfg, "policy.generation.backend") != "vllm":
        return
    vllm = "policy.generation.vllm_cfg."
    tp, pp, ep = (
        _at(cfg, vllm + k) for k in ("tensor_parallel_size", "pipeline_parallel_size", "expert_parallel_size")
    )
    async_engine = is_on(cfg, vllm + "async_engine")
    if is_int(pp) and pp > 1 and not async_engine:
        report.error(vllm + "async_engine", f"must be true when {vllm}pipeline_parallel_size > 1 ({pp})")
    if is_int(ep) and is_int(tp) and ep > 1 and tp >= 1:
        if ep % tp:
            report.error(
                vllm + "expert_parallel_size",
                f"({ep}) must be a multiple of {vllm}tensor_parallel_size ({tp}): vLLM's EP = DP x TP",
            )
        elif ep != tp and async_engine:
            report.error(
                vllm + "async_engine",
                f"must be false when {vllm}expert_parallel_size ({ep}) > "
                f"tensor_parallel_size ({tp}): NeMo RL's vLLM async engine fails with DP inside vLLM",
            )
    top_k, top_p = _at(cfg, "policy.generation.top_k"), _at(cfg, "policy.generation.top_p")
    if is_int(top_k) and top_k != -1 and top_k < 1:
        report.error("policy.generation.top_k", f"must be null, -1 (no filtering) or >= 1, got {top_k}")
    if isinstance(top_p, int | float) and not isinstance(top_p, bool) and not 0 < top_p <= 1:
        report.error("policy.generation.top_p", f"must be in (0, 1] (1.0: no filtering), got {top_p}")


# ------------------------------------------------------------------------------------------ counts and batches

# Counts NeMo RL uses as sizes or divisors (dataloader batch sizes, loop bounds, the save period's modulo).
_COUNTS = (
    "grpo.num_prompts_per_step",
    "grpo.num_generations_per_prompt",
    "grpo.max_num_steps",
    "grpo.max_num_epochs",
    "policy.train_global_batch_size",
    "policy.train_micro_batch_size",
    "policy.max_total_sequence_length",
    "policy.generation.max_new_tokens",
    "checkpointing.save_period",
)


def check_counts(cfg: DictConfig, report: Report) -> None:
    keys = [*_COUNTS, *(("grpo.val_batch_size",) if _validating(cfg) else ())]
    for key in keys:
        value = _at(cfg, key)
        if is_int(value) and value < 1:
            report.error(key, f"must be >= 1, got {value}")


def check_batch(cfg: DictConfig, layout: ParallelLayout | None, report: Report, *, grpo_train: bool = True) -> None:
    prompts, gens = _at(cfg, "grpo.num_prompts_per_step"), _at(cfg, "grpo.num_generations_per_prompt")
    gbs, mbs = _at(cfg, "policy.train_global_batch_size"), _at(cfg, "policy.train_micro_batch_size")
    if not all(is_int(v) and v >= 1 for v in (prompts, gens, gbs, mbs)):
        return
    rows = prompts * gens
    # A component's own loop (ALFWorld's per-step rows) pads its rows to whole global batches itself.
    if grpo_train and rows % gbs:
        report.error(
            "policy.train_global_batch_size",
            f"({gbs}) must divide grpo.num_prompts_per_step x "
            f"grpo.num_generations_per_prompt ({prompts} x {gens} = {rows})",
        )
    if layout is not None and layout.train_gpus % (layout.tp * layout.pp * layout.cp) == 0 and gbs % (layout.dp * mbs):
        report.error(
            "policy.train_global_batch_size",
            f"({gbs}) must be divisible by data-parallel size x "
            f"policy.train_micro_batch_size ({layout.dp} x {mbs} = {layout.dp * mbs})",
        )
    seq, new = _at(cfg, "policy.max_total_sequence_length"), _at(cfg, "policy.generation.max_new_tokens")
    if is_int(seq) and is_int(new):
        if new >= seq:
            report.error(
                "policy.generation.max_new_tokens",
                f"({new}) must be < policy.max_total_sequence_length ({seq}), which also holds the prompt",
            )
        prompt = _at(cfg, "data.max_input_seq_length")
        if is_int(prompt) and prompt + new > seq:
            report.warn(
                "data.max_input_seq_length",
                f"prompt ({prompt}) + policy.generation.max_new_tokens ({new}) > "
                f"policy.max_total_sequence_length ({seq}): long prompts get fewer new tokens than the cap",
            )


# ------------------------------------------------------------------------------------- checkpointing and paths


def check_checkpointing(cfg: Mapping, report: Report) -> None:
    ckpt = cfg.get("checkpointing") or {}
    policy = cfg.get("policy") or {}
    if ckpt.get("enabled") is True:
        directory = ckpt.get("checkpoint_dir")
        if not isinstance(directory, str) or not directory.strip():
            report.error("checkpointing.checkpoint_dir", "must be a non-empty path when checkpointing.enabled is true")
    save_format = ckpt.get("model_save_format")
    dtensor = policy.get("dtensor_cfg") or {}
    if dtensor.get("enabled") is True and dtensor.get("_v2") is True:
        if save_format not in (None, "torch_save", "safetensors"):
            report.error(
                "checkpointing.model_save_format",
                f"must be 'torch_save', 'safetensors' or null with DTensor v2, got {save_format!r}",
            )
        # The v2 worker builds Automodel's Checkpointer with is_async=True and passes checkpointing.is_async only
        # when the recipe sets it; its save_checkpoint returns once the DCP write is handed to a background process,
        # and grpo_train's finalize_checkpoint renames the directory at once (NeMo RL v0.7.0 never waits for it).
        if ckpt.get("enabled") is True and ckpt.get("is_async") is not False:
            report.error(
                "checkpointing.is_async",
                "must be false with DTensor v2: NeMo RL v0.7.0 renames tmp_step_N to step_N without waiting for the "
                "worker's asynchronous save, so a stop or a crash right after leaves step_N half-written, got "
                f"{ckpt.get('is_async')!r}",
            )
    elif save_format is not None:
        # Only the DTensor v2 worker honours a format: Policy.save_checkpoint (lm_policy.py) raises at the first save
        # when dtensor_cfg._v2 is false, and otherwise hands it to the Megatron worker, which takes **kwargs and
        # ignores it (it always writes Megatron's distributed checkpoint): a format set there is silently not written.
        if (policy.get("megatron_cfg") or {}).get("enabled") is True:
            consequence = "the Megatron worker ignores it and always writes Megatron's distributed checkpoint"
            if dtensor.get("_v2") is not True:
                consequence = "NeMo RL's Policy.save_checkpoint raises at the first save"
            backend = "Megatron"
        else:
            backend, consequence = "DTensor v1", "NeMo RL's Policy.save_checkpoint raises at the first save"
        report.error(
            "checkpointing.model_save_format",
            f"must be null with the {backend} backend (only DTensor v2, policy.dtensor_cfg._v2: true, takes a "
            f"format; {consequence}), got {save_format!r}",
        )
    metric = ckpt.get("metric_name")
    if isinstance(metric, str) and not metric.startswith(("val:", "train:")):
        report.error("checkpointing.metric_name", f"must start with 'val:' or 'train:' (or be null), got {metric!r}")


_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow", ".csv")


def _local(path: str) -> bool:
    """Whether a recipe path means a local file or directory rather than a Hugging Face Hub id (``namespace/name``:
    at most one slash, no file suffix), which is not checked here."""
    return path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or path.endswith(_DATA_SUFFIXES)


def check_paths(cfg: DictConfig, report: Report, *, strict: bool) -> None:
    """Every local data file and model directory the recipe names that does not exist here: an error with
    ``strict`` (where the job runs), else a warning."""
    paths = []  # (key, path, is_directory)
    for split in ("train", "validation", "default"):
        entries = _at(cfg, f"data.{split}")
        for i, entry in enumerate(entries if OmegaConf.is_list(entries) else [entries]):
            path = entry.get("data_path") if OmegaConf.is_dict(entry) else None
            key = f"data.{split}" + (f"[{i}]" if OmegaConf.is_list(entries) else "") + ".data_path"
            if isinstance(path, str) and _local(path):
                paths.append((key, path, not path.endswith(_DATA_SUFFIXES)))
    for key in ("policy.model_name", "policy.tokenizer.name"):
        path = _at(cfg, key)
        if isinstance(path, str) and _local(path):
            paths.append((key, path, True))
    for key, path, directory in paths:
        exists = Path(path).expanduser().is_dir() if directory else Path(path).expanduser().is_file()
        if not exists:
            what = "directory" if directory else "file"
            (report.error if strict else report.warn)(
                key,
                f"no such {what} {path!r} here"
                + ("" if strict else " (fine on a login node if the job sees it; --strict makes this an error)"),
            )


# ------------------------------------------------------------------------------------------------- all rules


def check_nemo_rl_recipe(cfg: Mapping[str, Any], *, strict: bool) -> tuple[Report, ParallelLayout | None]:
    """Every rule for a NeMo RL GRPO recipe given resolved as a plain dict, its components' included."""
    from holder_nemo.nemo_rl.components import component_training, components
    from holder_nemo.nemo_rl.master_config_schema import check_master_config

    node = OmegaConf.create(dict(cfg))
    plain: dict[str, Any] = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
    report = Report()
    report.add(check_master_config(plain))
    check_holder_block(plain, report)
    check_schedule_length(plain, report)
    check_entry_point(node, report)
    layout = check_layout(node, report)
    check_grpo_setup(node, report)
    check_policy(node, layout, report)
    check_vllm_generation(node, report)
    check_counts(node, report)
    try:
        found = components(plain)
        report.add(problem for c in found.values() for problem in getattr(c, "check", lambda _: [])(plain))
        grpo_train = component_training(found, plain) is None
    except ConfigError as exc:
        report.add(exc.problems)
        grpo_train = True
    check_batch(node, layout, report, grpo_train=grpo_train)
    check_checkpointing(plain, report)
    check_paths(node, report, strict=strict)
    return report, layout
