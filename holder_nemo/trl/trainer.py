"""``HolderPOTrainer``: TRL 1.16's ``GRPOTrainer`` with the HölderPO loss of ``holder_nemo.core``.

Only ``_compute_loss`` changes (as in TRL's ``trl.experimental.gmpo``); generation, rewards, advantages, logging,
checkpoints and ``resume_from_checkpoint`` are TRL's. The loss is ``holder_po_loss`` per sequence, averaged over the
sequences of the micro-batch and divided by the gradient-accumulation steps: TRL's ``loss_type="grpo"``
normalisation, the only one that does not re-weight a sequence-level ratio by completion length. p is
``PSchedule(step)`` with ``step = state.global_step + 1`` (the optimizer step being taken, 1-based as in the paper's
code); ``global_step`` is restored by ``resume_from_checkpoint``, so a resumed run uses the p of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from trl import GRPOConfig, GRPOTrainer

from holder_nemo.core import ClipSpec, PSchedule, holder_po_loss

# Model inputs TRL passes through to the forward pass for vision-language models.
_MODEL_INPUT_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)  # fmt: skip
# (HolderStats field, logged name); means over the sequences of all processes.
_SEQ_METRICS = (
    ("p", "holder/p"),
    ("log_rho", "holder/log_rho_mean"),
    ("jensen_gap", "holder/jensen_gap_mean"),
    ("effective_tokens", "holder/effective_tokens_mean"),
    ("clipped_low", "clip_ratio/low_mean"),
    ("clipped_high", "clip_ratio/high_mean"),
    ("dual_clipped", "holder/dual_clip_frac"),
)


@dataclass
class HolderPOConfig(GRPOConfig):
    """``GRPOConfig`` plus HölderPO's settings. ε is TRL's ``epsilon`` / ``epsilon_high`` (paper: 0.2 / 0.2 with the
    sequence clip, TRL's default; docs/trl.md "Clip ε")."""

    holder_clip_mode: str = field(default="sequence", metadata={"help": "sequence | token | token_log | none"})
    holder_p_schedule: str = field(default="linear_dec", metadata={"help": "a PSchedule kind except 'reward'"})
    holder_p_max: float = 2.0
    holder_p_min: float = -2.0
    holder_p_schedule_steps: int | None = field(default=None, metadata={"help": "default: the run's total steps"})
    holder_p_power: float = 2.0
    holder_dual_clip: float | None = None
    loss_type: str = "grpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type != "grpo":
            raise ValueError(f"HolderPOConfig.loss_type must be 'grpo' (mean over sequences), got {self.loss_type!r}")
        if self.holder_p_schedule == "reward":
            raise ValueError("HolderPOConfig.holder_p_schedule: 'reward' is not supported by the TRL trainer")
        self.p_schedule(steps=1)  # validates kind and bounds now, not at the first step
        eps_high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        ClipSpec(self.holder_clip_mode, self.epsilon, eps_high, self.holder_dual_clip)  # raises naming the field
        unsupported = {
            "top_entropy_quantile": self.top_entropy_quantile < 1.0,
            "off_policy_mask_threshold": self.off_policy_mask_threshold is not None,
            "entropy_coef": self.entropy_coef != 0.0 or self.use_adaptive_entropy,
            "delta": self.delta is not None,
            "use_bias_correction_kl": self.beta != 0.0 and self.use_bias_correction_kl,
            "vllm_importance_sampling_correction": self.use_vllm and self.vllm_importance_sampling_correction,
        }
        bad = [name for name, on in unsupported.items() if on]
        if bad:
            raise ValueError(f"HolderPOConfig: {bad} change the GRPO loss and are not supported with HölderPO")

    def p_schedule(self, steps: int) -> PSchedule:
        """The p schedule over ``holder_p_schedule_steps`` (or ``steps``, the run's total, when unset)."""
        return PSchedule(
            kind=self.holder_p_schedule,
            p_max=self.holder_p_max,
            p_min=self.holder_p_min,
            steps=self.holder_p_schedule_steps or max(1, steps),
            power=self.holder_p_power,
        )


class HolderPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose policy loss is HölderPO (``args`` must be a ``HolderPOConfig``)."""

    _tag_names: ClassVar[list[str]] = ["trl", "grpo", "holderpo"]

    def __init__(self, model: Any, reward_funcs: Any, args: HolderPOConfig, **kwargs: Any) -> None:
        if not isinstance(args, HolderPOConfig):
            raise TypeError(f"HolderPOTrainer needs args=HolderPOConfig(...), got {type(args).__name__}")
        super().__init__(model, reward_funcs, args=args, **kwargs)

    def current_p(self) -> float:
        """p of the optimizer step being taken: schedule(global_step + 1)."""
        return self.args.p_schedule(self.state.max_steps)(self.state.global_step + 1)

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        completion_mask = inputs["completion_mask"]
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], completion_mask], dim=1),
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,  # MoE: the forward also returns the router load-balancing loss
            **{key: inputs.get(key) for key in _MODEL_INPUT_KEYS},
        )
        # TRL leaves old_per_token_logps out when the batch is exactly on-policy (ratio 1, gradient of the ratio).
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps
        seq_loss, stats = holder_po_loss(
            logps,
            old_logps,
            inputs["advantages"],
            mask,
            self.current_p(),
            clip_mode=self.args.holder_clip_mode,
            eps_low=self.epsilon_low,
            eps_high=self.epsilon_high,
            dual_clip=self.args.holder_dual_clip,
        )
        lengths = mask.sum(-1).clamp(min=1)
        if self.beta != 0.0:  # TRL's KL term under loss_type="grpo": beta * per-sequence token mean of k3
            ref = inputs["ref_per_token_logps"]
            # TRL's own k3 arithmetic (not core.kl_estimate's expm1 form), so the run is TRL's to the last bit
            kl = torch.exp(ref - logps) - (ref - logps) - 1
            seq_loss = seq_loss + self.beta * (kl * mask).sum(-1) / lengths
            self._log_mean("kl", (kl * mask).sum(-1), mask.sum(-1))
        mode = "train" if self.model.training else "eval"
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        loss = seq_loss.mean() / normalizer
        if self.aux_loss_enabled:  # TRL's MoE term: router_aux_loss_coef x the model's aux_loss, same normaliser
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        self._log_mean("entropy", (entropies * mask).sum(-1), mask.sum(-1))
        valid = stats.valid
        for field_name, name in _SEQ_METRICS:
            self._log_mean(name, getattr(stats, field_name) * valid, valid)
        clipped = stats.clipped_low + stats.clipped_high
        self._log_mean("clip_ratio/region_mean", clipped * valid, valid)
        self._log_mean("holder/token_clip_frac", stats.token_clipped, stats.num_tokens)
        # TRL's extremes over every sequence of all processes: 1 if no (some) sequence escaped the low (high) clip
        self._metrics[mode]["clip_ratio/low_min"].append(self.accelerator.gather(stats.clipped_low).min().item())
        self._metrics[mode]["clip_ratio/high_max"].append(self.accelerator.gather(stats.clipped_high).max().item())
        return loss

    def _log_mean(self, name: str, numerator: torch.Tensor, denominator: torch.Tensor) -> None:
        """Log sum(numerator) / sum(denominator) over all processes (TRL's ``global_masked_mean``)."""
        totals = torch.stack([numerator.detach().float().sum(), denominator.detach().float().sum()])
        totals = self.accelerator.reduce(totals, reduction="sum")
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][name].append((totals[0] / totals[1].clamp(min=1.0)).item())
