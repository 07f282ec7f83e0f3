"""The Hölder (power) mean of token importance ratios per sequence.

For sequence i with valid tokens t (mask M), n of them, and log-ratios x_t = log r_t:

    log rho_p = (1/p) log( (1/n) sum_t exp(p x_t) )        p != 0
    log rho_0 = (1/n) sum_t x_t                            (geometric mean, the p -> 0 limit)

evaluated as a centred log-mean-exp (docs/core.md, "Numerics"): with mu the mean of x and m = max_t p (x_t - mu),

    log rho_p = mu + (m + L) / p,   L = log((1/n) sum_t e^{u_t}),   u_t = p (x_t - mu) - m <= 0

where L is log1p of the mean of expm1(u_t) while that mean is > -1/2 (terms near 1: small |p| or similar ratios) and
log(sum) - log(n) otherwise (one token dominates; log1p would cancel). The result is mu + O(p) with an absolute error
of O(eps * range(x)) however small |p| is, and no exponential exceeds 1. The shift m is detached: the value does not
depend on it. p must be finite (``PSchedule`` refuses anything else, and every adapter goes through it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from holder_nemo.core.validation import (
    Order,
    as_bool_mask,
    as_order,
    check_2d,
    check_finite_where,
    check_float,
    compute_dtype,
)


def _nonzero_order(p: Tensor) -> tuple[Tensor, Tensor]:
    """(p != 0, p with 1 where it is 0): the divisor the p != 0 formula uses, never 0."""
    nonzero = p != 0
    return nonzero, torch.where(nonzero, p, torch.ones_like(p))


def _centred_exponents(x0: Tensor, mask: Tensor, p: Tensor, mu: Tensor, ext: Tensor) -> tuple[Tensor, Tensor]:
    """(m [B] detached, u [B, T]): m = p (x_ext - mu) = max_t p (x_t - mu), u_t = p (x_t - mu) - m, capped at 0.

    ``ext`` is the extreme token of each row (max x for p > 0, min x for p < 0), so m equals the maximum of the
    exponents to the last bit; the cap at 0 leaves valid tokens unchanged and keeps padding finite.
    """
    has_tokens = mask.any(-1)
    # m = p (x_ext - mu) = max_t p (x_t - mu)
    shift = torch.where(has_tokens, p * (ext - mu), torch.zeros_like(mu)).detach()
    # u_t = p (x_t - mu) - m  <= 0
    u = (p[:, None] * (x0 - mu[:, None]) - shift[:, None]).clamp(max=0)
    return shift, u


@dataclass(frozen=True)
class HolderMean:
    """Statistics per sequence, [B] each: ``log_rho`` (differentiable), and detached ``mu`` (= log rho_0), ``n``,
    ``x_max``, ``x_min``, ``effective_tokens`` (exp of the entropy of W(p); 0 for sequences without tokens).
    ``shift`` and ``sum_exp`` are m and S = sum_t e^{u_t} (the token weights are e^{u_t} / S)."""

    log_rho: Tensor
    mu: Tensor
    n: Tensor
    x_max: Tensor
    x_min: Tensor
    effective_tokens: Tensor
    shift: Tensor
    sum_exp: Tensor


def holder_mean(x: Tensor, mask: Tensor, order: Order) -> HolderMean:
    """The Hölder mean of the valid tokens of each row, with its statistics (module docstring).

    Args:
        x: [B, T] log-ratios in float32/float64 (any value at masked positions, NaN included).
        mask: [B, T] bool, True at valid tokens.
        order: the Hölder order of every row (``validation.as_order``).
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    x0 = torch.where(mask, x, zero)
    n = mask.sum(-1).to(x.dtype)
    has = n > 0
    n_safe = n.clamp(min=1)
    x0_const = x0.detach()
    x_max = torch.where(mask, x0_const, -inf).amax(-1)
    x_min = torch.where(mask, x0_const, inf).amin(-1)
    # mu = (1/n) sum_t x_t = log rho_0 (the geometric mean)
    mu = x0.sum(-1) / n_safe
    zeros = torch.zeros_like(n)
    log_rho, effective, shift, sum_exp = mu, n, zeros, n_safe
    if not order.zero:
        nonzero, p_safe = _nonzero_order(order.p)
        ext = torch.where(has, torch.where(p_safe >= 0, x_max, x_min), zero)
        shift, u = _centred_exponents(x0, mask, p_safe, mu, ext)
        valid = mask.to(x.dtype)  # u is finite everywhere, so a product masks it (and is cheaper than where)
        exp_u = torch.exp(u) * valid
        # S = sum_t e^{u_t}
        sum_exp = exp_u.sum(-1)
        # (1/n) sum_t (e^{u_t} - 1) = S / n - 1, without the cancellation when every e^{u_t} is near 1
        mean_expm1 = (torch.expm1(u) * valid).sum(-1) / n_safe
        # L = log(S / n) = log1p(S / n - 1) while S / n - 1 > -1/2, else log S - log n.
        # Both branches stay finite (clamps), so the branch torch.where does not take cannot leak NaN gradients.
        log_mean = torch.where(
            mean_expm1 > -0.5,
            torch.log1p(mean_expm1.clamp(min=-0.5)),
            torch.log(sum_exp.clamp(min=1)) - torch.log(n_safe),
        )
        # log rho_p = mu + (m + L) / p  (p != 0);  log rho_0 = mu
        log_rho = torch.where(nonzero, mu + (shift + log_mean) / p_safe, mu)
        # exp of the entropy of W_t = e^{u_t} / S:  log S - sum_t e^{u_t} u_t / S
        s = sum_exp.detach().clamp(min=1)
        sum_exp_u = (exp_u.detach() * u.detach()).sum(-1)
        effective = torch.where(nonzero, torch.exp(torch.log(s) - sum_exp_u / s), n)
    return HolderMean(
        log_rho=torch.where(has, log_rho, zero),
        mu=mu.detach(),
        n=n,
        x_max=torch.where(has, x_max, zero),
        x_min=torch.where(has, x_min, zero),
        effective_tokens=torch.where(has, effective, zero).detach(),
        shift=shift,
        sum_exp=sum_exp,
    )


