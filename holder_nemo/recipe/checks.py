"""Offline validation of a resolved recipe: every problem is reported with the dotted key it concerns.

Rules (each has a test with a recipe that breaks it, in ``tests/recipes/test_recipe_check.py``):

* required keys and types (``schema.py``), numeric lower bounds;
* the ``loss_fn`` section, validated by the NeMo RL plugin's schema (``holder_nemo.nemo_rl.config``): ClippedPG
  keys and the ``holder`` block (schedule built with ``holder_nemo.core.PSchedule``, clip mode, ``check_finite``,
  importance ratio, IS-correction level); the ``holder`` block must be written out;
* parallel layout: exactly one training backend; nodes x GPUs divisible by TP x PP x CP; vLLM TP x PP fits a node and
  divides the generation GPUs; packing on when Megatron CP > 1; packing and dynamic batching exclusive; sequence
  length divisible by CP x lcm(2, TP); Megatron packing pad factor (2 CP x TP with SP) divides
  ``make_sequence_length_divisible_by``; a packed micro-batch holds at least one full sequence;
* batch arithmetic: prompts x generations divisible by the global batch; the global batch divisible by DP x
  micro-batch; prompt + generation fit the model length;
* schedule length versus total steps (warning when p never reaches its end value);
* NeMo RL start-up conditions: a validation set when validation is on; no KL when reference logprobs are skipped;
  ``policy.train_micro_batch_size == policy.logprob_batch_size`` when TP >= 4 (``Policy.__init__``); no Megatron
  linear-CE fusion (it hands the loss precomputed log-probs, which NeMo RL's GRPO loss path does not support);
* checkpoint directory set when checkpointing is on; ``metric_name`` is ``val:...``/``train:...`` or null;
  ``model_save_format`` null unless the backend is DTensor v2 (``Policy.save_checkpoint`` raises at the first save
  otherwise), and one of ``torch_save`` / ``safetensors`` with DTensor v2.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from holder_nemo.recipe.schema import ALWAYS, VLLM_KEYS, WHEN_ENABLED, KeySpec, lookup, type_matches


@dataclass(frozen=True)
class Finding:
    """One problem: ``level`` is "error" or "warning"; ``key`` is the dotted key it concerns."""

    level: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.key}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def error(self, key: str, message: str) -> None:
        self.findings.append(Finding("error", key, message))

    def warn(self, key: str, message: str) -> None:
        self.findings.append(Finding("warning", key, message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def _get(cfg: Mapping, path: str, default: Any = None) -> Any:
    return lookup(cfg, path, default)  # type: ignore[arg-type]


def _enabled(cfg: Mapping, path: str) -> bool:
    return _get(cfg, path, False) is True


# ----------------------------------------------------------------------------------------------------------- keys


def _check_spec(cfg: Mapping, spec: KeySpec, report: Report) -> None:
    try:
        value = lookup(cfg, spec.path)  # type: ignore[arg-type]
    except KeyError:
        report.error(spec.path, f"required key is missing (expected {spec.type})")
        return
    if not type_matches(value, spec.type):
        report.error(spec.path, f"expected {spec.type}, got {type(value).__name__} {value!r}")
        return
    if spec.minimum is not None and value is not None and value < spec.minimum:
        report.error(spec.path, f"must be >= {spec.minimum:g}, got {value!r}")


def check_required_keys(cfg: Mapping, report: Report) -> None:
    for spec in ALWAYS:
        _check_spec(cfg, spec, report)
    for switch, specs in WHEN_ENABLED.items():
        if _enabled(cfg, switch):
            for spec in specs:
                _check_spec(cfg, spec, report)
    if _get(cfg, "policy.generation.backend") == "vllm":
        for spec in VLLM_KEYS:
            _check_spec(cfg, spec, report)


# --------------------------------------------------------------------------------------------------------- holder

_CLIPPED_PG_TOKEN_LEVEL_LOSS_DEFAULT = True  # nemo_rl/algorithms/loss/loss_functions.py, ClippedPGLossConfig (v0.7.0)


def check_holder_block(cfg: Mapping, report: Report, *, nemo_rl_defaults: bool = False) -> None:
    """``loss_fn`` (ClippedPG keys + the ``holder`` block), validated by the NeMo RL plugin's own schema.

    The plugin (``holder_nemo.nemo_rl.config.parse_loss_config``) owns the key set; its errors are reported with
    their dotted keys. An explicit ``holder`` block is required here (the plugin would fill in defaults).
    """
    loss_fn = _get(cfg, "loss_fn", None)
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
        parse_loss_config(loss_fn)
    except LossConfigError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
        for line in lines:
            key, _, message = line.partition(": ")
            report.error(key, message or line)


def check_schedule_length(cfg: Mapping, report: Report) -> None:
    """Warn when the run stops before the schedule reaches its end value (p never gets to p_min)."""
    from holder_nemo.core import PSchedule

    schedule, total = _get(cfg, "loss_fn.holder.schedule"), _get(cfg, "grpo.max_num_steps")
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


# --------------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Parallel layout derived from a recipe (sizes are GPU counts)."""

    backend: str
    nodes: int
    gpus_per_node: int
    train_gpus: int
    tp: int
    pp: int
    cp: int
    sequence_parallel: bool
    gen_tp: int
    gen_pp: int
    gen_gpus: int
    gen_gpus_per_node: int
    colocated: bool

    @property
    def dp(self) -> int:
        return self.train_gpus // (self.tp * self.pp * self.cp)


