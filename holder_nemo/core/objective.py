"""The HölderPO policy loss per sequence (paper Eq. 2, App. D Eq. 11) and its GRPO/GSPO/GMPO special cases.

All clipping happens in log space and the clipped branch is chosen by the sign of the advantage, which is the
PPO ``max(-A rho, -A clip(rho))`` written without ever exponentiating an unclipped quantity:

    A > 0:  -A * exp(min(log rho, log(1 + eps_high)))
    A < 0:  -A * exp(max(log rho, log(1 - eps_low)))      (dual clip: additionally min(., log c))
    A = 0:  0

Clip modes:
    sequence   clip the sequence aggregate log rho_p (paper default, Eq. 2). p = 0 is GSPO.
    token      clip each token ratio to [1 - eps_low, 1 + eps_high] sign-aware, then aggregate (Eq. 11: C_{i,p} for
               A > 0, D_{i,p} for A < 0). p = 1 is GRPO's per-token clipped loss averaged per sequence.
    token_log  clip each token log-ratio to [-eps_low, eps_high] sign-aware, then aggregate; p -> 0 is GMPO with its
               published parametrisation (eps = 0.4 -> ratios in (e^-0.4, e^0.4)).
    none       no clipping; p = 1 is unclipped GRPO.

The loss is one value per sequence; normalisation across sequences, micro-batches and ranks is the caller's
(``stats.Reduce.SEQUENCE_MEAN`` with NeMo RL's global counts in the NeMo RL adapter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from holder_nemo.core.holder_mean import HolderMean, holder_mean
from holder_nemo.core.stats import HolderStats
from holder_nemo.core.validation import (
    Order,
    as_bool_mask,
    as_order,
    check_2d,
    check_eps,
    check_finite_where,
    check_float,
    check_same_shape,
    compute_dtype,
)

CLIP_MODES = ("sequence", "token", "token_log", "none")


@dataclass(frozen=True)
class ClipSpec:
    """The clip of a HölderPO loss; validated on construction (ValueError naming the field).

    mode: one of ``CLIP_MODES``. eps_low, eps_high: ratio range [1 - eps_low, 1 + eps_high] (``sequence``, ``token``)
    or log-ratio range [-eps_low, eps_high] (``token_log``); eps_low in [0, 1), eps_high >= 0. dual_clip: None or
    c > 1; for A < 0 the loss is at most c * |A| (Dual-clip PPO).
    """

    mode: str = "sequence"
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {self.mode!r}")
        check_eps("eps_low", self.eps_low, upper=1)
        check_eps("eps_high", self.eps_high, upper=None)
        c = self.dual_clip
        if c is not None and (isinstance(c, bool) or not isinstance(c, int | float) or not c > 1):
            raise ValueError(f"dual_clip must be None or a number > 1, got {c!r}")

    @property
    def log_bounds(self) -> tuple[float, float]:
        """(lo, hi) in log-ratio space: [log(1 - eps_low), log(1 + eps_high)], or [-eps_low, eps_high] for token_log."""
        if self.mode == "token_log":
            return -self.eps_low, self.eps_high
        return math.log1p(-self.eps_low), math.log1p(self.eps_high)


def sign_aware_clip(x: Tensor, pos: Tensor, neg: Tensor, lo: float, hi: float) -> Tensor:
    """PPO's pessimistic clip in log space: cap at ``hi`` where A > 0, floor at ``lo`` where A < 0, else unchanged.

    ``pos``/``neg`` broadcast against ``x`` ([B] for sequence values, [B, 1] for token values).
    """
    # A > 0: min(x, hi);  A < 0: max(x, lo);  A = 0: x
    return torch.where(pos, x.clamp(max=hi), torch.where(neg, x.clamp(min=lo), x))


def _clip_stats(log_ratio: Tensor, mask: Tensor, mean: HolderMean, clip: ClipSpec) -> dict[str, Tensor]:
    """NeMo RL's ``probs_ratio*`` view of the clip: the ratio it acts on (rho_p per sequence, counted once per
    token, or each token's ratio), summed over tokens, and its extremes, before and after clamping to the range."""
    lo, hi = clip.log_bounds if clip.mode != "none" else (-math.inf, math.inf)
    if clip.mode in ("sequence", "none"):
        low = high = mean.log_rho.detach()
        ratio_sum = mean.n * torch.exp(low)
        clamped_sum = mean.n * torch.exp(low.clamp(lo, hi))
    else:
        zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
        low, high = mean.x_min, mean.x_max
        ratio_sum = torch.where(mask, torch.exp(log_ratio), zero).sum(-1)
        clamped_sum = torch.where(mask, torch.exp(log_ratio.clamp(lo, hi)), zero).sum(-1)
    return {
        "ratio_sum": ratio_sum,
        "clamped_ratio_sum": clamped_sum,
        "ratio_min": torch.exp(low),
        "ratio_max": torch.exp(high),
        "clamped_ratio_min": torch.exp(low.clamp(lo, hi)),
        "clamped_ratio_max": torch.exp(high.clamp(lo, hi)),
    }