def prepare_log_ratio(
    log_ratio: Tensor, mask: Tensor, p: float | Tensor, *, check_finite: bool
) -> tuple[Tensor, Tensor, Order]:
    """Validate the arguments of the public functions: (log-ratios in the compute dtype, bool mask, ``Order``)."""
    check_2d("log_ratio", log_ratio)
    check_float("log_ratio", log_ratio)
    mask_b = as_bool_mask(mask, log_ratio)
    x = log_ratio.to(compute_dtype(log_ratio))
    if check_finite:
        check_finite_where("log_ratio", x, mask_b)
    return x, mask_b, as_order(p, x.shape[0], x.dtype, x.device)


def log_holder_mean(log_ratio: Tensor, mask: Tensor, p: float | Tensor, *, check_finite: bool = True) -> Tensor:
    """Log of the Hölder mean of token ratios per sequence, log rho_p (paper Eq. 1).

    Args:
        log_ratio: [B, T] log pi_theta(y_t) - log pi_old(y_t) (nats); any float dtype, computed in float32
            (float64 if given).
        mask: [B, T] bool or 0/1; True/1 at valid response tokens.
        p: the Hölder order, a finite real number (0 -> geometric mean) or a Tensor[B], one per sequence.
        check_finite: raise ValueError on NaN/inf at valid positions of ``log_ratio``.
    Returns:
        [B] log rho_p, normalised by each row's number of valid tokens; 0 for fully masked rows (zero gradient).
    """
    x, mask_b, order = prepare_log_ratio(log_ratio, mask, p, check_finite=check_finite)
    return holder_mean(x, mask_b, order).log_rho


def holder_statistics(log_ratio: Tensor, mask: Tensor, p: float | Tensor, *, check_finite: bool = True) -> HolderMean:
    """``log_holder_mean`` with the statistics that come with it (``HolderMean``); same arguments."""
    x, mask_b, order = prepare_log_ratio(log_ratio, mask, p, check_finite=check_finite)
    return holder_mean(x, mask_b, order)


@torch.no_grad()
def token_shares(x: Tensor, mask: Tensor, mean: HolderMean, order: Order) -> Tensor:
    """n W_t(p) [B, T], detached: each valid token's share of the gradient of log rho_p, so that
    grad log rho_p = (1/n) sum_t share_t grad x_t.

    exp(p (x_t - log rho_p)) = (r_t / rho_p)^p (at most n, since rho_p^p is the mean of r^p), exactly 1 at p = 0, 0 at
    masked positions. ``x`` and ``mask`` as ``holder_mean``; ``mean`` is ``holder_mean(x, mask, order)``.
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    valid = mask.to(x.dtype)
    if order.zero:
        return valid
    # n W_t(p) = (r_t / rho_p)^p = exp(p (x_t - log rho_p))
    exponent = torch.where(mask, order.p[:, None] * (x.detach() - mean.log_rho.detach()[:, None]), zero)
    return torch.where(mask, torch.exp(exponent), zero)


@torch.no_grad()
def holder_token_weights(log_ratio: Tensor, mask: Tensor, p: float | Tensor, *, check_finite: bool = True) -> Tensor:
    """The paper's token weights W_{i,t}(p) = r_t^p / sum_k r_k^p over valid tokens (Eq. 3).

    The gradient of log rho_p is sum_t W_t(p) grad log r_t: p reweights tokens without changing directions.

    Args and dtype conventions as ``log_holder_mean``.
    Returns:
        [B, T] weights summing to 1 over each row's valid tokens (uniform at p = 0), 0 at masked positions and on
        fully masked rows.
    """
    x, mask_b, order = prepare_log_ratio(log_ratio, mask, p, check_finite=check_finite)
    mean = holder_mean(x, mask_b, order)
    # W_t(p) = r_t^p / sum_k r_k^p = (n W_t(p)) / n
    return token_shares(x, mask_b, mean, order) / mean.n.clamp(min=1)[:, None]