def derive_layout(cfg: Mapping) -> Layout | None:
    """The layout, or None when the keys it needs are missing or mistyped (reported elsewhere)."""
    nodes, gpn = _get(cfg, "cluster.num_nodes"), _get(cfg, "cluster.gpus_per_node")
    if not (type_matches(nodes, "int") and type_matches(gpn, "int")) or nodes < 1 or gpn < 1:
        return None
    if _enabled(cfg, "policy.megatron_cfg.enabled"):
        prefix, backend = "policy.megatron_cfg.", "megatron"
        names = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size")
        tp, pp, cp = (_get(cfg, prefix + n) for n in names)
    else:
        prefix, backend = "policy.dtensor_cfg.", "dtensor"
        tp, cp, pp = _get(cfg, prefix + "tensor_parallel_size"), _get(cfg, prefix + "context_parallel_size"), 1
    if not all(type_matches(v, "int") and v >= 1 for v in (tp, pp, cp)):
        return None
    gen_tp = _get(cfg, "policy.generation.vllm_cfg.tensor_parallel_size", 1)
    gen_pp = _get(cfg, "policy.generation.vllm_cfg.pipeline_parallel_size", 1)
    if not all(type_matches(v, "int") and v >= 1 for v in (gen_tp, gen_pp)):
        return None
    colocated = _get(cfg, "policy.generation.colocated.enabled", True) is not False
    total = nodes * gpn
    train_gpus, gen_gpus, gen_gpn = total, total, gpn
    if not colocated:
        res_nodes = _get(cfg, "policy.generation.colocated.resources.num_nodes") or 0
        res_gpn = _get(cfg, "policy.generation.colocated.resources.gpus_per_node") or 0
        if nodes == 1:  # NeMo RL: on one node, generation takes resources.gpus_per_node of its GPUs
            gen_gpus, gen_gpn = res_gpn, res_gpn
        else:  # on several nodes, generation takes whole nodes
            gen_gpus = res_nodes * gpn
        train_gpus = total - gen_gpus
    return Layout(
        backend=backend,
        nodes=nodes,
        gpus_per_node=gpn,
        train_gpus=train_gpus,
        tp=tp,
        pp=pp,
        cp=cp,
        sequence_parallel=bool(_get(cfg, prefix + "sequence_parallel", False)),
        gen_tp=gen_tp,
        gen_pp=gen_pp,
        gen_gpus=gen_gpus,
        gen_gpus_per_node=gen_gpn,
        colocated=colocated,
    )


