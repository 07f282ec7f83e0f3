"""The parallel layout of a NeMo RL recipe (GPUs, TP / PP / CP, generation GPUs) and the rules NeMo RL applies to it.

Rules (each reported with its dotted key), mirroring NeMo RL v0.7.0: exactly one training backend
(``Policy.__init__``); cluster sizes >= 1; dedicated generation resources as ``grpo.setup`` requires them (one node:
``colocated.resources.gpus_per_node`` > 0 and ``num_nodes`` null or 1, leaving training GPUs; several nodes: whole
nodes, ``resources.gpus_per_node`` = ``cluster.gpus_per_node``, leaving training nodes); training GPUs divisible by
TP x PP x CP (``Policy.__init__``); vLLM TP x PP fits a node and divides the generation GPUs
(``VllmGeneration.__init__``); packing on when Megatron CP > 1; packing and dynamic batching exclusive; sequence length
divisible by CP x lcm(2, TP); Megatron packing pad factor (2 CP x TP with SP) divides
``make_sequence_length_divisible_by``; a packed micro-batch holds at least one full sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from holder_nemo.config.errors import Report


def is_int(value: object) -> bool:
    """An integer of the recipe (YAML's true/false are Python ints too, and no count or size may be one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_on(cfg: DictConfig, key: str) -> bool:
    """The flag at a dotted key is exactly true (absent, null or a string is off)."""
    return OmegaConf.select(cfg, key, default=None) is True


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


def _parallel_keys(megatron: bool) -> tuple[str, str, str | None]:
    """(TP key, CP key, PP key) of the training backend (DTensor has no pipeline parallelism)."""
    if megatron:
        prefix = "policy.megatron_cfg."
        return (
            prefix + "tensor_model_parallel_size",
            prefix + "context_parallel_size",
            prefix + "pipeline_model_parallel_size",
        )
    return "policy.dtensor_cfg.tensor_parallel_size", "policy.dtensor_cfg.context_parallel_size", None


def _sizes(cfg: DictConfig, keys: dict[str, str | None], report: Report) -> dict[str, int] | None:
    """The sizes at ``keys`` (an absent optional key counts 1); None when one is not an integer >= 1 (reported here
    when it is an integer < 1; a value of the wrong type is reported by the MasterConfig table)."""
    out = {}
    for name, key in keys.items():
        value = 1 if key is None else OmegaConf.select(cfg, key, default=1)
        if not is_int(value):
            return None
        if value < 1:
            report.error(key or name, f"must be >= 1, got {value}")
            return None
        out[name] = value
    return out


def _generation_gpus(cfg: DictConfig, nodes: int, gpn: int, report: Report) -> tuple[int, int] | None:
    """(generation GPUs, their GPUs per node) of non-colocated generation, checked as ``grpo.setup`` asserts them."""
    key = "policy.generation.colocated.resources"
    res_gpn = OmegaConf.select(cfg, key + ".gpus_per_node", default=None)
    res_nodes = OmegaConf.select(cfg, key + ".num_nodes", default=None)
    if nodes == 1:  # generation takes res_gpn of the node's GPUs
        if not (is_int(res_gpn) and res_gpn > 0):
            report.error(
                f"{key}.gpus_per_node",
                f"must be set to the generation GPUs (> 0) when "
                f"policy.generation.colocated.enabled is false on one node, got {res_gpn!r}",
            )
            return None
        if res_nodes not in (None, 1):
            report.error(f"{key}.num_nodes", f"must be 1 or null on one node, got {res_nodes!r}")
            return None
        if res_gpn >= gpn:
            report.error(
                f"{key}.gpus_per_node", f"({res_gpn}) leaves no training GPUs of cluster.gpus_per_node ({gpn})"
            )
            return None
        return res_gpn, res_gpn
    # several nodes: generation takes whole nodes
    if not (is_int(res_nodes) and res_nodes > 0):
        report.error(
            f"{key}.num_nodes",
            f"must be the generation nodes (> 0) when policy.generation.colocated.enabled "
            f"is false on several nodes, got {res_nodes!r}",
        )
        return None
    if res_gpn != gpn:
        report.error(
            f"{key}.gpus_per_node", f"must equal cluster.gpus_per_node ({gpn}) on several nodes, got {res_gpn!r}"
        )
        return None
    if res_nodes >= nodes:
        report.error(f"{key}.num_nodes", f"({res_nodes}) leaves no training nodes of cluster.num_nodes ({nodes})")
        return None
    return res_nodes * gpn, gpn


def parallel_layout(cfg: DictConfig, report: Report) -> ParallelLayout | None:
    """The layout, or None when the keys it needs are missing, mistyped or refused (refusals go to ``report``)."""
    cluster = _sizes(cfg, {"nodes": "cluster.num_nodes", "gpus_per_node": "cluster.gpus_per_node"}, report)
    megatron = is_on(cfg, "policy.megatron_cfg.enabled")
    tp_key, cp_key, pp_key = _parallel_keys(megatron)
    model = _sizes(cfg, {"tp": tp_key, "cp": cp_key, "pp": pp_key}, report)
    vllm = "policy.generation.vllm_cfg."
    gen = _sizes(cfg, {"tp": vllm + "tensor_parallel_size", "pp": vllm + "pipeline_parallel_size"}, report)
    if cluster is None or model is None or gen is None:
        return None
    nodes, gpn = cluster["nodes"], cluster["gpus_per_node"]
    colocated = OmegaConf.select(cfg, "policy.generation.colocated.enabled", default=True) is not False
    train_gpus, gen_gpus, gen_gpn = nodes * gpn, nodes * gpn, gpn
    if not colocated:
        dedicated = _generation_gpus(cfg, nodes, gpn, report)
        if dedicated is None:
            return None
        (gen_gpus, gen_gpn), train_gpus = dedicated, nodes * gpn - dedicated[0]
    prefix = "policy.megatron_cfg." if megatron else "policy.dtensor_cfg."
    return ParallelLayout(
        backend="megatron" if megatron else "dtensor",
        nodes=nodes,
        gpus_per_node=gpn,
        train_gpus=train_gpus,
        tp=model["tp"],
        pp=model["pp"],
        cp=model["cp"],
        sequence_parallel=is_on(cfg, prefix + "sequence_parallel"),
        gen_tp=gen["tp"],
        gen_pp=gen["pp"],
        gen_gpus=gen_gpus,
        gen_gpus_per_node=gen_gpn,
        colocated=colocated,
    )


def _check_switches(cfg: DictConfig, report: Report) -> None:
    megatron, dtensor = is_on(cfg, "policy.megatron_cfg.enabled"), is_on(cfg, "policy.dtensor_cfg.enabled")
    if megatron == dtensor:
        state = "both enabled" if megatron else "neither enabled"
        report.error(
            "policy.megatron_cfg.enabled",
            f"exactly one training backend must be on (policy.megatron_cfg.enabled / policy.dtensor_cfg.enabled: "
            f"{state})",
        )
    if is_on(cfg, "policy.sequence_packing.enabled") and is_on(cfg, "policy.dynamic_batching.enabled"):
        report.error("policy.sequence_packing.enabled", "sequence packing and dynamic batching are mutually exclusive")


def _check_gpus(cfg: DictConfig, layout: ParallelLayout, report: Report) -> None:
    """Training GPUs divisible by TP x PP x CP; vLLM's TP x PP fits a node and divides the generation GPUs."""
    tp_key, cp_key, _ = _parallel_keys(layout.backend == "megatron")
    model_parallel = layout.tp * layout.pp * layout.cp
    if layout.train_gpus % model_parallel:
        report.error(
            "cluster",
            f"training GPUs ({layout.train_gpus} = cluster.num_nodes x cluster.gpus_per_node"
            f"{'' if layout.colocated else ' - generation GPUs'}) must be divisible by TP x PP x CP "
            f"({layout.tp} x {layout.pp} x {layout.cp} = {model_parallel}; {tp_key}, {cp_key})",
        )
    if OmegaConf.select(cfg, "policy.generation.backend", default=None) != "vllm":
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


def _check_sequences(cfg: DictConfig, layout: ParallelLayout, report: Report) -> None:
    """Packing with Megatron CP; sequence length and packing pad factor against CP and TP; a packed micro-batch."""
    megatron, packing = layout.backend == "megatron", is_on(cfg, "policy.sequence_packing.enabled")
    _, cp_key, _ = _parallel_keys(megatron)
    if megatron and layout.cp > 1 and not packing:
        report.error(
            "policy.sequence_packing.enabled",
            f"must be true when Megatron context parallelism is on ({cp_key} = {layout.cp})",
        )
    seq = OmegaConf.select(cfg, "policy.max_total_sequence_length", default=None)
    multiple = layout.cp * math.lcm(2, layout.tp)
    if is_int(seq) and seq % multiple:
        report.error(
            "policy.max_total_sequence_length",
            f"must be divisible by CP x lcm(2, TP) = {layout.cp} x {math.lcm(2, layout.tp)} = {multiple}, got {seq}",
        )
    pad = OmegaConf.select(cfg, "policy.make_sequence_length_divisible_by", default=None)
    if megatron and packing and is_int(pad) and pad >= 1:
        # NeMo RL pads every packed sequence to a multiple of make_sequence_length_divisible_by, which must be a
        # multiple of 2 x CP (CP > 1) times TP (TP > 1 with sequence parallelism).
        sp = layout.tp if layout.tp > 1 and layout.sequence_parallel else 1
        factor = (2 * layout.cp if layout.cp > 1 else 1) * sp
        if pad % factor:
            report.error(
                "policy.make_sequence_length_divisible_by",
                f"must be a multiple of {factor} (2 x CP when CP > 1, times TP when sequence parallel), got {pad}",
            )
    mb_tokens = OmegaConf.select(cfg, "policy.sequence_packing.train_mb_tokens", default=None)
    if packing and is_int(seq) and is_int(mb_tokens) and mb_tokens < seq:
        report.error(
            "policy.sequence_packing.train_mb_tokens",
            f"({mb_tokens}) must be >= policy.max_total_sequence_length ({seq}) so a full sequence fits",
        )


def check_layout(cfg: DictConfig, report: Report) -> ParallelLayout | None:
    """Every layout rule (module docstring); the layout, or None when it cannot be derived."""
    _check_switches(cfg, report)
    layout = parallel_layout(cfg, report)
    if layout is None:
        return None
    _check_gpus(cfg, layout, report)
    _check_sequences(cfg, layout, report)
    return layout
