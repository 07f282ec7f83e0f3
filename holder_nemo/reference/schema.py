"""Schema of a reference-run recipe (``holderpo train``): pydantic models, one per YAML section, ``extra="forbid"``.

Section and key names follow NeMo RL's GRPO recipes where a concept exists there (``grpo.num_prompts_per_step``,
``policy.train_global_batch_size``, ``policy.generation.temperature``, ``loss_fn.ratio_clip_min`` ...), so a knob
means the same thing in ``holderpo train`` and in the NeMo RL entry point. ``loss_fn`` is the NeMo RL plugin's own
schema (``holder_nemo.nemo_rl.loss_config.HolderPOLossConfig``), declared once for both.

Entry points for other tools (e.g. ``holderpo recipe check``): ``is_reference_recipe(cfg)``,
``validate_reference_config(cfg) -> ReferenceConfig`` (raises ``ConfigError``, one problem per key) and
``missing_paths(config)`` (local files the recipe names that do not exist); ``default_recipe_path()`` (the recipe of
``holderpo train`` without arguments).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from holder_nemo.config.errors import ConfigError, problems_from_pydantic
from holder_nemo.nemo_rl.loss_config import MEAN_REWARD_KNOWN, HolderPOLossConfig, required_in_recipes

_PACKAGE = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = "smoke_cpu.yaml"


def default_recipe_path() -> Path:
    """``recipes/smoke_cpu.yaml`` of the source tree (checkouts, editable installs), else the copy a wheel carries as
    package data (``holder_nemo/recipes/``, mapped from the top-level ``recipes/`` by setup.py)."""
    source_tree = _PACKAGE.parent / "recipes" / DEFAULT_RECIPE
    return source_tree if source_tree.is_file() else _PACKAGE / "recipes" / DEFAULT_RECIPE


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GRPOSection(_Section):
    num_prompts_per_step: PositiveInt = 32
    num_generations_per_prompt: int = Field(8, ge=2, description="group size G (>= 2 so advantages are defined)")
    max_num_steps: PositiveInt = 200
    normalize_rewards: bool = Field(True, description="GRPO: divide by the group std; false = Dr.GRPO (mean only)")
    seed: int = Field(42, ge=0)


class TinyModelSection(_Section):
    hidden_size: PositiveInt = 64
    num_layers: PositiveInt = 2
    num_heads: PositiveInt = 4
    num_kv_heads: PositiveInt = 2
    intermediate_size: PositiveInt = 256

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelSection:
        if self.hidden_size % self.num_heads:
            raise ConfigError("hidden_size", f"({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                "num_heads", f"({self.num_heads}) must be divisible by num_kv_heads ({self.num_kv_heads})"
            )
        return self


class GenerationSection(_Section):
    temperature: PositiveFloat = 1.0
    max_new_tokens: PositiveInt = 4


class OptimizerKwargs(_Section):
    lr: PositiveFloat = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    eps: PositiveFloat = 1e-8
    weight_decay: float = Field(0.0, ge=0)


class OptimizerSection(_Section):
    name: Literal["torch.optim.AdamW"] = "torch.optim.AdamW"
    kwargs: OptimizerKwargs = OptimizerKwargs()


class PolicySection(_Section):
    model_name: str | None = Field(None, description="local HF causal-LM dir; null = built-in tiny Qwen2")
    tiny_model: TinyModelSection = TinyModelSection()
    train_global_batch_size: PositiveInt = Field(64, description="rows per optimizer update")
    train_micro_batch_size: PositiveInt = Field(64, description="rows per forward/backward (gradient accumulation)")
    logprob_batch_size: PositiveInt = 256
    max_grad_norm: PositiveFloat | None = 1.0
    generation: GenerationSection = GenerationSection()
    optimizer: OptimizerSection = OptimizerSection()


class CheckpointingSection(_Section):
    enabled: bool = True  # NeMo RL's key; holderpo train always checkpoints
    checkpoint_dir: str = Field("runs/smoke_cpu", min_length=1, description="the run directory (RUN_DIR)")
    save_period: PositiveInt = 50
    keep_last_k: PositiveInt = 2

    @model_validator(mode="after")
    def _always_on(self) -> CheckpointingSection:
        # refused rather than ignored: the stop contract (exit 75 = checkpointed) and exact resume rest on the
        # checkpoints, and recipe check would report them "off"
        if not self.enabled:
            raise ConfigError("enabled", "must be true: holderpo train always checkpoints (raise save_period)")
        return self


class LoggerSection(_Section):
    progress_bar: bool = True
    tensorboard_enabled: bool = True
    plot: bool = True


class DigitsSection(_Section):
    op: Literal["copy", "reverse", "add", "repeat"] = "copy"
    min_digits: PositiveInt = 1
    max_digits: PositiveInt = 2
    reward: Literal["exact", "partial"] = "partial"
    repeat_length: PositiveInt = Field(8, description="op repeat: answer length in digits (the number tiled)")

    @model_validator(mode="after")
    def _range(self) -> DigitsSection:
        if self.min_digits > self.max_digits:
            raise ConfigError("min_digits", f"({self.min_digits}) must be <= max_digits ({self.max_digits})")
        return self


class DataSection(_Section):
    task: Literal["digits", "math_jsonl", "arith_words"] = "digits"
    digits: DigitsSection = DigitsSection()
    train_path: str | None = Field(None, description="JSONL with 'problem' and 'answer' (task: math_jsonl)")


class RuntimeSection(_Section):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    num_threads: PositiveInt | None = Field(None, description="torch intra-op threads; null = torch's default")


class ReferenceConfig(_Section):
    """A whole reference-run recipe."""

    grpo: GRPOSection = GRPOSection()
    loss_fn: HolderPOLossConfig  # the NeMo RL plugin's schema of the section, the same as in NeMo RL recipes
    policy: PolicySection = PolicySection()
    checkpointing: CheckpointingSection = CheckpointingSection()
    logger: LoggerSection = LoggerSection()
    data: DataSection = DataSection()
    reference: RuntimeSection = RuntimeSection()

    @model_validator(mode="after")
    def _cross_section(self) -> ReferenceConfig:
        problems = []
        rows = self.grpo.num_prompts_per_step * self.grpo.num_generations_per_prompt
        gbs, mbs = self.policy.train_global_batch_size, self.policy.train_micro_batch_size
        if rows % gbs:
            problems.append(
                (
                    "policy.train_global_batch_size",
                    f"({gbs}) must divide grpo.num_prompts_per_step x grpo.num_generations_per_prompt ({rows})",
                )
            )
        if gbs % mbs:
            problems.append(
                ("policy.train_micro_batch_size", f"({mbs}) must divide policy.train_global_batch_size ({gbs})")
            )
        if self.loss_fn.reference_policy_kl_penalty != 0:
            problems.append(
                (
                    "loss_fn.reference_policy_kl_penalty",
                    "must be 0 in the reference run (it keeps no reference model; the paper's maths runs use no KL "
                    "term); the loss_fn schema's default is NeMo RL's 0.01, so set it",
                )
            )
        if self.data.task == "math_jsonl" and not self.data.train_path:
            problems.append(("data.train_path", "required when data.task is 'math_jsonl'"))
        if self.data.task in ("math_jsonl", "arith_words") and not self.policy.model_name:
            problems.append(("policy.model_name", f"data.task '{self.data.task}' needs a real model: a local HF dir"))
        if problems:
            raise ConfigError(problems)
        return self


def is_reference_recipe(cfg: Mapping[str, Any]) -> bool:
    """A reference-run recipe (``holderpo train``) has no ``cluster`` and no training-backend block; a NeMo RL recipe
    has them."""
    policy = cfg.get("policy")
    backends = isinstance(policy, Mapping) and ("megatron_cfg" in policy or "dtensor_cfg" in policy)
    return "cluster" not in cfg and not backends


def validate_reference_config(cfg: Any) -> ReferenceConfig:
    """Validate a resolved recipe (DictConfig or mapping) and return the typed config.

    Raises ``ConfigError`` with one problem per offending key (dotted path) saying what is allowed.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):  # the loader's top level is always a mapping (it refuses any other)
        cfg = OmegaConf.to_container(cfg, resolve=True)
    required = required_in_recipes(cfg.get("loss_fn"))
    try:
        # The reference run passes each step's mean reward to the loss: the reward-driven p schedule is valid here.
        config = ReferenceConfig.model_validate(cfg, context={MEAN_REWARD_KNOWN: True})
    except ValidationError as exc:
        hint = "misspelt? recipes/smoke_cpu.yaml lists every key"
        problems = problems_from_pydantic(exc, unknown_hint=hint)
        written = {key for key, _ in required}
        problems = [(k, m) for k, m in problems if not any(k == w or k.startswith(w + ".") for w in written)]
        raise ConfigError([*required, *problems]) from None
    if required:
        raise ConfigError(required)
    return config


def missing_paths(config: ReferenceConfig) -> list[tuple[str, str]]:
    """Local files the recipe names that do not exist here: ``policy.model_name`` (a directory) and
    ``data.train_path`` (a JSONL file), as ``(key, message)``."""
    problems = []
    if config.policy.model_name and not Path(config.policy.model_name).is_dir():
        problems.append(("policy.model_name", f"no such model directory {config.policy.model_name!r}"))
    if config.data.train_path and not Path(config.data.train_path).is_file():
        problems.append(("data.train_path", f"no such file {config.data.train_path!r}"))
    return problems