def check_layout(cfg: Mapping, report: Report) -> Layout | None:
    megatron, dtensor = _enabled(cfg, "policy.megatron_cfg.enabled"), _enabled(cfg, "policy.dtensor_cfg.enabled")
    if megatron == dtensor:
        state = "both enabled" if megatron else "neither enabled"
        report.error(
            "policy.megatron_cfg.enabled",
            f"exactly one training backend must be on (policy.megatron_cfg.enabled / policy.dtensor_cfg.enabled: "
            f"{state})",
        )
    packing, dynamic = (
        _enabled(cfg, "policy.sequence_packing.enabled"),
        _enabled(cfg, "policy.dynamic_batching.enabled"),
    )
    if packing and dynamic:
        report.error("policy.sequence_packing.enabled", "sequence packing and dynamic batching are mutually exclusive")

    layout = derive_layout(cfg)
    if layout is None:
        return None
    tp_key = "policy.megatron_cfg.tensor_model_parallel_size" if megatron else "policy.dtensor_cfg.tensor_parallel_size"
    cp_key = "policy.megatron_cfg.context_parallel_size" if megatron else "policy.dtensor_cfg.context_parallel_size"
    model_parallel = layout.tp * layout.pp * layout.cp
    if layout.train_gpus < 1:
        report.error("policy.generation.colocated.resources", "non-colocated generation leaves no training GPUs")
        return None
    if layout.train_gpus % model_parallel:
        report.error(
            "cluster",
            f"training GPUs ({layout.train_gpus} = cluster.num_nodes x cluster.gpus_per_node"
            f"{'' if layout.colocated else ' - generation GPUs'}) must be divisible by TP x PP x CP "
            f"({layout.tp} x {layout.pp} x {layout.cp} = {model_parallel}; {tp_key}, {cp_key})",
        )
    if _get(cfg, "policy.generation.backend") == "vllm":
        gen_mp = layout.gen_tp * layout.gen_pp
        if gen_mp > layout.gpus_per_node:
            report.error(
                "policy.generation.vllm_cfg.tensor_parallel_size",
                f"vLLM TP x PP ({layout.gen_tp} x {layout.gen_pp}) must fit in one node "
                f"(cluster.gpus_per_node = {layout.gpus_per_node})",
            )
        elif layout.gen_gpus % gen_mp or layout.gen_gpus_per_node % gen_mp:
            report.error(
                "policy.generation.vllm_cfg.tensor_parallel_size",
                f"vLLM TP x PP ({gen_mp}) must divide the generation GPUs per node ({layout.gen_gpus_per_node})",
            )
    if megatron and layout.cp > 1 and not packing:
        report.error(
            "policy.sequence_packing.enabled",
            f"must be true when Megatron context parallelism is on ({cp_key} = {layout.cp})",
        )
    seq = _get(cfg, "policy.max_total_sequence_length")
    if type_matches(seq, "int"):
        multiple = layout.cp * math.lcm(2, layout.tp)
        if seq % multiple:
            report.error(
                "policy.max_total_sequence_length",
                f"must be divisible by CP x lcm(2, TP) = {layout.cp} x {math.lcm(2, layout.tp)} = {multiple}, "
                f"got {seq}",
            )
    pad = _get(cfg, "policy.make_sequence_length_divisible_by")
    if megatron and packing and type_matches(pad, "int") and pad >= 1:
        # NeMo RL pads every packed sequence to a multiple of make_sequence_length_divisible_by, which must be a
        # multiple of 2 x CP (CP > 1) times TP (TP > 1 with sequence parallelism).
        factor = (2 * layout.cp if layout.cp > 1 else 1) * (
            layout.tp if layout.tp > 1 and layout.sequence_parallel else 1
        )
        if pad % factor:
            report.error(
                "policy.make_sequence_length_divisible_by",
                f"must be a multiple of {factor} (2 x CP when CP > 1, times TP when sequence parallel), got {pad}",
            )
    if packing and type_matches(seq, "int"):
        mb_tokens = _get(cfg, "policy.sequence_packing.train_mb_tokens")
        if type_matches(mb_tokens, "int") and mb_tokens < seq:
            report.error(
                "policy.sequence_packing.train_mb_tokens",
                f"({mb_tokens}) must be >= policy.max_total_sequence_length ({seq}) so a full sequence fits",
            )
    return layout


def check_batch(cfg: Mapping, layout: Layout | None, report: Report) -> None:
    prompts, gens = _get(cfg, "grpo.num_prompts_per_step"), _get(cfg, "grpo.num_generations_per_prompt")
    gbs, mbs = _get(cfg, "policy.train_global_batch_size"), _get(cfg, "policy.train_micro_batch_size")
    if not all(type_matches(v, "int") and v >= 1 for v in (prompts, gens, gbs, mbs)):
        return
    rows = prompts * gens
    per_step = _get(cfg, "alfworld.sample_layout") == "per_step"
    if per_step:
        # ALFWorld per-step layout: one row per environment step, so a step has between prompts x gens and
        # prompts x gens x max_rollout_turns rows, padded with masked rows to whole global batches (optimizer updates)
        # by the loop; train_global_batch_size is the rows per update (verl-agent ppo_mini_batch_size 256).
        check_alfworld_section(cfg, report)
    elif rows % gbs:
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
    seq, new = _get(cfg, "policy.max_total_sequence_length"), _get(cfg, "policy.generation.max_new_tokens")
    if type_matches(seq, "int") and type_matches(new, "int"):
        if new >= seq:
            report.error(
                "policy.generation.max_new_tokens",
                f"({new}) must be < policy.max_total_sequence_length ({seq}), which also holds the prompt",
            )
        prompt = _get(cfg, "data.max_input_seq_length")
        if type_matches(prompt, "int") and prompt + new > seq:
            report.warn(
                "data.max_input_seq_length",
                f"prompt ({prompt}) + policy.generation.max_new_tokens ({new}) > policy.max_total_sequence_length "
                f"({seq}): long prompts get fewer new tokens than the cap",
            )


