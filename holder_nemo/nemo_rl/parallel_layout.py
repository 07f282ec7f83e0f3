"""The parallel layout of a NeMo RL recipe (GPUs, TP / PP / CP, generation GPUs) and the rules NeMo RL applies to it.

Rules (each reported with its dotted key): exactly one training backend; nodes x GPUs divisible by TP x PP x CP; vLLM
TP x PP fits a node and divides the generation GPUs; packing on when Megatron CP > 1; packing and dynamic batching
exclusive; sequence length divisible by CP x lcm(2, TP); Megatron packing pad factor (2 CP x TP with SP) divides
``make_sequence_length_divisible_by``; a packed micro-batch holds at least one full sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from holder_nemo.nemo_rl.recipe_keys import Report, enabled, get, type_matches


@dataclass(frozen=True)
class ParallelLayout:
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


def parallel_layout(cfg: Mapping) -> ParallelLayout | None:
    """The layout, or None when the keys it needs are missing or mistyped (reported elsewhere)."""
    nodes, gpn = get(cfg, "cluster.num_nodes"), get(cfg, "cluster.gpus_per_node")
    if not (type_matches(nodes, "int") and type_matches(gpn, "int")) or nodes < 1 or gpn < 1:
        return None
    if enabled(cfg, "policy.megatron_cfg.enabled"):
        prefix, backend = "policy.megatron_cfg.", "megatron"
        names = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size")
        tp, pp, cp = (get(cfg, prefix + n) for n in names)
    else:
        prefix, backend = "policy.dtensor_cfg.", "dtensor"
        tp, cp, pp = get(cfg, prefix + "tensor_parallel_size"), get(cfg, prefix + "context_parallel_size"), 1
    if not all(type_matches(v, "int") and v >= 1 for v in (tp, pp, cp)):
        return None
    gen_tp = get(cfg, "policy.generation.vllm_cfg.tensor_parallel_size", 1)
    gen_pp = get(cfg, "policy.generation.vllm_cfg.pipeline_parallel_size", 1)
    if not all(type_matches(v, "int") and v >= 1 for v in (gen_tp, gen_pp)):
        return None
    colocated = get(cfg, "policy.generation.colocated.enabled", True) is not False
    total = nodes * gpn
    train_gpus, gen_gpus, gen_gpn = total, total, gpn
    if not colocated:
        res_nodes = get(cfg, "policy.generation.colocated.resources.num_nodes") or 0
        res_gpn = get(cfg, "policy.generation.colocated.resources.gpus_per_node") or 0
        if nodes == 1:  # NeMo RL: on one node, generation takes resources.gpus_per_node of its GPUs
            gen_gpus, gen_gpn = res_gpn, res_gpn
        else:  # on several nodes, generation takes whole nodes
            gen_gpus = res_nodes * gpn
        train_gpus = total - gen_gpus
    return ParallelLayout(
        backend=backend,
        nodes=nodes,
        gpus_per_node=gpn,
        train_gpus=train_gpus,
        tp=tp,
        pp=pp,
        cp=cp,
        sequence_parallel=bool(get(cfg, prefix + "sequence_parallel", False)),
        gen_tp=gen_tp,
        gen_pp=gen_pp,
        gen_gpus=gen_gpus,
        gen_gpus_per_node=gen_gpn,
        colocated=colocated,
    )


def _check_switches(cfg: Mapping, report: Report) -> None:
    megatron, dtensor = enabled(cfg, "policy.megatron_cfg.enabled"), enabled(cfg, "policy.dtensor_cfg.enabled")
    if megatron == dtensor:
        state = "both enabled" if megatron else "neither enabled"
        report.error(
            "policy.megatron_cfg.enabled",
            f"exactly one training backend must be on (policy.megatron_cfg.enabled / policy.dtensor_cfg.enabled: "
            f"{state})",
        )
    if enabled(cfg, "policy.sequence_packing.enabled") and enabled(cfg, "policy.dynamic_batching.enabled"):
        report.error("policy.sequence_packing.enabled", "sequence packing and dynamic batching are mutually exclusive")


def _parallel_keys(megatron: bool) -> tuple[str, str]:
    """(TP key, CP key) of the training backend."""
    if megatron:
        return "policy.megatron_cfg.tensor_model_parallel_size", "policy.megatron_cfg.context_parallel_size"
    return "policy.dtensor_cfg.tensor_parallel_size", "policy.dtensor_cfg.context_parallel_size"


def _check_gpus(cfg: Mapping, layout: ParallelLayout, report: Report) -> None:
    """Training GPUs divisible by TP x PP x CP; vLLM's TP x PP fits a node and divides the generation GPUs."""
    tp_key, cp_key = _parallel_keys(layout.backend == "megatron")
    model_parallel = layout.tp * layout.pp * layout.cp
    if layout.train_gpus % model_parallel:
        report.error(
            "cluster",
            f"training GPUs ({layout.train_gpus} = cluster.num_nodes x cluster.gpus_per_node"
            f"{'' if layout.colocated else ' - generation GPUs'}) must be divisible by TP x PP x CP "
            f"({layout.tp} x {layout.pp} x {layout.cp} = {model_parallel}; {tp_key}, {cp_key})",
        )
    if get(cfg, "policy.generation.backend") != "vllm":
        return
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


