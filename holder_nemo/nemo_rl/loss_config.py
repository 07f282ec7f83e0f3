"""The ``loss_fn`` section of a NeMo RL GRPO config, as the HölderPO loss reads it (validated with pydantic).

Two groups of keys live side by side under ``loss_fn``:

* the ``ClippedPGLossFn`` keys of NeMo RL v0.7.0 that keep their meaning for HölderPO (clip range, dual clip, KL
  penalty towards the reference policy, train/inference importance-sampling correction and its truncation);
* a ``holder:`` block with the HölderPO-only settings (p schedule, clip mode, finite checks, which "old" policy the
  ratio uses, and the level of the importance-sampling correction).

``ClippedPGLossFn`` switches that select a *different* objective (CISPO, REINFORCE, forced on-policy ratio, GSPO's
own ratio, token-level normalisation, the VAPO NLL term) must stay at their neutral values: the error says which key
and why, instead of silently training something else. Every error names the dotted key (``loss_fn.holder.clip_mode``)
and the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from holder_nemo.config.errors import ConfigError, problems_from_pydantic
from holder_nemo.core import CLIP_MODES, KL_KINDS, PSchedule
from holder_nemo.core.estimators import IS_LEVELS, TRUNCATIONS

# Validation context key (``model_validate(..., context={MEAN_REWARD_KNOWN: True})``) of a caller that passes each
# step's mean reward to the loss (``HolderPOLossFn.set_mean_reward``): only then is the reward-driven schedule valid.
MEAN_REWARD_KNOWN = "mean_reward_known"

# ClippedPGLossFn switches that would change the objective; HölderPO requires these values.
_NEUTRAL_CLIPPED_PG_KEYS: dict[str, tuple[Any, str]] = {
    "token_level_loss": (False, "HölderPO is a sequence-level loss (one term per response, normalised by sequences)"),
    "sequence_level_importance_ratios": (False, "the HölderPO ratio is rho_p; p = 0 with clip_mode 'sequence' is GSPO"),
    "disable_ppo_ratio": (False, "REINFORCE-style surrogates are not HölderPO"),
    "force_on_policy_ratio": (False, "HölderPO needs prev_logprobs for its ratio"),
    "use_cispo": (False, "CISPO is a different objective"),
    "positive_example_nll_weight": (0.0, "the VAPO NLL term is not part of HölderPO"),
}


class HolderBlock(BaseModel):
    """``loss_fn.holder``: HölderPO-only settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: PSchedule = PSchedule()
    clip_mode: Literal[CLIP_MODES] = "sequence"
    check_finite: StrictBool = True
    importance_ratio: Literal["train_vs_old", "train_vs_generation"] = "train_vs_old"
    is_correction_level: Literal[IS_LEVELS] = "sequence_mean"

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any, info: ValidationInfo) -> Any:
        """``PSchedule`` is the schema (fields, defaults, ranges); built by its own constructor, not coerced."""
        schedule = PSchedule.from_dict(value) if isinstance(value, Mapping) else value
        mean_reward_known = bool((info.context or {}).get(MEAN_REWARD_KNOWN))
        if isinstance(schedule, PSchedule) and schedule.kind == "reward" and not mean_reward_known:
            raise ValueError(
                "kind 'reward' needs the step's mean reward, which NeMo RL v0.7.0 does not pass to policy.train; "
                "use a step schedule (linear_dec, cos, ...)"
            )
        return schedule