def holder_po_objective(
    log_ratio: Tensor, mask: Tensor, advantages: Tensor, order: Order, clip: ClipSpec
) -> tuple[Tensor, HolderStats]:
    """The loss per sequence and its statistics, without input checks (the callers validate).

    Args:
        log_ratio: [B, T] log pi_theta - log pi_old in float32/float64, with grad (any value at masked positions).
        mask: [B, T] bool, valid tokens.
        advantages: [B] sequence advantages in the same dtype.
        order: the Hölder order (``validation.as_order``). clip: the clip.
    Returns:
        loss [B] (0 for sequences without valid tokens) and ``HolderStats`` (detached).
    """
    pos, neg = advantages > 0, advantages < 0
    stats = holder_mean(log_ratio, mask, order)
    log_rho, has_tokens = stats.log_rho, stats.n > 0
    lo, hi = clip.log_bounds
    token_clipped = torch.zeros_like(stats.n)
    if clip.mode == "sequence":
        # Eq. 2: clip(log rho_p), sign-aware
        objective = sign_aware_clip(log_rho, pos, neg, lo, hi)
    elif clip.mode in ("token", "token_log"):
        # Eq. 11: log rho_p of the sign-aware clipped token log-ratios (C_{i,p} for A > 0, D_{i,p} for A < 0)
        clipped = sign_aware_clip(log_ratio, pos[:, None], neg[:, None], lo, hi)
        with torch.no_grad():
            beyond = (pos[:, None] & (log_ratio > hi)) | (neg[:, None] & (log_ratio < lo))
            token_clipped = (mask & beyond).sum(-1).to(log_ratio.dtype)
        objective = holder_mean(clipped, mask, order).log_rho
    else:
        objective = log_rho
    clipped_high, clipped_low = pos & (objective < log_rho), neg & (objective > log_rho)
    dual_clipped = torch.zeros_like(pos)
    if clip.dual_clip is not None:
        log_c = math.log(clip.dual_clip)
        dual_clipped = neg & (objective > log_c)
        # dual clip, A < 0: min(objective, log c), so the loss is at most c |A|
        objective = torch.where(neg, objective.clamp(max=log_c), objective)
    # loss_i = -A_i exp(objective_i) = max(-A rho, -A clip(rho)) of PPO, evaluated in log space
    loss = torch.where(has_tokens, -advantages * safe_exp(objective), torch.zeros_like(log_rho))
    flags = {"clipped_low": clipped_low, "clipped_high": clipped_high, "dual_clipped": dual_clipped}
    return loss, holder_stats(log_ratio, mask, stats, order, clip, token_clipped=token_clipped, **flags)


def safe_exp(objective: Tensor) -> Tensor:
    """exp of a clipped log-objective. Only A < 0 can push an unclipped one up; the cap keeps exp finite (the
    gradient there is 0 anyway)."""
    return torch.exp(objective.clamp(max=math.log(torch.finfo(objective.dtype).max)))


@torch.no_grad()
def holder_stats(
    log_ratio: Tensor,
    mask: Tensor,
    mean: HolderMean,
    order: Order,
    clip: ClipSpec,
    *,
    clipped_low: Tensor,
    clipped_high: Tensor,
    dual_clipped: Tensor,
    token_clipped: Tensor,
) -> HolderStats:
    """``HolderStats`` of one call from the Hölder mean of the log-ratios and the clip decisions ([B] each)."""
    has_tokens = mean.n > 0
    dtype, zero = mean.log_rho.dtype, torch.zeros_like(mean.n)
    log_rho = mean.log_rho.detach()
    ratios = _clip_stats(log_ratio.detach(), mask, mean, clip)
    return HolderStats(
        p=order.p,
        log_rho=log_rho,
        jensen_gap=log_rho - mean.mu,  # log rho_p - log rho_0
        effective_tokens=mean.effective_tokens,
        clipped_low=clipped_low.to(dtype),
        clipped_high=clipped_high.to(dtype),
        dual_clipped=dual_clipped.to(dtype),
        token_clipped=token_clipped,
        num_tokens=mean.n,
        valid=has_tokens.to(dtype),
        log_ratio_min=mean.x_min,
        log_ratio_max=mean.x_max,
        **{k: torch.where(has_tokens, v, zero) for k, v in ratios.items()},
    )


