"""The sizing block of ``holderpo recipe check``: what one GPU holds, what a checkpoint costs, what a step computes.

``size_recipe`` returns the block's lines and its warnings (a layout or a save that cannot fit); the caller reports
the warnings (errors with ``--strict``). The maths is in ``sizing.py``; the Slurm entry's budgets in
``slurm_budget.py``; NeMo RL v0.7.0's behaviour behind each figure in docs/recipes.md.

What sizing reads from a resolved recipe (the shape of one GRPO step) and from the command line (the hardware).
Keys and what NeMo RL v0.7.0 does with them (docs/recipes.md, "Sizing a run"): rows per step = prompts x
generations (x ``grpo.max_rollout_turns`` for ALFWorld's per-step layout, one row per environment step); each row
<= ``policy.max_total_sequence_length`` tokens; a training micro-batch holds ``sequence_packing.train_mb_tokens``
(packing), ``dynamic_batching.train_mb_tokens`` (dynamic batching) or micro-batch x sequence length tokens; GRPO runs
one log-prob forward for the old policy (unless ``loss_fn.force_on_policy_ratio`` without
``grpo.seq_logprob_error_threshold``) and one for the reference policy (unless
``grpo.skip_reference_policy_logprobs_calculation``); validation generates ``grpo.max_val_samples`` rows every
``grpo.val_period`` steps, at the start and at the end when asked; a checkpoint every ``save_period`` steps and at
the last step.

Checkpoint formats NeMo RL v0.7.0 writes (docs/recipes.md, "Sizing a run"): the Megatron worker a Megatron
distributed checkpoint (16-bit weights; with ``save_optimizer`` the distributed optimizer's fp32 master weights and
Adam moments); the DTensor v2 worker its fp32 master weights (safetensors with ``model_save_format: safetensors``,
plus a consolidated copy with ``save_consolidated``; torch DCP otherwise) and the fp32 Adam moments; the reference
run ``torch.save`` of its fp32 model and AdamW state.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from holder_nemo.nemo_rl.parallel_layout import ParallelLayout, is_int
from holder_nemo.recipe_check import sizing as sz
from holder_nemo.recipe_check.architectures import Architecture, resolve
from holder_nemo.recipe_check.slurm_budget import SlurmBudget, find_entry, format_slurm_time, slurm_budget

_at = functools.partial(OmegaConf.select, default=None)  # the value at a dotted key, None when absent

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
H100_BF16_TFLOPS = 989.5  # NeMo RL v0.7.0 flops_tracker.THEORETICAL_TFLOPS["NVIDIA H100 80GB HBM3", bf16]: 1979 / 2


def _bounded(name: str, low: float, high: float | None = None, integer: bool = False):
    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (value > low and (high is None or value <= high)):
            upper = f" and <= {high:g}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"{name} must be > {low:g}{upper}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sizing options of ``holderpo recipe check``."""
    group = parser.add_argument_group("sizing (estimates printed after the summary)")
    add = group.add_argument
    add("--gpu-memory", type=_bounded("--gpu-memory", 0), default=80.0, metavar="GIB", help="GPU memory (default 80)")
    add(
        "--fs-bandwidth",
        type=_bounded("--fs-bandwidth", 0),
        default=1.0,
        metavar="GB/S",
        help="checkpoint write bandwidth of the run's filesystem, all writers together (default 1.0 GB/s)",
    )
    add(
        "--mfu",
        type=_bounded("--mfu", 0, 1),
        metavar="F",
        help="model FLOPs utilisation of the training passes (e.g. a run's performance/train_fp_utilization)",
    )
    add("--gen-mfu", type=_bounded("--gen-mfu", 0, 1), metavar="F", help="MFU of generation (default: --mfu)")
    add(
        "--peak-tflops",
        type=_bounded("--peak-tflops", 0),
        default=H100_BF16_TFLOPS,
        metavar="T",
        help=f"dense bf16 peak per GPU (default {H100_BF16_TFLOPS:g}, H100 SXM)",
    )
    add(
        "--fill",
        type=_bounded("--fill", 0, 1),
        default=1.0,
        metavar="F",
        help="mean row length / policy.max_total_sequence_length (default 1.0: every row at the limit)",
    )
    add(
        "--time-steps",
        type=_bounded("--time-steps", 0, integer=True),
        metavar="N",
        help="steps the suggested --time covers (default grpo.max_num_steps)",
    )


