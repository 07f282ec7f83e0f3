"""Checkpoint size and save time, FLOPs and time per step, and how both fit the Slurm entry's budgets.

Checkpoint formats NeMo RL v0.7.0 writes (docs/recipes.md, "Sizing a run"): the Megatron worker a Megatron
distributed checkpoint (16-bit weights; with ``save_optimizer`` the distributed optimizer's fp32 master weights and
Adam moments); the DTensor v2 worker its fp32 master weights (safetensors with ``model_save_format: safetensors``,
plus a consolidated copy with ``save_consolidated``; torch DCP otherwise) and the fp32 Adam moments; the reference
run ``torch.save`` of its fp32 model and AdamW state.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from holder_nemo.recipe_check import sizing as sz
from holder_nemo.recipe_check.architectures import Architecture
from holder_nemo.recipe_check.sizing_inputs import SizingOptions, StepShape, precision_bytes
from holder_nemo.recipe_check.slurm_budget import SlurmBudget, find_entry, format_slurm_time, slurm_budget

_at = functools.partial(OmegaConf.select, default=None)  # the value at a dotted key, None when absent

if TYPE_CHECKING:
    from holder_nemo.nemo_rl.parallel_layout import ParallelLayout
    from holder_nemo.recipe_check.sizing_report import Sizing


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
    cfg: Mapping[str, Any], arch: Architecture, backend: str, options: SizingOptions, out: Sizing
) -> float | None:
    """Adds the checkpoint line; returns the seconds one save takes at ``--fs-bandwidth``, None when off."""
    if _at(cfg, "checkpointing.enabled", default=backend == "reference") is not True:
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
    save_s = size / (options.fs_bandwidth_gbps * sz.GB)
    out.add(
        "checkpoint",
        f"{what}: {_size(size)} ({per_param} B/param); {_seconds(save_s)} at "
        f"{options.fs_bandwidth_gbps:g} GB/s (--fs-bandwidth)",
    )
    return save_s


def compute_lines(
    arch: Architecture, shape: StepShape, layout: ParallelLayout, options: SizingOptions, out: Sizing
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
    options: SizingOptions,
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
    options: SizingOptions,
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
