"""HölderPO with one advantage per token (a critic's GAE, verl's token-level estimators): the token view of rho_p.

The Hölder objective has one ratio per sequence. Its gradient splits over the tokens (paper Eq. 8):

    grad rho_p = rho_p * (1/n) sum_t s_t grad log r_t,     s_t = n W_t(p) = (r_t / rho_p)^p

so token t's term of the loss is  -A_t * rho~_t,  where rho~_t equals rho_p in value and carries token t's share of
its gradient, grad rho~_t = rho_p s_t grad log r_t; in log space

    log rho~_t = sg(log rho_p) + sg(s_t) (x_t - sg(x_t)),    x_t = log r_t, sg = stop-gradient.

The mean of the terms over a sequence's tokens is the sequence's loss -A rho_p, in value and gradient, whenever its
tokens share one advantage (every outcome estimator: GRPO, RLOO, ...): the per-sequence loss of ``objective.py``,
spread over the tokens. When advantages vary inside a sequence, token t's direction grad log r_t is weighted by its
own advantage and by W_t(p): nothing is averaged away before the gradient. The PPO clip is decided per token by the
sign of A_t, on the ratio the clip mode clips: rho~_t (``sequence``: value rho_p, so the A > 0 tokens of a sequence
can be clipped and its A < 0 tokens not) or each token's ratio before the Hölder mean (``token``, ``token_log``).
At p = 0 (s_t = 1) the sequence mode is GSPO-token (Zheng et al. 2025, §4.3), verl's ``gspo``; at p = 1 the token
mode has GRPO's per-token gradient (its loss value per token is the sequence's clipped mean ratio).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from holder_nemo.core.holder_mean import HolderMean, holder_mean, token_shares
from holder_nemo.core.objective import ClipSpec, check_loss_inputs, holder_stats, safe_exp, sign_aware_clip
from holder_nemo.core.stats import HolderStats
from holder_nemo.core.validation import Order, as_order, compute_dtype


def token_view(x: Tensor, mask: Tensor, order: Order) -> tuple[Tensor, HolderMean]:
    """(log rho~_t [B, T], the rows' ``HolderMean``): log rho_p of each row in value, token t's share of its gradient
    (module docstring).

    x: [B, T] log-ratios with grad (any value at masked positions); mask: [B, T] bool; order: the Hölder order.
    """
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))  # padding may hold NaN
    mean = holder_mean(x, mask, order)
    shares = token_shares(x, mask, mean, order)
    # log rho~_t = sg(log rho_p) + sg(s_t) (x_t - sg(x_t)),  s_t = (r_t / rho_p)^p
    return mean.log_rho.detach()[:, None] + shares * (x - x.detach()), mean


def holder_po_token_objective(
    log_ratio: Tensor, mask: Tensor, advantages: Tensor, order: Order, clip: ClipSpec
) -> tuple[Tensor, Tensor, HolderStats]:
    """The loss of every token and its statistics, without input checks.

    Args:
        log_ratio: [B, T] log pi_theta - log pi_old (float32/float64, with grad). mask: [B, T] bool.
        advantages: [B, T] advantage of each token, same dtype. order, clip: as ``holder_po_objective``.
    Returns:
        loss [B, T] (0 at masked positions); clipped [B, T] bool, the tokens whose term the clip held (PPO's
        ``max(-A r, -A clip(r))`` took the clipped side); ``HolderStats`` per sequence, where a sequence counts as
        clipped low (high) when the clip held at least one of its A < 0 (A > 0) tokens, dual-clipped likewise.
    """
    zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
    advantages = torch.where(mask, advantages, zero)  # padding may hold anything, NaN included
    pos, neg = advantages > 0, advantages < 0
    lo, hi = clip.log_bounds
    token_clipped = torch.zeros(log_ratio.shape[0], dtype=log_ratio.dtype, device=log_ratio.device)
    if clip.mode == "sequence":
        view, mean = token_view(log_ratio, mask, order)
        objective = sign_aware_clip(view, pos, neg, lo, hi)
        with torch.no_grad():
            high, low = pos & (view > hi), neg & (view < lo)
    elif clip.mode in ("token", "token_log"):
        objective, _ = token_view(sign_aware_clip(log_ratio, pos, neg, lo, hi), mask, order)
        mean = holder_mean(log_ratio.detach(), mask, order)  # the statistics are of the unclipped ratios
        with torch.no_grad():
            high, low = pos & (log_ratio > hi), neg & (log_ratio < lo)
            token_clipped = (high | low).sum(-1).to(log_ratio.dtype)
    else:
        objective, mean = token_view(log_ratio, mask, order)
        high = low = torch.zeros_like(mask)
    dual = torch.zeros_like(mask)
    if clip.dual_clip is not None:
        log_c = math.log(clip.dual_clip)
        dual = neg & (objective.detach() > log_c)
        # dual clip, A_t < 0: min(objective, log c)
        objective = torch.where(neg, objective.clamp(max=log_c), objective)
    # loss_{i,t} = -A_{i,t} exp(objective_{i,t}); its mean over a row is -A rho_p when the row shares one advantage
    loss = torch.where(mask, -advantages * safe_exp(objective), zero)
    flags = {"clipped_low": low.any(-1), "clipped_high": high.any(-1), "dual_clipped": dual.any(-1)}
    stats = holder_stats(log_ratio, mask, mean, order, clip, token_clipped=token_clipped, **flags)
    return loss, high | low | dual, stats


def holder_po_token_loss(
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
) -> tuple[Tensor, Tensor, HolderStats]:
    """HölderPO loss of every token, each with its own advantage, with input checks.

    Args:
        logprobs, old_logprobs: [B, T] log pi_theta (with grad) and log pi_old of the sampled tokens (nats).
        advantages: [B, T] token advantages (or [B], one per sequence, broadcast over its tokens).
        mask, p, clip_mode, eps_low, eps_high, dual_clip, check_finite: as ``holder_po_loss``.
    Returns:
        ``holder_po_token_objective``'s (loss [B, T], clipped [B, T], HolderStats); the caller aggregates the loss
        over tokens. With one advantage per sequence, the token mean of row i's loss is ``holder_po_loss``'s
        loss of sequence i, in value and gradient.
    """
    clip = ClipSpec(clip_mode, eps_low, eps_high, dual_clip)
    mask_b = check_loss_inputs(logprobs, old_logprobs, advantages, mask, check_finite)
    dtype = compute_dtype(logprobs, old_logprobs, advantages)
    order = as_order(p, logprobs.shape[0], dtype, logprobs.device)
    log_ratio = logprobs.to(dtype) - old_logprobs.to(dtype)
    adv = advantages.to(dtype)
    adv = adv[:, None].expand_as(log_ratio) if adv.dim() == 1 else adv
    return holder_po_token_objective(log_ratio, mask_b, adv, order, clip)