def _sequence_advantages(advantages: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[B] stays; [B, T] token advantages become their masked mean per row (0 for empty rows)."""
    adv = advantages.to(dtype)
    if adv.dim() == 1:
        return adv
    zero = torch.zeros((), dtype=dtype, device=adv.device)
    # A_i = (1/n_i) sum_t A_{i,t} over the valid tokens
    return torch.where(mask, adv, zero).sum(-1) / mask.sum(-1).clamp(min=1).to(dtype)


def check_loss_inputs(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, check_finite: bool
) -> Tensor:
    """Check the loss functions' inputs (shapes, dtypes, finiteness; ValueError naming the argument); the bool mask."""
    for name, t in (("logprobs", logprobs), ("old_logprobs", old_logprobs)):
        check_2d(name, t)
        check_float(name, t)
    check_same_shape("old_logprobs", old_logprobs, "logprobs", logprobs)
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor of shape [B, T], got {type(mask).__name__}")
    check_same_shape("mask", mask, "logprobs", logprobs)
    mask_b = as_bool_mask(mask, logprobs)
    if not isinstance(advantages, Tensor) or not advantages.is_floating_point():
        raise ValueError("advantages must be a floating-point torch.Tensor of shape [B] or [B, T]")
    batch = logprobs.shape[0]
    if advantages.shape not in {(batch,), tuple(logprobs.shape)}:
        raise ValueError(
            f"advantages must have shape [B] = [{batch}] or [B, T] = {list(logprobs.shape)}, "
            f"got {list(advantages.shape)}"
        )
    if check_finite:
        check_finite_where("logprobs", logprobs, mask_b)
        check_finite_where("old_logprobs", old_logprobs, mask_b)
        adv_mask = mask_b if advantages.dim() == 2 else mask_b.any(-1)
        bad = ~torch.isfinite(advantages) & adv_mask
        if bool(bad.any()):
            raise ValueError(f"advantages has {int(bad.sum())} non-finite value(s) at valid positions")
    return mask_b


def holder_po_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    p: float | Tensor,
    *,
    clip_mode: str = "sequence",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    check_finite: bool = True,
) -> tuple[Tensor, HolderStats]:
    """HölderPO loss for each sequence, with input checks.

    Args:
        logprobs: [B, T] log pi_theta of the sampled tokens (nats), with grad.
        old_logprobs: [B, T] log pi_old of the same tokens (the behaviour/"old" policy of the PPO ratio).
        advantages: [B] sequence advantages, or [B, T] token advantages (reduced by masked mean per row).
        mask: [B, T] bool or 0/1, valid response tokens.
        p: Hölder order (a finite float) or Tensor[B].
        clip_mode, eps_low, eps_high, dual_clip: the clip (``ClipSpec``, module docstring).
        check_finite: raise ValueError on NaN/inf at valid positions of the inputs.
    Returns:
        loss_per_sequence: [B] in float32 (float64 if an input is float64); 0 for rows without valid tokens.
        stats: ``HolderStats`` per sequence; ``stats.summary()`` reduces every field as it declares.
    """
    clip = ClipSpec(clip_mode, eps_low, eps_high, dual_clip)
    mask_b = check_loss_inputs(logprobs, old_logprobs, advantages, mask, check_finite)
    dtype = compute_dtype(logprobs, old_logprobs, advantages)
    order = as_order(p, logprobs.shape[0], dtype, logprobs.device)
    # x_t = log r_t = log pi_theta(y_t) - log pi_old(y_t)
    log_ratio = logprobs.to(dtype) - old_logprobs.to(dtype)
    adv = _sequence_advantages(advantages, mask_b, dtype)
    return holder_po_objective(log_ratio, mask_b, adv, order, clip)
