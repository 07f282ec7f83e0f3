"""The Hölder (power) mean of token importance ratios, as mergeable partial statistics.

For sequence i with valid tokens t (mask M) and log-ratios x_t = log r_t:

    log rho_p = (1/p) log( (1/n) sum_t exp(p x_t) )        p != 0
    log rho_0 = (1/n) sum_t x_t                            (geometric mean, the p -> 0 limit)
    log rho_{+inf} = max_t x_t,  log rho_{-inf} = min_t x_t

evaluated as a centred log-mean-exp (docs/core.md, "Numerics"): with mu the mean of x and m = max_t p (x_t - mu),

    log rho_p = mu + (m + L) / p,   L = log((1/n) sum_t e^{u_t}),   u_t = p (x_t - mu) - m <= 0

where L is log1p of the mean of expm1(u_t) while that mean is > -1/2 (terms near 1: small |p| or similar ratios) and
log(sum) - log(n) otherwise (one token dominates; log1p would cancel). The result is mu + O(p) with an absolute error
of O(eps * range(x)) however small |p| is, and no exponential exceeds 1.

Partial statistics. Any subset of a sequence's tokens (a shard) reduces to ``NUM_PARTIALS`` numbers per sequence,
centred on the shard's own mean mu_r and shifted by its own m_r: n_r, sum x, max x, min x, m_r,
S_r = sum e^{u_t}, E_r = sum expm1(u_t), U_r = sum e^{u_t} u_t, and (p = +/-inf) the count and sum of the tokens
tied at the max / min. Shards merge exactly, like the running maximum and sum of an online softmax: with
mu = sum x / n, c_r = p (mu_r - mu) + m_r, m = max_r c_r and d_r = c_r - m <= 0,

    S = sum_r e^{d_r} S_r    E = sum_r (e^{d_r} E_r + n_r expm1(d_r))    U = sum_r e^{d_r} (U_r + d_r S_r)

(expm1(u + d) = e^d expm1(u) + expm1(d) keeps the small-|p| digits). One process merges one shard (d = 0 exactly, so
the arithmetic is the centred formula above); a context-parallel group all-gathers its [B, NUM_PARTIALS] blocks once
and every rank merges the same blocks (``holder_nemo.distributed``). Gradients flow through the merge by autograd; a
rank that merges its own differentiable block with the others' detached ones gets the exact gradient of its tokens
without communication in backward. The shift m_r is detached: the value does not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
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

N, SUM_X, X_MAX, X_MIN, SHIFT, SUM_EXP, SUM_EXPM1, SUM_EXP_U, TIES_MAX, TIES_MIN, TIED_MAX, TIED_MIN = range(12)
NUM_PARTIALS = 12


def _finite_order(p: Tensor) -> tuple[Tensor, Tensor]:
    """(finite non-zero p, p with 1 elsewhere): the coefficient the finite-p formulas use, always finite."""
    finite = torch.isfinite(p) & (p != 0)
    return finite, torch.where(finite, p, torch.ones_like(p))


def _centred_exponents(x0: Tensor, mask: Tensor, p: Tensor, mu: Tensor, ext: Tensor) -> tuple[Tensor, Tensor]:
    """(m [B] detached, u [B, T]): m = p (x_ext - mu) = max_t p (x_t - mu), u_t = p (x_t - mu) - m, capped at 0.

    ``ext`` is the extreme token of each row (max x for p > 0, min x for p < 0), so m equals the maximum of the
    exponents to the last bit; the cap at 0 leaves valid tokens unchanged and keeps padding finite.
    """
    has_tokens = mask.any(-1)
    shift = torch.where(has_tokens, p * (ext - mu), torch.zeros_like(mu)).detach()
    u = (p[:, None] * (x0 - mu[:, None]) - shift[:, None]).clamp(max=0)
    return shift, u


def holder_partials(x: Tensor, mask: Tensor, order: Order) -> Tensor:
    """[B, NUM_PARTIALS] partial statistics of the valid tokens of ``x`` (module docstring).

    Args:
        x: [B, T] log-ratios in float32/float64 (any value at masked positions, NaN included).
        mask: [B, T] bool, True at valid tokens.
        order: the Hölder order of every row (``validation.as_order``).
    Returns:
        the partials, differentiable in x through sum x, S, E and the tied sums (the other columns are detached).
    """
    return torch.stack(_partial_columns(x, mask, order), dim=-1)


def _partial_columns(x: Tensor, mask: Tensor, order: Order) -> list[Tensor]:
    """The ``NUM_PARTIALS`` columns of ``holder_partials``, [B] each."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    x0 = torch.where(mask, x, zero)
    n = mask.sum(-1).to(x.dtype)
    sum_x = x0.sum(-1)
    x0_const = x0.detach()
    x_max = torch.where(mask, x0_const, -inf).amax(-1)
    x_min = torch.where(mask, x0_const, inf).amin(-1)
    columns = [n, sum_x, x_max, x_min] + [torch.zeros_like(n)] * (NUM_PARTIALS - 4)
    if not order.zero:
        _, p_safe = _finite_order(order.p)
        mu = sum_x / n.clamp(min=1)
        ext = torch.where(n > 0, torch.where(p_safe >= 0, x_max, x_min), zero)
        shift, u = _centred_exponents(x0, mask, p_safe, mu, ext)
        valid = mask.to(x.dtype)  # u is finite everywhere, so a product masks it (and is cheaper than where)
        exp_u = torch.exp(u) * valid
        columns[SHIFT] = shift
        columns[SUM_EXP] = exp_u.sum(-1)
        columns[SUM_EXPM1] = (torch.expm1(u) * valid).sum(-1)
        columns[SUM_EXP_U] = (exp_u.detach() * u.detach()).sum(-1)
    if order.may_be_infinite:
        for count, tied_sum, extreme in ((TIES_MAX, TIED_MAX, x_max), (TIES_MIN, TIED_MIN, x_min)):
            tied = mask & (x0_const == extreme[:, None])
            columns[count] = tied.sum(-1).to(x.dtype)
            columns[tied_sum] = torch.where(tied, x0, zero).sum(-1)
    return columns