def _int(cfg: Mapping, path: str, default: int = 0) -> int:
    value = _at(cfg, path, default=default)
    return value if is_int(value) else default


@dataclass(frozen=True)
class StepShape:
    """One GRPO step of a NeMo RL recipe, as upper bounds, and the run's schedule of saves and validations."""

    rows: int  # rows trained per step
    concurrent: int  # rows generated together (one environment step's worth for the per-step layout)
    seq: int  # tokens per row, at most
    new_tokens: int  # generated tokens per row, at most
    mb_tokens: int  # tokens per training micro-batch, before CP
    microbatches: int  # micro-batches per optimizer update on one DP rank
    logprob_passes: int
    steps: int  # grpo.max_num_steps
    save_period: int  # 0: no checkpoints
    val_period: int  # 0: no periodic validation
    val_at_start: bool
    val_at_end: bool
    val_rows: int

    @property
    def tokens(self) -> int:
        return self.rows * self.seq

    def saves(self, steps: int) -> int:
        """Checkpoints in the first ``steps`` steps: every ``save_period`` steps and after the last one."""
        return math.ceil(steps / self.save_period) if self.save_period else 0

    def validations(self, steps: int) -> int:
        """Validations in the first ``steps`` steps: every ``val_period``, at the start, and at the end if asked."""
        periodic = steps // self.val_period if self.val_period else 0
        end = self.val_at_end and steps == self.steps and not (self.val_period and steps % self.val_period == 0)
        return periodic + int(self.val_at_start) + int(end)


def _mb_tokens(cfg: Mapping, seq: int) -> int:
    for block in ("policy.sequence_packing", "policy.dynamic_batching"):
        if _at(cfg, f"{block}.enabled", default=False) is True and _int(cfg, f"{block}.train_mb_tokens"):
            return _int(cfg, f"{block}.train_mb_tokens")
    return _int(cfg, "policy.train_micro_batch_size", 1) * seq


def one_row_per_environment_step(cfg: Mapping) -> bool:
    """ALFWorld's training loop (``env.alfworld``) trains one row per environment step, up to
    ``grpo.max_rollout_turns`` rows per episode; ``grpo_train`` trains one row per trajectory."""
    return _at(cfg, "env.alfworld") is not None


