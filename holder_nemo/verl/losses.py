"""verl 0.9.1 policy losses ``holder`` (sequence clip, paper default) and ``holder_token`` (token clip).

Both have verl's policy-loss signature ``(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
rollout_is_weights) -> (loss, metrics)`` and compute the loss of every token with
``holder_nemo.core.holder_po_token_loss``: each token carries its sequence's clipped Hölder ratio times its own
advantage, with its share of the ratio's gradient (the token view, ``core/token_advantages.py``), so advantages that
vary inside a sequence (GAE from a critic) act token by token exactly as in verl's ``gspo`` (GSPO-token), which the
sequence clip equals at p = 0; with one advantage per sequence the token mean of a row is the sequence's loss. verl's
own ``agg_loss`` reduces the matrix with the actor's ``loss_agg_mode`` and ``global_batch_info``, as ``gspo`` does:
``seq-mean-token-mean`` is the paper's mean over sequences; the token modes weight a sequence by its length.

p is ``schedule(config.policy_loss.global_step)``; verl does not pass the trainer's step to policy losses, so the
step hook (``holder_nemo.verl.step_hook``) puts it there. Without it only the ``constant`` schedule can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import verl.utils.torch_functional as verl_F
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss
from verl.workers.config import ActorConfig, PolicyLossConfig

from holder_nemo.core import PSchedule, holder_po_token_loss


@dataclass
class HolderPolicyLossConfig(PolicyLossConfig):
    """``actor.policy_loss`` for the Hölder losses: verl's fields plus the p schedule (names of the paper's fork)."""

    _mutable_fields: ClassVar[set[str]] = PolicyLossConfig._mutable_fields | {"global_step"}

    holder_p_schedule: str = "linear_dec"
    holder_p_max: float = 2.0
    holder_p_min: float = -2.0
    holder_p_schedule_steps: int = 500
    holder_p_power: float = 2.0
    global_step: int | None = None  # set every update by the step hook; 1-based as verl's trainer.global_steps

    def __post_init__(self) -> None:
        self.schedule()  # ValueError naming the PSchedule field, at config time

    def schedule(self) -> PSchedule:
        if self.holder_p_schedule == "reward":
            raise ValueError("policy_loss.holder_p_schedule: 'reward' is not supported in verl")
        return PSchedule(
            kind=self.holder_p_schedule,
            p_max=self.holder_p_max,
            p_min=self.holder_p_min,
            steps=self.holder_p_schedule_steps,
            power=self.holder_p_power,
        )


def holder_p(config: ActorConfig) -> float:
    """p for the current update, from ``config.policy_loss`` (a ``HolderPolicyLossConfig``)."""
    cfg = config.policy_loss
    if not isinstance(cfg, HolderPolicyLossConfig):
        raise ValueError(
            "policy_loss.loss_mode holder/holder_token needs "
            "actor_rollout_ref.actor.policy_loss._target_=holder_nemo.verl.HolderPolicyLossConfig"
        )
    schedule = cfg.schedule()
    if schedule.kind != "constant" and cfg.global_step is None:
        raise RuntimeError(
            f"policy_loss.holder_p_schedule={schedule.kind!r} needs the trainer's global step, which verl does not "
            "pass to policy losses: install the step hook (docs/verl.md), or use holder_p_schedule=constant"
        )
    return schedule(cfg.global_step or 0)


def _holder_loss(clip_mode: str, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, weights):
    p = holder_p(config)
    eps_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    eps_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    loss_mat, clipped, stats = holder_po_token_loss(
        log_prob, old_log_prob, advantages, response_mask, p, clip_mode=clip_mode, eps_low=eps_low, eps_high=eps_high
    )
    if weights is not None:  # rollout-correction weights, per token as in verl's gspo
        loss_mat = loss_mat * weights
    pg_loss = agg_loss(loss_mat, response_mask, loss_agg_mode, **config.global_batch_info)
    m = stats.summary()
    either = ((stats.clipped_low + stats.clipped_high) > 0).to(stats.valid.dtype) * stats.valid  # mixed-sign rows
    metrics: dict[str, Any] = {
        # verl's keys with its meanings: fraction of tokens whose term the clip held (as gspo / vanilla); no dual clip
        "actor/pg_clipfrac": verl_F.masked_mean(clipped.float(), response_mask).item(),
        "actor/ppo_kl": verl_F.masked_mean(old_log_prob - log_prob.detach(), response_mask).item(),
        "actor/pg_clipfrac_lower": 0.0,
        "actor/holder_p": p,
        "actor/holder_log_rho_mean": m["log_rho"].item(),
        "actor/holder_jensen_gap": m["jensen_gap"].item(),
        "actor/holder_effective_tokens": m["effective_tokens"].item(),
        "actor/holder_seq_clipfrac": (either.sum() / stats.valid.sum().clamp(min=1)).item(),
        "actor/holder_token_clipfrac": m["token_clipped"].item(),
    }
    return pg_loss, metrics


def _policy_loss(clip_mode: str, doc: str):
    """verl's ``PolicyLossFn`` signature (verl calls it with these keywords) around ``_holder_loss(clip_mode, ...)``."""

    def policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "seq-mean-token-mean",
        config: ActorConfig | None = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        args = (old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights)
        return _holder_loss(clip_mode, *args)

    policy_loss.__doc__ = doc + " Tensors [batch, response_length]; the loss is a scalar."
    return policy_loss


compute_policy_loss_holder = _policy_loss("sequence", "HölderPO with the sequence clip (paper Eq. 2).")
compute_policy_loss_holder_token = _policy_loss(
    "token", "HölderPO with each token ratio clipped before the Hölder mean (paper Eq. 11; p = 1 is GRPO)."
)


def register() -> None:
    """Put ``holder`` and ``holder_token`` in verl's POLICY_LOSS_REGISTRY (done on import; idempotent)."""
    POLICY_LOSS_REGISTRY["holder"] = compute_policy_loss_holder
    POLICY_LOSS_REGISTRY["holder_token"] = compute_policy_loss_holder_token


register()