@dataclass(frozen=True)
class HolderMean:
    """Merged statistics per sequence, [B] each: ``log_rho`` (differentiable), and detached ``mu`` (= log rho_0),
    ``n``, ``x_max``, ``x_min``, ``effective_tokens`` (exp of the entropy of W(p); 0 for sequences without tokens).
    ``shift`` and ``sum_exp`` are the merged m and S (the token weights of one shard are e^{u_t + d} / S)."""

    log_rho: Tensor
    mu: Tensor
    n: Tensor
    x_max: Tensor
    x_min: Tensor
    effective_tokens: Tensor
    shift: Tensor
    sum_exp: Tensor


def _tie_value(cols: Sequence[Tensor], extreme: Tensor, count: int, tied_sum: int) -> tuple[Tensor, Tensor]:
    """(value, ties) at p = +/-inf: the extreme itself, with the gradient of the mean of the tied tokens."""
    col = X_MAX if count == TIES_MAX else X_MIN
    holds = (cols[col] == extreme) & (cols[N] > 0)
    ties = torch.where(holds, cols[count], 0).sum(0)
    tie_mean = torch.where(holds, cols[tied_sum], 0).sum(0) / ties.clamp(min=1)
    return extreme.detach() + (tie_mean - tie_mean.detach()), ties


def merge_partials(blocks: Tensor, order: Order) -> HolderMean:
    """Merge [R, B, NUM_PARTIALS] partials (R shards of the same B sequences) into each sequence's statistics."""
    return _merge(blocks.unbind(-1), order)