def step_shape(cfg: Mapping, dp: int) -> StepShape:
    """The step bounds of a NeMo RL recipe; ``dp``: data-parallel ranks of the training side."""
    turns = _int(cfg, "grpo.max_rollout_turns", 1) if one_row_per_environment_step(cfg) else 1
    episodes = _int(cfg, "grpo.num_prompts_per_step") * _int(cfg, "grpo.num_generations_per_prompt")
    seq = _int(cfg, "policy.max_total_sequence_length")
    saving = _at(cfg, "checkpointing.enabled", default=False) is True
    prev = not (
        _at(cfg, "loss_fn.force_on_policy_ratio") is True and _at(cfg, "grpo.seq_logprob_error_threshold") is None
    )
    reference = _at(cfg, "grpo.skip_reference_policy_logprobs_calculation") is not True
    mbs = max(1, _int(cfg, "policy.train_micro_batch_size", 1))
    return StepShape(
        rows=episodes * turns,
        concurrent=episodes,
        seq=seq,
        new_tokens=min(_int(cfg, "policy.generation.max_new_tokens", seq), seq),
        mb_tokens=_mb_tokens(cfg, seq),
        microbatches=max(1, _int(cfg, "policy.train_global_batch_size", mbs) // (max(1, dp) * mbs)),
        logprob_passes=int(prev) + int(reference),
        steps=_int(cfg, "grpo.max_num_steps"),
        save_period=max(0, _int(cfg, "checkpointing.save_period")) if saving else 0,
        val_period=max(0, _int(cfg, "grpo.val_period")),
        val_at_start=_at(cfg, "grpo.val_at_start") is True,
        val_at_end=_at(cfg, "grpo.val_at_end") is True,
        val_rows=_int(cfg, "grpo.max_val_samples") * turns,
    )


def precision_bytes(cfg: Mapping) -> int:
    return DTYPE_BYTES.get(str(_at(cfg, "policy.precision", default="bfloat16")), 2)


def describe_recompute(cfg: Mapping, backend: str) -> str:
    """none | selective | full, as the backend applies its activation-checkpointing keys."""
    prefix = "policy.megatron_cfg" if backend == "megatron" else "policy.dtensor_cfg"
    if _at(cfg, f"{prefix}.activation_checkpointing", default=False) is not True:
        return "none"
    if backend == "megatron":  # NeMo RL: full -> recompute_method uniform, one layer per checkpoint
        return str(_at(cfg, "policy.megatron_cfg.recompute_granularity", default="full") or "full")
    return "full"  # DTensor: every decoder layer checkpointed


@dataclass
class Sizing:
    """The block's ``(label, text)`` lines and its ``(key, message)`` warnings."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.lines.append((label, text))

    def warn(self, key: str, message: str) -> None:
        self.warnings.append((key, message))

    def text(self) -> str:
        width = max((len(label) for label, _ in self.lines), default=0)
        width = max(width, 11)  # the summary's label column above ("tokens/step")
        body = "\n".join(f"  {label:<{width}}  {text}" for label, text in self.lines)
        return 'sizing (estimates, docs/recipes.md "Sizing a run"):\n' + body


def gib(value: float) -> str:
    return f"{value / sz.GIB:.1f}"


def count(value: float) -> str:
    """A parameter count: 7.62 B, 134.5 M, or exact below a million."""
    if value >= 1e9:
        return f"{value / 1e9:.2f} B"
    return f"{value / 1e6:.1f} M" if value >= 1e6 else f"{value:,.0f}"


def binary(value: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value / 2**10:,.1f} KiB"


def size_recipe(
    cfg: Mapping[str, Any], layout: ParallelLayout | None, options: argparse.Namespace, recipe: str
) -> Sizing:
    """Sizing of a resolved recipe; ``layout`` None for the CPU reference run; ``options`` the parsed command line
    (``add_arguments``: the hardware and the guesses)."""
    cfg = OmegaConf.create(dict(cfg))  # dotted keys read with OmegaConf.select
    out = Sizing()
    arch, origin = resolve(_at(cfg, "policy.model_name"), _at(cfg, "policy.tiny_model"))
    if arch is None:
        out.add("sizing", f"skipped: {origin}")
        return out
    out.add("parameters", f"{count(arch.parameters())} ({arch.describe()}; {origin})")
    if layout is None:
        _reference(cfg, arch, options, recipe, out)
        return out
    shape = step_shape(cfg, layout.dp)
    _training_memory(cfg, arch, layout, shape, options, out)
    if _at(cfg, "policy.generation.backend") == "vllm":
        _vllm_memory(cfg, arch, layout, shape, options, out)
    save_s = checkpoint_size(cfg, arch, layout.backend, options, out)
    timing = compute_lines(arch, shape, layout, options, out)
    budget_lines(recipe, layout.nodes, True, shape, save_s, timing, options, out)
    return out


def _model_states(cfg: Mapping, arch: Architecture, layout: ParallelLayout) -> tuple[sz.ModelStates, str]:
    """Weights, gradients and optimizer state on one training GPU, and how they are held."""
    w = precision_bytes(cfg)
    shards = layout.dp * layout.cp
    if layout.backend == "megatron":
        opt = "policy.megatron_cfg.optimizer."
        distributed = _at(cfg, opt + "use_distributed_optimizer", default=False) is True
        fp32_grads = _at(cfg, "policy.megatron_cfg.distributed_data_parallel_config.grad_reduce_in_fp32") is True
        adam = sz.MASTER_ADAM_BYTES if w < 4 else 8  # fp32 training keeps no separate master copy
        states = sz.model_state_bytes(
            sz.megatron_params_per_gpu(arch, layout.tp, layout.pp),
            param_bytes=w,
            grad_bytes=4 if fp32_grads else w,
            optimizer_bytes=adam,
            shards=shards,
            stage=1 if distributed else 0,
        )
        if _at(cfg, opt + "optimizer_cpu_offload") is True:
            on_gpu = 1 - float(_at(cfg, opt + "optimizer_offload_fraction", default=0.0) or 0.0)
            states = sz.ModelStates(states.weights, states.grads, states.optimizer * on_gpu)
        where = f"over DP x CP = {shards}" if distributed else "replicated"
        return states, f"{4 if fp32_grads else w} B grads, Adam {adam} B/param {where}"
    # DTensor (FSDP2): fp32 master weights, fp32 gradients and Adam state sharded over DP x CP (NeMo RL loads the
    # model in fp32); each layer's 16-bit weights are gathered for its forward and backward (two layers in flight).
    states = sz.model_state_bytes(
        arch.parameters() / layout.tp, param_bytes=4, grad_bytes=4, optimizer_bytes=8, shards=shards, stage=3
    )
    if _at(cfg, "policy.dtensor_cfg.cpu_offload") is True:
        states = sz.ModelStates(0.0, 0.0, 0.0)
    head = arch.embedding_params() * (1 if arch.tied_embeddings else 2)
    gathered = w * (2 * (arch.layer_matmul_params() + arch.layer_small_params()) + head) / layout.tp
    states = sz.ModelStates(states.weights + gathered, states.grads, states.optimizer)
    return states, f"FSDP2: fp32 weights, grads, Adam over DP x CP = {shards}"


def _training_memory(
    cfg: Mapping, arch: Architecture, layout: ParallelLayout, shape: StepShape, options: argparse.Namespace, out: Sizing
) -> None:
    states, how = _model_states(cfg, arch, layout)
    recompute = describe_recompute(cfg, layout.backend)
    tokens = shape.mb_tokens / layout.cp
    acts = sz.activation_bytes(
        arch,
        tokens,
        tp=layout.tp,
        pp=layout.pp,
        sequence_parallel=layout.sequence_parallel,
        recompute=recompute,
        act_bytes=precision_bytes(cfg),
        microbatches=shape.microbatches,
    )
    total = states.total + acts
    limit = options.gpu_memory * sz.GIB
    out.add(
        "train/GPU",
        f"{gib(total)} GiB of {options.gpu_memory:g}: weights {gib(states.weights)} + grads {gib(states.grads)}"
        f" + optimizer {gib(states.optimizer)} + activations {gib(acts)}",
    )
    out.add("", f"({how}; {recompute} recompute, {tokens:,.0f} tokens per micro-batch)")
    if total > limit:
        block = "policy.megatron_cfg" if layout.backend == "megatron" else "policy.dtensor_cfg"
        out.warn(
            block,
            f"the training side needs ~{gib(total)} GiB per GPU > --gpu-memory {options.gpu_memory:g} GiB: raise "
            "TP / PP / CP, lower the micro-batch tokens, or turn on activation checkpointing",
        )


def _vllm_memory(
    cfg: Mapping, arch: Architecture, layout: ParallelLayout, shape: StepShape, options: argparse.Namespace, out: Sizing
) -> None:
    """vLLM takes ``gpu_memory_utilization`` x the GPU for weights + KV cache (its activation and CUDA-graph reserve
    come out of the KV part). Colocated, NeMo RL offloads the training side before vLLM wakes, and vLLM sleeps
    (weights to CPU, KV cache freed) while the training side runs."""
    util = float(_at(cfg, "policy.generation.vllm_cfg.gpu_memory_utilization", default=0.9) or 0.9)
    budget = util * options.gpu_memory * sz.GIB
    w = DTYPE_BYTES.get(str(_at(cfg, "policy.generation.vllm_cfg.precision", default="bfloat16")), 2)
    weights = w * arch.parameters() / (layout.gen_tp * layout.gen_pp)
    kv_dtype = 1 if "fp8" in str(_at(cfg, "policy.generation.vllm_cfg.kv_cache_dtype", default="auto")) else w
    per_token = sz.kv_cache_bytes_per_token(arch, layout.gen_tp, kv_dtype) / layout.gen_pp
    kv = budget - weights
    engines = max(1, layout.gen_gpus // (layout.gen_tp * layout.gen_pp))
    where = "colocated, training side offloaded" if layout.colocated else f"on {layout.gen_gpus} own GPUs"
    out.add(
        "vLLM/GPU",
        f"{util:g} x {options.gpu_memory:g} = {gib(budget)} GiB, {where}: weights "
        f"{gib(weights)} + KV cache {gib(max(kv, 0.0))}",
    )
    if kv <= 0:
        out.warn(
            "policy.generation.vllm_cfg.gpu_memory_utilization",
            f"{util:g} x {options.gpu_memory:g} GiB leaves no KV cache after the weights ({gib(weights)} GiB per "
            "GPU): raise it or vLLM's tensor_parallel_size",
        )
        return
    tokens = kv / per_token
    fits = tokens / shape.seq if shape.seq else 0.0
    out.add(
        "",
        f"({per_token / 1024:.0f} KiB/token: {tokens / 1e3:,.0f}k tokens = {fits:,.0f} rows of {shape.seq:,} per "
        f"engine, which generates {math.ceil(shape.concurrent / engines):,} at once)",
    )


def _reference(cfg: Mapping, arch: Architecture, options: argparse.Namespace, recipe: str, out: Sizing) -> None:
    """The CPU reference run (``holderpo train``): fp32 weights, gradients and AdamW state; torch.save checkpoints."""
    states = sz.model_state_bytes(arch.parameters(), param_bytes=4, grad_bytes=4, optimizer_bytes=8)
    out.add("memory", f"CPU, fp32 AdamW: {binary(states.total)} of model states (16 B/param)")
    save_s = checkpoint_size(cfg, arch, "reference", options, out)
    budget_lines(recipe, 1, False, None, save_s, None, options, out)


@dataclass(frozen=True)
class Timing:
    """Seconds per step and per validation at the given MFUs, and the GPUs they occupy."""

    step_s: float
    train_s: float
    gen_s: float
    val_s: float
    gpus: int


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" if value < 3600 else f"{value / 3600:,.1f} h"


def _flops(value: float) -> str:
    return f"{value:.3g}".replace("e+", "e")


def _size(value: float) -> str:
    """Bytes in decimal units (filesystems quote GB/s)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if value >= scale:
            return f"{value / scale:,.3g} {unit}"
    return f"{value / 1e3:,.3g} kB"


def checkpoint_size(
    cfg: Mapping[str, Any], arch: Architecture, backend: str, options: argparse.Namespace, out: Sizing
) -> float | None:
    """Adds the checkpoint line; returns the seconds one save takes at ``--fs-bandwidth``, None when off."""
    if _at(cfg, "checkpointing.enabled") is not True:  # required by both schemas
        out.add("checkpoint", "off (checkpointing.enabled)")
        return None
    params = arch.parameters()
    optimizer = _at(cfg, "checkpointing.save_optimizer", default=True) is not False or backend == "reference"
    if backend == "megatron":
        weight_bytes, copies = precision_bytes(cfg), 1
        adam = sz.MASTER_ADAM_BYTES if weight_bytes < 4 else 8
        what = f"Megatron dist-ckpt, {8 * weight_bytes}-bit weights" + (" + fp32 optimizer" if optimizer else "")
    else:
        fmt = _at(cfg, "checkpointing.model_save_format")
        v2 = backend == "dtensor" and _at(cfg, "policy.dtensor_cfg._v2") is True
        consolidated = v2 and fmt == "safetensors" and _at(cfg, "checkpointing.save_consolidated") is True
        weight_bytes, copies, adam = 4, 2 if consolidated else 1, 8
        what = {"reference": "torch.save fp32 model"}.get(backend, f"{fmt or 'torch DCP'} fp32 weights")
        what += (" (+ consolidated copy)" if consolidated else "") + (" + Adam moments" if optimizer else "")
    per_param = weight_bytes * copies + (adam if optimizer else 0)
    size = per_param * params
    save_s = size / (options.fs_bandwidth * sz.GB)
    out.add(
        "checkpoint",
        f"{what}: {_size(size)} ({per_param} B/param); {_seconds(save_s)} at "
        f"{options.fs_bandwidth:g} GB/s (--fs-bandwidth)",
    )
    return save_s


def compute_lines(
    arch: Architecture, shape: StepShape, layout: ParallelLayout, options: argparse.Namespace, out: Sizing
) -> Timing | None:
    """Adds the per-step tokens and FLOPs; with ``--mfu`` returns the step's time."""
    length = options.fill * shape.seq
    forward = sz.forward_flops(arch, length)
    generate = sz.forward_flops(arch, length, logit_tokens=options.fill * shape.new_tokens)
    # training = forward + backward = 3 x forward (recomputation not counted, as in NeMo RL's MFU)
    train, logprobs, gen = shape.rows * 3 * forward, shape.rows * shape.logprob_passes * forward, shape.rows * generate
    tokens = f"<= {shape.tokens:,}" if options.fill == 1 else f"~ {shape.rows * length:,.0f} (--fill {options.fill:g})"
    out.add(
        "per step",
        f"{tokens} tokens ({shape.rows:,} rows x {length:,.0f}): FLOPs train {_flops(train)} + log-probs "
        f"{_flops(logprobs)} ({shape.logprob_passes} pass{'es' if shape.logprob_passes != 1 else ''}) + generation "
        f"{_flops(gen)}",
    )
    if options.mfu is None:
        return None
    gen_mfu = options.gen_mfu or options.mfu
    peak = options.peak_tflops * 1e12
    train_s = (train + logprobs) / (layout.train_gpus * peak * options.mfu)
    gen_s = gen / (layout.gen_gpus * peak * gen_mfu)
    val_s = shape.val_rows * generate / (layout.gen_gpus * peak * gen_mfu)
    return Timing(train_s + gen_s, train_s, gen_s, val_s, layout.nodes * layout.gpus_per_node)


def _run_seconds(steps: int, shape: StepShape, timing: Timing, save_s: float | None) -> float:
    """``steps`` steps with the saves and validations the recipe schedules in them."""
    return steps * timing.step_s + shape.saves(steps) * (save_s or 0.0) + shape.validations(steps) * timing.val_s


def _time_lines(
    shape: StepShape,
    timing: Timing,
    save_s: float | None,
    budget: SlurmBudget | None,
    options: argparse.Namespace,
    out: Sizing,
) -> None:
    gen_mfu = f", generation {options.gen_mfu:g}" if options.gen_mfu else ""
    run_s = _run_seconds(shape.steps, shape, timing, save_s)
    out.add(
        "time",
        f"step ~ {_seconds(timing.step_s)} (train {timing.train_s:,.0f} s + generation {timing.gen_s:,.0f} s)"
        f" at MFU {options.mfu:g}{gen_mfu} of {options.peak_tflops:g} TFLOPS/GPU",
    )
    out.add(
        "",
        f"{shape.steps} steps + {shape.saves(shape.steps)} saves + {shape.validations(shape.steps)} validations ~ "
        f"{_seconds(run_s)} = "
        f"{run_s * timing.gpus / 3600:,.0f} GPU-h",
    )
    steps = options.time_steps or shape.steps
    margin = budget.signal_margin_s if budget else 0
    text = f">= {format_slurm_time(_run_seconds(steps, shape, timing, save_s) + margin)} for {steps} steps"
    text += f" + the {margin} s signal margin (+ start-up)" if budget else " (+ start-up)"
    if budget and budget.time_limit_s:
        per_attempt = (budget.time_limit_s - margin) * shape.steps / max(run_s, 1e-9)
        attempts = math.ceil(shape.steps / per_attempt) if per_attempt >= 1 else None
        text += f"; at {format_slurm_time(budget.time_limit_s)}: ~ {per_attempt:,.0f} steps per attempt"
        text += f", {attempts} attempts" if attempts else ""
        if attempts is None or attempts > budget.max_restarts + 1:
            out.warn(
                "HOLDERPO_MAX_RESTARTS",
                f"{budget.entry} at --time {format_slurm_time(budget.time_limit_s)} needs "
                f"{'more than ' + str(budget.max_restarts + 1) if attempts is None else attempts} attempts for "
                f"{shape.steps} steps, HOLDERPO_MAX_RESTARTS {budget.max_restarts} allows "
                f"{budget.max_restarts + 1}: raise one of them",
            )
    out.add("--time", text)


def budget_lines(
    recipe: str,
    nodes: int,
    nemo_rl: bool,
    shape: StepShape | None,
    save_s: float | None,
    timing: Timing | None,
    options: argparse.Namespace,
    out: Sizing,
) -> None:
    """Adds the Slurm entry's budgets and (with ``--mfu``) the time lines; warns when a save cannot fit them."""
    found = find_entry(recipe, nodes, nemo_rl)
    budget = slurm_budget(*found) if found else None
    if budget is None:
        out.add("Slurm", "no entry in slurm/ runs this kind of recipe")
    else:
        how = "" if budget.matched else " (its recipe swapped by HOLDERPO_RECIPE)"
        save_margin = f", HOLDERPO_SAVE_MARGIN_S {budget.save_margin_s} s" if budget.save_margin_s is not None else ""
        out.add(
            "Slurm",
            f"{budget.entry}{how}: --time {format_slurm_time(budget.time_limit_s)}, --signal margin "
            f"{budget.signal_margin_s} s",
        )
        out.add(
            "",
            f"(HOLDERPO_CKPT_TIMEOUT_S {budget.ckpt_timeout_s} s{save_margin}, HOLDERPO_MAX_RESTARTS "
            f"{budget.max_restarts})",
        )
        _check_save(budget, save_s, timing, out)
    if timing is not None and shape is not None:
        _time_lines(shape, timing, save_s, budget, options, out)
    elif shape is not None:
        out.add("time", "pass --mfu (model FLOPs utilisation, e.g. a run's train_fp_utilization) for step time")


def _check_save(budget: SlurmBudget, save_s: float | None, timing: Timing | None, out: Sizing) -> None:
    if save_s is None:
        return
    if save_s > budget.signal_margin_s:
        out.warn(
            "#SBATCH --signal",
            f"one save (~{save_s:,.0f} s) cannot fit in {budget.entry}'s signal margin "
            f"({budget.signal_margin_s} s): raise it or --fs-bandwidth",
        )
    if budget.save_margin_s is not None and save_s > budget.save_margin_s:
        out.warn(
            "HOLDERPO_SAVE_MARGIN_S",
            f"one save (~{save_s:,.0f} s) cannot fit in the driver's deadline margin ({budget.save_margin_s} s)",
        )
    need = save_s + (timing.step_s if timing else 0.0)
    if need > budget.ckpt_timeout_s:
        what = "one step + one save" if timing else "one save"
        out.warn(
            "HOLDERPO_CKPT_TIMEOUT_S",
            f"after a stop request the driver needs up to {what} (~{need:,.0f} s) > "
            f"HOLDERPO_CKPT_TIMEOUT_S {budget.ckpt_timeout_s} s of {budget.entry}",
        )
