"""The sizing block of ``holderpo recipe check``: what one GPU holds, what a checkpoint costs, what a step computes.

``size_recipe`` returns the block's lines and its warnings (a layout or a save that cannot fit); the caller reports
the warnings (errors with ``--strict``). The maths is in ``sizing.py``; the recipe's step in ``sizing_inputs.py``;
the Slurm entry's budgets in ``slurm_budget.py``; NeMo RL v0.7.0's behaviour behind each figure in docs/recipes.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from holder_nemo.nemo_rl.parallel_layout import ParallelLayout
from holder_nemo.recipe_check import sizing as sz
from holder_nemo.recipe_check.architectures import Architecture, resolve
from holder_nemo.recipe_check.sizing_inputs import (
    DTYPE_BYTES,
    SizingOptions,
    StepShape,
    describe_recompute,
    precision_bytes,
    step_shape,
)
from holder_nemo.recipe_check.sizing_time import budget_lines, checkpoint_size, compute_lines

_at = functools.partial(OmegaConf.select, default=None)  # the value at a dotted key, None when absent


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
    cfg: Mapping[str, Any], layout: ParallelLayout | None, options: SizingOptions | None = None, recipe: str = ""
) -> Sizing:
    """Sizing of a resolved recipe; ``layout`` None for the CPU reference run."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))  # dotted keys read with OmegaConf.select
    options = options or SizingOptions()
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
    cfg: Mapping, arch: Architecture, layout: ParallelLayout, shape: StepShape, options: SizingOptions, out: Sizing
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
    total = states.total + acts.total
    limit = options.gpu_memory_gib * sz.GIB
    out.add(
        "train/GPU",
        f"{gib(total)} GiB of {options.gpu_memory_gib:g}: weights {gib(states.weights)} + grads {gib(states.grads)}"
        f" + optimizer {gib(states.optimizer)} + activations {gib(acts.total)}",
    )
    out.add("", f"({how}; {recompute} recompute, {tokens:,.0f} tokens per micro-batch)")
    if total > limit:
        block = "policy.megatron_cfg" if layout.backend == "megatron" else "policy.dtensor_cfg"
        out.warn(
            block,
            f"the training side needs ~{gib(total)} GiB per GPU > --gpu-memory {options.gpu_memory_gib:g} GiB: raise "
            "TP / PP / CP, lower the micro-batch tokens, or turn on activation checkpointing",
        )


def _vllm_memory(
    cfg: Mapping, arch: Architecture, layout: ParallelLayout, shape: StepShape, options: SizingOptions, out: Sizing
) -> None:
    """vLLM takes ``gpu_memory_utilization`` x the GPU for weights + KV cache (its activation and CUDA-graph reserve
    come out of the KV part). Colocated, NeMo RL offloads the training side before vLLM wakes, and vLLM sleeps
    (weights to CPU, KV cache freed) while the training side runs."""
    util = float(_at(cfg, "policy.generation.vllm_cfg.gpu_memory_utilization", default=0.9) or 0.9)
    budget = util * options.gpu_memory_gib * sz.GIB
    w = DTYPE_BYTES.get(str(_at(cfg, "policy.generation.vllm_cfg.precision", default="bfloat16")), 2)
    weights = w * arch.parameters() / (layout.gen_tp * layout.gen_pp)
    kv_dtype = 1 if "fp8" in str(_at(cfg, "policy.generation.vllm_cfg.kv_cache_dtype", default="auto")) else w
    per_token = sz.kv_cache_bytes_per_token(arch, layout.gen_tp, kv_dtype) / layout.gen_pp
    kv = budget - weights
    engines = max(1, layout.gen_gpus // (layout.gen_tp * layout.gen_pp))
    where = "colocated, training side offloaded" if layout.colocated else f"on {layout.gen_gpus} own GPUs"
    out.add(
        "vLLM/GPU",
        f"{util:g} x {options.gpu_memory_gib:g} = {gib(budget)} GiB, {where}: weights "
        f"{gib(weights)} + KV cache {gib(max(kv, 0.0))}",
    )
    if kv <= 0:
        out.warn(
            "policy.generation.vllm_cfg.gpu_memory_utilization",
            f"{util:g} x {options.gpu_memory_gib:g} GiB leaves no KV cache after the weights ({gib(weights)} GiB per "
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


def _reference(cfg: Mapping, arch: Architecture, options: SizingOptions, recipe: str, out: Sizing) -> None:
    """The CPU reference run (``holderpo train``): fp32 weights, gradients and AdamW state; torch.save checkpoints."""
    states = sz.model_state_bytes(arch.parameters(), param_bytes=4, grad_bytes=4, optimizer_bytes=8)
    out.add("memory", f"CPU, fp32 AdamW: {binary(states.total)} of model states (16 B/param)")
    save_s = checkpoint_size(cfg, arch, "reference", options, out)
    budget_lines(recipe, 1, False, None, save_s, None, options, out)
