"""Required keys and their types for a NeMo RL v0.7.0 GRPO recipe, checked offline (no nemo_rl import), and the
report every recipe rule writes to.

The table mirrors the required (non-``NotRequired``) fields of NeMo RL v0.7.0's ``MasterConfig`` TypedDicts
(``nemo_rl/algorithms/grpo.py``, ``nemo_rl/models/policy/__init__.py``, ``nemo_rl/utils/checkpoint.py`` ...) plus the
keys the GRPO driver reads unconditionally (``policy.generation``, ``policy.draft.enabled``). Blocks that only matter
when a feature is on (Megatron, DTensor, packing, vLLM) are listed under the switch that turns them on. The test
``tests/recipes/test_nemo_rl_master_config.py`` loads every recipe into the real ``MasterConfig`` where nemo_rl is
importable, which keeps this table honest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Type names used in the table: "int" (not bool), "float" (int accepted), "bool", "str", "mapping", "list",
# and "X|None" for nullable keys.


@dataclass(frozen=True)
class KeySpec:
    """One required key: dotted path, accepted type(s) and an optional inclusive lower bound for numbers."""

    path: str
    type: str
    minimum: float | None = None


def _specs(rows: list[tuple]) -> tuple[KeySpec, ...]:
    return tuple(KeySpec(*row) for row in rows)


ALWAYS: tuple[KeySpec, ...] = _specs(
    [
        ("grpo", "mapping"),
        ("grpo.num_prompts_per_step", "int", 1),
        ("grpo.num_generations_per_prompt", "int", 1),
        ("grpo.max_num_epochs", "int", 1),
        ("grpo.max_num_steps", "int", 1),
        ("grpo.max_rollout_turns", "int", 1),
        ("grpo.normalize_rewards", "bool"),
        ("grpo.use_leave_one_out_baseline", "bool"),
        ("grpo.val_period", "int", 0),
        ("grpo.val_batch_size", "int|None", 1),
        ("grpo.val_at_start", "bool"),
        ("grpo.val_at_end", "bool"),
        ("grpo.max_val_samples", "int|None", 1),
        ("grpo.seed", "int", 0),
        ("grpo.use_dynamic_sampling", "bool"),
        ("grpo.reward_shaping", "mapping"),
        ("grpo.reward_shaping.enabled", "bool"),
        ("grpo.reward_scaling", "mapping"),
        ("grpo.reward_scaling.enabled", "bool"),
        ("grpo.seq_logprob_error_threshold", "float|None"),
        ("loss_fn", "mapping"),
        ("loss_fn.ratio_clip_min", "float", 0),
        ("loss_fn.ratio_clip_max", "float", 0),
        ("loss_fn.ratio_clip_c", "float|None", 1),
        ("loss_fn.reference_policy_kl_penalty", "float", 0),
        ("loss_fn.token_level_loss", "bool"),
        ("policy", "mapping"),
        ("policy.model_name", "str"),
        ("policy.tokenizer", "mapping"),
        ("policy.tokenizer.name", "str"),
        ("policy.train_global_batch_size", "int", 1),
        ("policy.train_micro_batch_size", "int", 1),
        ("policy.precision", "str"),
        ("policy.dtensor_cfg", "mapping"),
        ("policy.dtensor_cfg.enabled", "bool"),
        ("policy.dynamic_batching", "mapping"),
        ("policy.dynamic_batching.enabled", "bool"),
        ("policy.make_sequence_length_divisible_by", "int", 1),
        ("policy.max_total_sequence_length", "int", 1),
        ("policy.draft", "mapping"),
        ("policy.draft.enabled", "bool"),
        ("policy.generation", "mapping"),
        ("policy.generation.backend", "str"),
        ("policy.generation.max_new_tokens", "int", 1),
        ("policy.generation.temperature", "float", 0),
        ("policy.generation.top_p", "float", 0),
        ("policy.generation.top_k", "int|None", 1),
        ("policy.generation.stop_token_ids", "list|None"),
        ("policy.generation.stop_strings", "list|None"),
        ("data", "mapping"),
        ("data.max_input_seq_length", "int|None", 1),
        ("data.shuffle", "bool"),
        ("env", "mapping"),
        ("logger", "mapping"),
        ("logger.log_dir", "str"),
        ("logger.wandb_enabled", "bool"),
        ("logger.swanlab_enabled", "bool"),
        ("logger.tensorboard_enabled", "bool"),
        ("logger.mlflow_enabled", "bool"),
        ("logger.wandb", "mapping"),
        ("logger.monitor_gpus", "bool"),
        ("logger.gpu_monitoring", "mapping"),
        ("cluster", "mapping"),
        ("cluster.gpus_per_node", "int", 1),
        ("cluster.num_nodes", "int", 1),
        ("checkpointing", "mapping"),
        ("checkpointing.enabled", "bool"),
        ("checkpointing.checkpoint_dir", "str|None"),
        ("checkpointing.metric_name", "str|None"),
        ("checkpointing.higher_is_better", "bool"),
        ("checkpointing.save_period", "int", 1),
    ]
)

# Keys required only when the switch (a dotted bool key) is true.
WHEN_ENABLED: dict[str, tuple[KeySpec, ...]] = {
    "policy.megatron_cfg.enabled": _specs(
        [
            ("policy.megatron_cfg.tensor_model_parallel_size", "int", 1),
            ("policy.megatron_cfg.pipeline_model_parallel_size", "int", 1),
            ("policy.megatron_cfg.context_parallel_size", "int", 1),
            ("policy.megatron_cfg.expert_tensor_parallel_size", "int", 1),
            ("policy.megatron_cfg.expert_model_parallel_size", "int", 1),
            ("policy.megatron_cfg.num_layers_in_first_pipeline_stage", "int|None", 1),
            ("policy.megatron_cfg.num_layers_in_last_pipeline_stage", "int|None", 1),
            ("policy.megatron_cfg.sequence_parallel", "bool"),
            ("policy.megatron_cfg.activation_checkpointing", "bool"),
            ("policy.megatron_cfg.empty_unused_memory_level", "int", 0),
            ("policy.megatron_cfg.pipeline_dtype", "str"),
            ("policy.megatron_cfg.freeze_moe_router", "bool"),
            ("policy.megatron_cfg.apply_rope_fusion", "bool"),
            ("policy.megatron_cfg.bias_activation_fusion", "bool"),
            ("policy.megatron_cfg.moe_per_layer_logging", "bool"),
            ("policy.megatron_cfg.moe_enable_deepep", "bool"),
            ("policy.megatron_cfg.moe_token_dispatcher_type", "str"),
            ("policy.megatron_cfg.moe_shared_expert_overlap", "bool"),
            ("policy.megatron_cfg.optimizer", "mapping"),
            ("policy.megatron_cfg.optimizer.optimizer", "str"),
            ("policy.megatron_cfg.optimizer.lr", "float", 0),
            ("policy.megatron_cfg.optimizer.min_lr", "float", 0),
            ("policy.megatron_cfg.optimizer.weight_decay", "float", 0),
            ("policy.megatron_cfg.optimizer.bf16", "bool"),
            ("policy.megatron_cfg.optimizer.fp16", "bool"),
            ("policy.megatron_cfg.optimizer.params_dtype", "str"),
            ("policy.megatron_cfg.optimizer.adam_beta1", "float", 0),
            ("policy.megatron_cfg.optimizer.adam_beta2", "float", 0),
            ("policy.megatron_cfg.optimizer.adam_eps", "float", 0),
            ("policy.megatron_cfg.optimizer.sgd_momentum", "float", 0),
            ("policy.megatron_cfg.optimizer.use_distributed_optimizer", "bool"),
            ("policy.megatron_cfg.optimizer.use_precision_aware_optimizer", "bool"),
            ("policy.megatron_cfg.optimizer.clip_grad", "float", 0),
            ("policy.megatron_cfg.optimizer.optimizer_cpu_offload", "bool"),
            ("policy.megatron_cfg.optimizer.optimizer_offload_fraction", "float", 0),
            ("policy.megatron_cfg.scheduler", "mapping"),
            ("policy.megatron_cfg.scheduler.start_weight_decay", "float", 0),
            ("policy.megatron_cfg.scheduler.end_weight_decay", "float", 0),
            ("policy.megatron_cfg.scheduler.weight_decay_incr_style", "str"),
            ("policy.megatron_cfg.scheduler.lr_decay_style", "str"),
            ("policy.megatron_cfg.scheduler.lr_warmup_iters", "int", 0),
            ("policy.megatron_cfg.scheduler.lr_warmup_init", "float", 0),
            ("policy.megatron_cfg.distributed_data_parallel_config", "mapping"),
            ("policy.megatron_cfg.distributed_data_parallel_config.grad_reduce_in_fp32", "bool"),
            ("policy.megatron_cfg.distributed_data_parallel_config.overlap_grad_reduce", "bool"),
            ("policy.megatron_cfg.distributed_data_parallel_config.overlap_param_gather", "bool"),
            ("policy.megatron_cfg.distributed_data_parallel_config.use_custom_fsdp", "bool"),
            ("policy.megatron_cfg.distributed_data_parallel_config.data_parallel_sharding_strategy", "str"),
        ]
    ),
    "policy.dtensor_cfg.enabled": _specs(
        [
            ("policy.dtensor_cfg.tensor_parallel_size", "int", 1),
            ("policy.dtensor_cfg.context_parallel_size", "int", 1),
            ("policy.dtensor_cfg.sequence_parallel", "bool"),
            ("policy.dtensor_cfg.activation_checkpointing", "bool"),
            ("policy.dtensor_cfg.cpu_offload", "bool"),
        ]
    ),
    "policy.sequence_packing.enabled": _specs(
        [
            ("policy.sequence_packing.train_mb_tokens", "int", 1),
            ("policy.sequence_packing.algorithm", "str"),
        ]
    ),
    "policy.dynamic_batching.enabled": _specs(
        [
            ("policy.dynamic_batching.train_mb_tokens", "int", 1),
            ("policy.dynamic_batching.sequence_length_round", "int", 1),
        ]
    ),
    "checkpointing.enabled": _specs([("checkpointing.checkpoint_dir", "str")]),
}

VLLM_KEYS: tuple[KeySpec, ...] = _specs(
    [
        ("policy.generation.vllm_cfg", "mapping"),
        ("policy.generation.vllm_cfg.tensor_parallel_size", "int", 1),
        ("policy.generation.vllm_cfg.gpu_memory_utilization", "float", 0),
        ("policy.generation.vllm_cfg.max_model_len", "int", 1),
    ]
)

_MISSING = object()


def lookup(cfg: dict, path: str, default: object = _MISSING) -> object:
    """Value at a dotted path of nested mappings; ``default`` (or KeyError naming the path) when absent."""
    node: object = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(path)
            return default
        node = node[part]
    return node


def type_matches(value: object, type_name: str) -> bool:
    """True when ``value`` is one of the ``|``-separated type names of the table."""
    for name in type_name.split("|"):
        if name == "None" and value is None:
            return True
        if name == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if name == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if name == "bool" and isinstance(value, bool):
            return True
        if name == "str" and isinstance(value, str):
            return True
        if name == "mapping" and isinstance(value, dict):
            return True
        if name == "list" and isinstance(value, list):
            return True
    return False


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


def get(cfg: Mapping, path: str, default: Any = None) -> Any:
    return lookup(cfg, path, default)  # type: ignore[arg-type]


def enabled(cfg: Mapping, path: str) -> bool:
    return get(cfg, path, False) is True


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
        if enabled(cfg, switch):
            for spec in specs:
                _check_spec(cfg, spec, report)
    if get(cfg, "policy.generation.backend") == "vllm":
        for spec in VLLM_KEYS:
            _check_spec(cfg, spec, report)
