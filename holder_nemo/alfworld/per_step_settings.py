"""What the per-step ALFWorld loop reads from a NeMo RL recipe, checked before Ray and the GPUs start.

The recipe's ``alfworld`` section holds the protocol settings NeMo RL's GRPO config has no key for
(``ALFWORLD_KEYS``); all but ``sample_layout`` are read only by the per-step loop, so under NeMo RL's own rollout
(``per_episode``) they must be null (0 for the bonus). Every other setting comes from NeMo RL's own sections, read as
required keys (NeMo RL's ``MasterConfig`` requires them; no default is restated here). Settings the loop would ignore
are errors naming the key (``PER_STEP_FIXED``, NeMo RL's own rollout keys under ``env.alfworld``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from holder_nemo.alfworld.protocol import ProtocolConfig
from holder_nemo.config.errors import ConfigError
from holder_nemo.nemo_rl.components import COMPONENT_KEY

PER_STEP, PER_EPISODE = "per_step", "per_episode"
ALFWORLD_KEYS = ("sample_layout", "advantage_stats_over", "entropy_coeff", "val_temperature", "val_seed", "task_types")
# The per-step defaults of the alfworld section (verl-agent's values); None in the recipe means these.
STATS_OVER, ENTROPY_COEFF, VAL_SEED = "steps", 0.0, 1000
# GRPO settings the per-step loop does not read (it computes verl-agent's advantage itself): only these values agree.
PER_STEP_FIXED = {
    "grpo.normalize_rewards": True,
    "grpo.use_leave_one_out_baseline": False,
    "grpo.overlong_filtering": False,
    "grpo.use_dynamic_sampling": False,
    "grpo.reward_shaping.enabled": False,
    "grpo.reward_scaling.enabled": False,
}


def section(config: Any, name: str) -> Mapping[str, Any]:
    """``config[name]`` for a mapping or a pydantic ``MasterConfig`` (extra sections such as ``alfworld`` included)."""
    value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
    return value or {}


def lookup(config: Any, dotted: str) -> Any:
    """``config[a][b][c]`` for ``"a.b.c"`` (None where absent); the top level may be a pydantic ``MasterConfig``."""
    *parents, leaf = dotted.split(".")
    node: Any = config
    for part in parents:
        node = section(node, part)
    return node.get(leaf) if isinstance(node, Mapping) else getattr(node, leaf, None)


def check_alfworld_section(config: Any) -> str:
    """The layout (``alfworld.sample_layout``, ``per_episode`` when absent), after checking the ``alfworld`` section:
    unknown keys are errors, and so are per-step-only keys set under NeMo RL's own rollout (nothing would read them).
    """
    alfworld = dict(section(config, "alfworld"))
    unknown = sorted(set(alfworld) - set(ALFWORLD_KEYS))
    if unknown:
        raise ConfigError("alfworld", f"unknown keys {unknown}; allowed {list(ALFWORLD_KEYS)}")
    layout = alfworld.get("sample_layout", PER_EPISODE)
    if layout not in (PER_STEP, PER_EPISODE):
        raise ConfigError("alfworld.sample_layout", f"must be {PER_STEP!r} or {PER_EPISODE!r}, got {layout!r}")
    if layout == PER_EPISODE:
        harmless = {"entropy_coeff": 0}  # no bonus is what NeMo RL's rollout does anyway
        unused = [k for k in ALFWORLD_KEYS[1:] if alfworld.get(k) is not None and alfworld.get(k) != harmless.get(k)]
        if unused:
            raise ConfigError(
                f"alfworld.{unused[0]}",
                "read only with alfworld.sample_layout per_step; NeMo RL's own rollout "
                f"(per_episode) would ignore {['alfworld.' + k for k in unused]}: set them to null",
            )
    return layout


def sample_layout(config: Any) -> str:
    """``alfworld.sample_layout`` of a recipe (``per_episode`` when absent: NeMo RL's own rollout), after checking the
    ``alfworld`` section and, for ``per_step`` given a whole recipe (with ``grpo``), every setting the loop reads
    (``PerStepSettings``), so that a bad value fails before Ray and the GPUs start."""
    layout = check_alfworld_section(config)
    if layout == PER_STEP and section(config, "grpo"):
        PerStepSettings.from_config(config)
    return layout


def _protocol(config: Any) -> ProtocolConfig:
    """``env.alfworld`` as the protocol (the ``_component_`` key names the code, not a setting)."""
    env = {k: v for k, v in (section(config, "env").get("alfworld") or {}).items() if k != COMPONENT_KEY}
    nemo_env_keys = sorted({"turn_template", "num_workers"} & set(env))
    if nemo_env_keys:  # the Ray environment's keys: the per-step loop plays the games itself
        raise ConfigError(
            f"env.alfworld.{nemo_env_keys[0]}",
            "read only by NeMo RL's rollout (sample_layout per_episode); the per-step loop would ignore it",
        )
    return ProtocolConfig.from_dict(env)


def _check_fixed(config: Any) -> None:
    for key, value in PER_STEP_FIXED.items():
        got = lookup(config, key)
        if got is not None and got != value:
            raise ConfigError(
                key,
                f"must be {value} with alfworld.sample_layout per_step (the loop computes verl-agent's "
                f"advantage itself and would ignore it), got {got!r}",
            )


def _context_parallel(policy: Mapping[str, Any]) -> int:
    cp = int((policy.get("dtensor_cfg") or {}).get("context_parallel_size") or 1)
    megatron = policy.get("megatron_cfg") or {}
    return max(cp, int(megatron.get("context_parallel_size") or 1)) if megatron.get("enabled") else cp


@dataclass(frozen=True)
class PerStepSettings:
    """What the loop reads from the master config (names = recipe keys)."""

    num_games: int  # grpo.num_prompts_per_step
    group_size: int  # grpo.num_generations_per_prompt
    max_num_steps: int  # grpo.max_num_steps
    seed: int  # grpo.seed
    val_period: int  # grpo.val_period
    val_at_start: bool
    val_at_end: bool
    max_val_samples: int  # grpo.max_val_samples: validation episodes (verl-agent val_data_size 128)
    skip_reference_logprobs: bool  # grpo.skip_reference_policy_logprobs_calculation
    protocol: ProtocolConfig  # env.alfworld
    stats_over: str  # alfworld.advantage_stats_over
    entropy_coeff: float  # alfworld.entropy_coeff (verl actor.entropy_coeff 0.001)
    train_temperature: float  # policy.generation.temperature
    val_temperature: float  # alfworld.val_temperature (null: the training temperature)
    val_seed: int  # alfworld.val_seed: environment 0's seed of verl-agent's validation draw (env.seed + 1000)
    log_dir: str | None  # logger.log_dir: where alfworld_validation.jsonl goes
    max_prompt_tokens: int  # data.max_input_seq_length
    max_response_tokens: int  # policy.generation.max_new_tokens
    train_global_batch_size: int  # policy.train_global_batch_size: rows are padded to a multiple of it
    sequence_multiple: int  # policy.make_sequence_length_divisible_by: columns are padded to a multiple of it
    colocated: bool  # policy.generation.colocated.enabled
    checkpointing_enabled: bool
    save_period: int

    @classmethod
    def from_config(cls, config: Any) -> PerStepSettings:
        if check_alfworld_section(config) != PER_STEP:
            raise ConfigError("alfworld.sample_layout", "the per-step loop needs per_step")
        _check_fixed(config)
        settings = cls._read(config)
        settings._validate(section(config, "policy"))
        return settings

    @classmethod
    def _read(cls, config: Any) -> PerStepSettings:
        grpo, policy, ckpt = section(config, "grpo"), section(config, "policy"), section(config, "checkpointing")
        alfworld, generation = section(config, "alfworld"), policy["generation"]

        def given(key: str, default: Any) -> Any:
            return default if alfworld.get(key) is None else alfworld[key]

        return cls(
            num_games=int(grpo["num_prompts_per_step"]),
            group_size=int(grpo["num_generations_per_prompt"]),
            max_num_steps=int(grpo["max_num_steps"]),
            seed=int(grpo["seed"]),
            val_period=int(grpo["val_period"]),
            val_at_start=bool(grpo["val_at_start"]),
            val_at_end=bool(grpo["val_at_end"]),
            max_val_samples=int(grpo["max_val_samples"] or 0),
            skip_reference_logprobs=bool(grpo.get("skip_reference_policy_logprobs_calculation")),
            protocol=_protocol(config),
            stats_over=str(given("advantage_stats_over", STATS_OVER)),
            entropy_coeff=float(given("entropy_coeff", ENTROPY_COEFF)),
            train_temperature=float(generation["temperature"]),
            val_temperature=float(given("val_temperature", generation["temperature"])),
            val_seed=int(given("val_seed", VAL_SEED)),
            log_dir=section(config, "logger").get("log_dir"),
            max_prompt_tokens=int(section(config, "data")["max_input_seq_length"]),
            max_response_tokens=int(generation["max_new_tokens"]),
            train_global_batch_size=int(policy["train_global_batch_size"]),
            sequence_multiple=int(policy["make_sequence_length_divisible_by"]),
            colocated=bool((generation.get("colocated") or {}).get("enabled")),
            checkpointing_enabled=bool(ckpt["enabled"]),
            save_period=int(ckpt["save_period"]),
        )

    def _validate(self, policy: Mapping[str, Any]) -> None:
        positive = {
            "num_games": "grpo.num_prompts_per_step",
            "group_size": "grpo.num_generations_per_prompt",
            "max_num_steps": "grpo.max_num_steps",
            "train_global_batch_size": "policy.train_global_batch_size",
            "sequence_multiple": "policy.make_sequence_length_divisible_by",
        }
        for name, key in positive.items():
            if getattr(self, name) < 1:
                raise ConfigError(key, f"must be >= 1, got {getattr(self, name)}")
        if self.stats_over not in ("steps", "episodes"):
            raise ConfigError(
                "alfworld.advantage_stats_over", f"must be 'steps' or 'episodes', got {self.stats_over!r}"
            )
        if not self.entropy_coeff >= 0:
            raise ConfigError("alfworld.entropy_coeff", f"must be >= 0, got {self.entropy_coeff}")
        if not self.val_temperature > 0:
            raise ConfigError("alfworld.val_temperature", f"must be > 0 or null, got {self.val_temperature}")
        if self.validating and self.max_val_samples < 1:
            raise ConfigError("grpo.max_val_samples", f"validation episodes must be >= 1, got {self.max_val_samples}")
        whole_rows = _context_parallel(policy) == 1 and not (policy.get("sequence_packing") or {}).get("enabled")
        if self.entropy_coeff > 0 and not whole_rows:
            raise ConfigError(
                "alfworld.entropy_coeff",
                "> 0 needs whole rows in the loss: context_parallel_size 1 and policy.sequence_packing.enabled false",
            )

    @property
    def validating(self) -> bool:
        return self.val_period > 0 or self.val_at_start or self.val_at_end

    def validation_round(self, step: int) -> int:
        """How many validations an uninterrupted run makes before the one at ``step`` (verl-agent's validation
        environments move to their next game at every validation, so the draw depends on it)."""
        points = sorted(
            ({0} if self.val_at_start else set())
            | {k for k in range(1, self.max_num_steps + 1) if self.val_period > 0 and k % self.val_period == 0}
            | ({self.max_num_steps} if self.val_at_end else set())
        )
        return points.index(step) if step in points else len([k for k in points if k < step])
