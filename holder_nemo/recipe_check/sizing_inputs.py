"""What sizing reads from a resolved recipe (the shape of one GRPO step) and from the command line (the hardware).

Keys and what NeMo RL v0.7.0 does with them (docs/recipes.md, "Sizing a run"): rows per step = prompts x
generations (x ``grpo.max_rollout_turns`` for ALFWorld's per-step layout, one row per environment step); each row
<= ``policy.max_total_sequence_length`` tokens; a training micro-batch holds ``sequence_packing.train_mb_tokens``
(packing), ``dynamic_batching.train_mb_tokens`` (dynamic batching) or micro-batch x sequence length tokens; GRPO runs
one log-prob forward for the old policy (unless ``loss_fn.force_on_policy_ratio`` without
``grpo.seq_logprob_error_threshold``) and one for the reference policy (unless
``grpo.skip_reference_policy_logprobs_calculation``); validation generates ``grpo.max_val_samples`` rows every
``grpo.val_period`` steps, at the start and at the end when asked; a checkpoint every ``save_period`` steps and at
the last step.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import OmegaConf

_at = functools.partial(OmegaConf.select, default=None)  # the value at a dotted key, None when absent

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
H100_BF16_TFLOPS = 989.5  # NeMo RL v0.7.0 flops_tracker.THEORETICAL_TFLOPS["NVIDIA H100 80GB HBM3", bf16]: 1979 / 2


@dataclass(frozen=True)
class SizingOptions:
    """Hardware and guesses from the command line (``holderpo recipe check --help``)."""

    gpu_memory_gib: float = 80.0
    fs_bandwidth_gbps: float = 1.0
    mfu: float | None = None
    gen_mfu: float | None = None
    peak_tflops: float = H100_BF16_TFLOPS
    fill: float = 1.0
    time_steps: int | None = None


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


def options_from_args(args: argparse.Namespace) -> SizingOptions:
    return SizingOptions(
        gpu_memory_gib=args.gpu_memory,
        fs_bandwidth_gbps=args.fs_bandwidth,
        mfu=args.mfu,
        gen_mfu=args.gen_mfu,
        peak_tflops=args.peak_tflops,
        fill=args.fill,
        time_steps=args.time_steps,
    )


def _int(cfg: Mapping, path: str, default: int = 0) -> int:
    value = _at(cfg, path, default=default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


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