def _merge(cols: Sequence[Tensor], order: Order) -> HolderMean:
    """``merge_partials`` on the columns ([R, B] each) of the blocks."""
    n_r = cols[N]
    n = n_r.sum(0)
    has = n > 0
    n_safe = n.clamp(min=1)
    zero = torch.zeros_like(n)
    mu = cols[SUM_X].sum(0) / n_safe
    x_max, x_min = cols[X_MAX].amax(0), cols[X_MIN].amin(0)
    log_rho, effective, shift, sum_exp = mu, n, zero, n.clamp(min=1)
    if not order.zero:
        finite, p_safe = _finite_order(order.p)
        neg_inf = torch.full_like(n_r, float("-inf"))
        c = torch.where(n_r > 0, p_safe * (cols[SUM_X] / n_r.clamp(min=1) - mu) + cols[SHIFT], neg_inf)
        shift = torch.where(has, c.amax(0), zero).detach()
        d = torch.where(n_r > 0, c - shift, neg_inf)
        scale = torch.exp(d)
        d0 = torch.where(n_r > 0, d, torch.zeros_like(d))
        sum_exp = (scale * cols[SUM_EXP]).sum(0)
        sum_expm1 = (scale * cols[SUM_EXPM1] + n_r * torch.expm1(d0)).sum(0)
        sum_exp_u = (scale * (cols[SUM_EXP_U] + d0 * cols[SUM_EXP])).sum(0).detach()
        mean_expm1 = sum_expm1 / n_safe
        # Both branches stay finite (clamps), so the branch torch.where does not take cannot leak NaN gradients.
        log_mean = torch.where(
            mean_expm1 > -0.5,
            torch.log1p(mean_expm1.clamp(min=-0.5)),
            torch.log(sum_exp.clamp(min=1)) - torch.log(n_safe),
        )
        log_rho = torch.where(finite, mu + (shift + log_mean) / p_safe, mu)
        s = sum_exp.detach().clamp(min=1)
        effective = torch.where(finite, torch.exp(torch.log(s) - sum_exp_u / s), n)
    if order.may_be_infinite:
        top, ties_max = _tie_value(cols, x_max, TIES_MAX, TIED_MAX)
        bottom, ties_min = _tie_value(cols, x_min, TIES_MIN, TIED_MIN)
        plus, minus = torch.isposinf(order.p), torch.isneginf(order.p)
        log_rho = torch.where(plus, top, torch.where(minus, bottom, log_rho))
        effective = torch.where(plus, ties_max, torch.where(minus, ties_min, effective))
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


def holder_mean(x: Tensor, mask: Tensor, order: Order) -> HolderMean:
    """Statistics of whole sequences in one process: the merge of one shard. Arguments as ``holder_partials``."""
    return _merge([column[None] for column in _partial_columns(x, mask, order)], order)


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
        p: the Hölder order, a real number (0 -> geometric mean, +/-inf -> max/min) or a Tensor[B], one per sequence.
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

    exp(p (x_t - log rho_p)) = (r_t / rho_p)^p for finite p (at most n, since rho_p^p is the mean of r^p), exactly 1
    at p = 0, n / ties on the tied argmax (argmin) tokens at p = +inf (-inf), 0 at masked positions. ``x`` and
    ``mask`` as ``holder_partials``; ``mean`` is ``holder_mean(x, mask, order)``.
    """
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    valid = mask.to(x.dtype)
    if order.zero:
        return valid
    p = order.p[:, None]
    finite, p_safe = _finite_order(p)
    exponent = torch.where(mask & finite, p_safe * (x.detach() - mean.log_rho.detach()[:, None]), zero)
    shares = torch.where(finite, torch.exp(exponent), valid)
    if order.may_be_infinite:
        for infinite, extreme in ((torch.isposinf(p), mean.x_max), (torch.isneginf(p), mean.x_min)):
            tied = mask & (x.detach() == extreme[:, None])
            ties = tied.sum(-1, keepdim=True).clamp(min=1)
            shares = torch.where(infinite, tied * mean.n[:, None] / ties, shares)
    return torch.where(mask, shares, zero)


@torch.no_grad()
def holder_token_weights(log_ratio: Tensor, mask: Tensor, p: float | Tensor, *, check_finite: bool = True) -> Tensor:
    """The paper's token weights W_{i,t}(p) = r_t^p / sum_k r_k^p over valid tokens (Eq. 3).

    The gradient of log rho_p is sum_t W_t(p) grad log r_t: p reweights tokens without changing directions.

    Args and dtype conventions as ``log_holder_mean``.
    Returns:
        [B, T] weights summing to 1 over each row's valid tokens (uniform at p = 0, uniform over the argmax/argmin
        tokens at p = +/-inf), 0 at masked positions and on fully masked rows.
    """
    x, mask_b, order = prepare_log_ratio(log_ratio, mask, p, check_finite=check_finite)
    mean = holder_mean(x, mask_b, order)
    return token_shares(x, mask_b, mean, order) / mean.n.clamp(min=1)[:, None]