def _check_sequences(cfg: Mapping, layout: ParallelLayout, report: Report) -> None:
    """Packing with Megatron CP; sequence length and packing pad factor against CP and TP; a packed micro-batch."""
    megatron, packing = layout.backend == "megatron", enabled(cfg, "policy.sequence_packing.enabled")
    _, cp_key = _parallel_keys(megatron)
    if megatron and layout.cp > 1 and not packing:
        report.error(
            "policy.sequence_packing.enabled",
            f"must be true when Megatron context parallelism is on ({cp_key} = {layout.cp})",
        )
    seq = get(cfg, "policy.max_total_sequence_length")
    if type_matches(seq, "int") and seq % (layout.cp * math.lcm(2, layout.tp)):
        multiple = layout.cp * math.lcm(2, layout.tp)
        report.error(
            "policy.max_total_sequence_length",
            f"must be divisible by CP x lcm(2, TP) = {layout.cp} x {math.lcm(2, layout.tp)} = {multiple}, got {seq}",
        )
    pad = get(cfg, "policy.make_sequence_length_divisible_by")
    if megatron and packing and type_matches(pad, "int") and pad >= 1:
        # NeMo RL pads every packed sequence to a multiple of make_sequence_length_divisible_by, which must be a
        # multiple of 2 x CP (CP > 1) times TP (TP > 1 with sequence parallelism).
        sp = layout.tp if layout.tp > 1 and layout.sequence_parallel else 1
        factor = (2 * layout.cp if layout.cp > 1 else 1) * sp
        if pad % factor:
            report.error(
                "policy.make_sequence_length_divisible_by",
                f"must be a multiple of {factor} (2 x CP when CP > 1, times TP when sequence parallel), got {pad}",
            )
    mb_tokens = get(cfg, "policy.sequence_packing.train_mb_tokens")
    if packing and type_matches(seq, "int") and type_matches(mb_tokens, "int") and mb_tokens < seq:
        report.error(
            "policy.sequence_packing.train_mb_tokens",
            f"({mb_tokens}) must be >= policy.max_total_sequence_length ({seq}) so a full sequence fits",
        )


def check_layout(cfg: Mapping, report: Report) -> ParallelLayout | None:
    """Every layout rule (module docstring); the layout, or None when it cannot be derived."""
    _check_switches(cfg, report)
    layout = parallel_layout(cfg)
    if layout is None:
        return None
    if layout.train_gpus < 1:
        report.error("policy.generation.colocated.resources", "non-colocated generation leaves no training GPUs")
        return None
    _check_gpus(cfg, layout, report)
    _check_sequences(cfg, layout, report)
    return layout