def check_alfworld_section(cfg: Mapping, report: Report) -> None:
    """The per-step ALFWorld loop's own checks (unknown ``alfworld`` keys, settings it would ignore, bad values)."""
    from holder_nemo.alfworld.nemo_rl_train import sample_layout

    try:
        sample_layout(cfg)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        report.error(field if message else "alfworld", message or str(exc))


def check_grpo_setup(cfg: Mapping, report: Report) -> None:
    """Conditions NeMo RL's GRPO ``setup()`` and ``Policy.__init__`` assert at start-up (reported here before any GPU
    is allocated)."""
    megatron = _enabled(cfg, "policy.megatron_cfg.enabled")
    validating = (
        (type_matches(_get(cfg, "grpo.val_period"), "int") and _get(cfg, "grpo.val_period") > 0)
        or _get(cfg, "grpo.val_at_start") is True
        or _get(cfg, "grpo.val_at_end") is True
    )
    if validating and not _get(cfg, "data.validation"):
        report.error(
            "data.validation",
            "a validation dataset is required when grpo.val_period > 0 or grpo.val_at_start/val_at_end is true",
        )
    tp_key = "megatron_cfg.tensor_model_parallel_size" if megatron else "dtensor_cfg.tensor_parallel_size"
    tp, policy = _get(cfg, "policy." + tp_key), _get(cfg, "policy", {})
    mbs, lbs = _get(cfg, "policy.train_micro_batch_size"), _get(cfg, "policy.logprob_batch_size")
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
    if megatron and _enabled(cfg, "policy.megatron_cfg.use_linear_ce_fusion_loss"):
        report.error(
            "policy.megatron_cfg.use_linear_ce_fusion_loss",
            "must be false: the fused linear-CE forward returns precomputed log-probs (at temperature 1), which "
            "NeMo RL v0.7.0's GRPO loss path (ClippedPGLossFn, and so HölderPO) does not support",
        )
    kl = _get(cfg, "loss_fn.reference_policy_kl_penalty")
    if _get(cfg, "grpo.skip_reference_policy_logprobs_calculation") is True and type_matches(kl, "float") and kl != 0:
        report.error(
            "grpo.skip_reference_policy_logprobs_calculation",
            f"true requires loss_fn.reference_policy_kl_penalty == 0, got {kl}",
        )


def check_checkpointing(cfg: Mapping, report: Report) -> None:
    if _enabled(cfg, "checkpointing.enabled"):
        directory = _get(cfg, "checkpointing.checkpoint_dir")
        if not isinstance(directory, str) or not directory.strip():
            report.error("checkpointing.checkpoint_dir", "must be a non-empty path when checkpointing.enabled is true")
    save_format = _get(cfg, "checkpointing.model_save_format")
    dtensor_v2 = _enabled(cfg, "policy.dtensor_cfg.enabled") and _enabled(cfg, "policy.dtensor_cfg._v2")
    if dtensor_v2:
        if save_format not in (None, "torch_save", "safetensors"):
            report.error(
                "checkpointing.model_save_format",
                f"must be 'torch_save', 'safetensors' or null with DTensor v2, got {save_format!r}",
            )
    elif save_format is not None:
        # Policy.save_checkpoint (lm_policy.py) raises at the first save: only the DTensor v2 worker takes a format;
        # the Megatron worker always writes Megatron's distributed checkpoint, DTensor v1 torch DCP.
        backend = "Megatron" if _enabled(cfg, "policy.megatron_cfg.enabled") else "DTensor v1"
        report.error(
            "checkpointing.model_save_format",
            f"must be null with the {backend} backend (only DTensor v2, policy.dtensor_cfg._v2: true, takes a "
            f"format; NeMo RL's Policy.save_checkpoint raises at the first save), got {save_format!r}",
        )
    metric = _get(cfg, "checkpointing.metric_name")
    if isinstance(metric, str) and not metric.startswith(("val:", "train:")):
        report.error("checkpointing.metric_name", f"must start with 'val:' or 'train:' (or be null), got {metric!r}")


def check_nemo_rl_recipe(cfg: Mapping) -> tuple[Report, Layout | None]:
    """All rules for a NeMo RL GRPO recipe given as a resolved plain dict."""
    report = Report()
    check_required_keys(cfg, report)
    check_holder_block(cfg, report, nemo_rl_defaults=True)
    check_schedule_length(cfg, report)
    layout = check_layout(cfg, report)
    check_batch(cfg, layout, report)
    check_grpo_setup(cfg, report)
    check_checkpointing(cfg, report)
    return report, layout