class HolderPOLossConfig(BaseModel):
    """The whole ``loss_fn`` section (defaults: NeMo RL's ``ClippedPGLossConfig`` defaults + the paper's HölderPO)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # clip range and dual clip (ClippedPG meaning: ratio clipped to [1 - min, 1 + max]; c > 1 bounds A < 0 losses)
    ratio_clip_min: float = Field(0.2, ge=0.0, lt=1.0)
    ratio_clip_max: float = Field(0.2, ge=0.0)
    ratio_clip_c: float | None = Field(None, gt=1.0)
    # KL(pi_theta || pi_ref) penalty, normalised per sequence like ClippedPG with token_level_loss: false
    reference_policy_kl_penalty: float = Field(0.01, ge=0.0)
    reference_policy_kl_type: Literal[KL_KINDS] = "k3"
    kl_input_clamp_value: float | None = Field(20.0, gt=0.0)
    kl_output_clamp_value: float | None = Field(10.0, gt=0.0)
    use_kl_in_reward: StrictBool = False
    use_on_policy_kl_approximation: StrictBool = False
    # train/inference importance-sampling correction (one weight per sequence, see holder.is_correction_level)
    use_importance_sampling_correction: StrictBool = False
    truncated_importance_sampling_type: Literal[TRUNCATIONS] | None = None
    truncated_importance_sampling_ratio: float | None = Field(None, gt=0.0)
    truncated_importance_sampling_ratio_min: float | None = Field(None, ge=0.0)
    # ClippedPG switches that must keep their neutral value (checked below)
    token_level_loss: StrictBool = False
    sequence_level_importance_ratios: StrictBool = False
    disable_ppo_ratio: StrictBool = False
    force_on_policy_ratio: StrictBool = False
    use_cispo: StrictBool = False
    positive_example_nll_weight: float = 0.0

    holder: HolderBlock = HolderBlock()

    @field_validator("holder", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _consistent(self) -> HolderPOLossConfig:
        problems = [
            (key, f"must be {neutral!r} for HölderPO ({why}), got {getattr(self, key)!r}")
            for key, (neutral, why) in _NEUTRAL_CLIPPED_PG_KEYS.items()
            if getattr(self, key) != neutral
        ]
        kind, high = self.truncated_importance_sampling_type, self.truncated_importance_sampling_ratio
        low = self.truncated_importance_sampling_ratio_min
        if kind is not None and not self.use_importance_sampling_correction:
            problems.append(
                ("truncated_importance_sampling_type", "truncation needs use_importance_sampling_correction: true")
            )
        if kind is not None and high is None:
            problems.append(("truncated_importance_sampling_ratio", f"must be set (> 0) for {kind!r}"))
        if kind in ("icepop", "seq-mask-tis") and low is None:
            problems.append(("truncated_importance_sampling_ratio_min", f"must be set for {kind!r}"))
        if kind is not None and low is not None and high is not None and low > high:
            problems.append(
                (
                    "truncated_importance_sampling_ratio_min",
                    f"must be <= truncated_importance_sampling_ratio ({high}), got {low}",
                )
            )
        if self.use_importance_sampling_correction and self.holder.importance_ratio == "train_vs_generation":
            problems.append(
                (
                    "holder.importance_ratio",
                    "'train_vs_generation' already measures the ratio against the inference policy; "
                    "use_importance_sampling_correction: true would correct twice",
                )
            )
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def kl_penalty(self) -> float:
        """The beta the loss applies: 0 when the KL goes into the reward instead (as ClippedPGLossFn does)."""
        return 0.0 if self.use_kl_in_reward else self.reference_policy_kl_penalty


class LossConfigError(ConfigError):
    """Invalid ``loss_fn`` section: one ``(loss_fn.<dotted key>, what is allowed)`` problem per offending key."""


def required_in_recipes(loss_fn: Any) -> list[tuple[str, str]]:
    """What a recipe must write out although the schema has a default: the ``holder`` block and its ``schedule``
    (the default schedule anneals over 500 steps whatever ``grpo.max_num_steps`` is)."""
    if loss_fn is None:
        return [("loss_fn", "required section is missing: the ClippedPG keys and the holder block (docs/recipes.md)")]
    if not isinstance(loss_fn, Mapping):
        return [
            ("loss_fn", f"must be a mapping (the ClippedPG keys and the holder block), got {type(loss_fn).__name__}")
        ]
    holder = loss_fn.get("holder")
    if holder is None:
        return [("loss_fn.holder", "required: the HölderPO block (schedule, clip_mode, check_finite, ...)")]
    if isinstance(holder, Mapping) and holder.get("schedule") is None:
        return [
            (
                "loss_fn.holder.schedule",
                "required: the p schedule, e.g. {kind: linear_dec, p_max: 2.0, p_min: -2.0, steps: "
                "${grpo.max_num_steps}} (docs/recipes.md)",
            )
        ]
    return []


def parse_loss_config(
    loss_fn_config: Mapping[str, Any] | BaseModel, *, mean_reward_known: bool = False
) -> HolderPOLossConfig:
    """Validate a ``loss_fn`` mapping (a plain dict, an OmegaConf container, or NeMo RL's ``ClippedPGLossConfig``).

    ``mean_reward_known``: the caller passes each step's mean reward to the loss, so ``holder.schedule.kind:
    reward`` is allowed (the reference run); NeMo RL does not.

    Raises ``LossConfigError`` with one problem per offending key, e.g. (``loss_fn.holder.clip_mode``, ``Input should
    be 'sequence', 'token', 'token_log' or 'none' (got 'seq')``).
    """
    if isinstance(loss_fn_config, HolderPOLossConfig):
        return loss_fn_config
    if isinstance(loss_fn_config, BaseModel):  # NeMo RL v0.7 ClippedPGLossConfig keeps extra keys (extra="allow")
        loss_fn_config = loss_fn_config.model_dump()
    if not isinstance(loss_fn_config, Mapping):
        raise LossConfigError("loss_fn", f"expected a mapping, got {type(loss_fn_config).__name__}")
    try:
        return HolderPOLossConfig.model_validate(dict(loss_fn_config), context={MEAN_REWARD_KNOWN: mean_reward_known})
    except ValidationError as exc:
        raise LossConfigError(problems_from_pydantic(exc, "loss_fn")) from None
