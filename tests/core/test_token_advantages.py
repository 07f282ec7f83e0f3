"""holder_po_token_loss: one advantage per token, through the token view of rho_p (core/token_advantages.py).

References are written from the formulas, in float64: the sequence loss (one advantage per row), GSPO-token's
gradient (Zheng et al. 2025: grad = -A_t s_i grad log pi_t, clipped per token by A_t's sign), the paper's Eq. 8/16
gradient with each token's own advantage, and GRPO's per-token gradient for the token clip at p = 1.
"""

from __future__ import annotations

import pytest
import torch
from test_loss import EPS, batch, masked_mean

from holder_nemo.core import holder_po_loss, holder_po_token_loss, holder_token_weights

P_VALUES = [-7.0, -2.0, -0.5, 0.0, 1.0, 2.5, 7.0]


def token_batch(seed: int = 0, drift: float = 0.3):
    """``batch`` with advantages that vary inside each row and change sign inside most (a critic's GAE looks so)."""
    new, old, adv, mask = batch(b=8, t=12, spread=0.3, seed=seed, drift=drift)
    gen = torch.Generator().manual_seed(seed + 100)
    token_adv = adv[:, None] + 0.8 * torch.randn(mask.shape, generator=gen, dtype=torch.float64)
    return new, old, token_adv, mask


def grad_of(loss: torch.Tensor, leaf: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad((loss * weights).sum(), leaf)
    return grad


@pytest.mark.parametrize("clip_mode", ["sequence", "token", "token_log", "none"])
@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("dual_clip", [None, 1.5])
def test_one_advantage_per_row_is_the_sequence_loss(clip_mode, p, dual_clip):
    """Broadcast [B] advantages: each row's token mean is holder_po_loss's sequence loss, in value and gradient."""
    new, old, adv, mask = batch(spread=0.4, drift=0.3, seed=2)
    kwargs = {"clip_mode": clip_mode, "dual_clip": dual_clip}
    leaf = new.clone().requires_grad_(True)
    token_loss, _, stats = holder_po_token_loss(leaf, old, adv[:, None].expand_as(new), mask, p, **kwargs)
    n = mask.sum(-1).clamp(min=1)
    row_mean = token_loss.sum(-1) / n
    seq_leaf = new.clone().requires_grad_(True)
    seq_loss, seq_stats = holder_po_loss(seq_leaf, old, adv, mask, p, **kwargs)
    torch.testing.assert_close(row_mean, seq_loss, rtol=1e-12, atol=1e-15)
    (grad,) = torch.autograd.grad(row_mean.sum(), leaf)
    (seq_grad,) = torch.autograd.grad(seq_loss.sum(), seq_leaf)
    torch.testing.assert_close(grad, seq_grad, rtol=1e-10, atol=1e-14)
    assert torch.equal(token_loss[~mask], torch.zeros_like(token_loss[~mask]))
    for name in ("log_rho", "jensen_gap", "effective_tokens", "num_tokens", "valid", "token_clipped"):
        torch.testing.assert_close(getattr(stats, name), getattr(seq_stats, name), rtol=1e-12, atol=1e-12)
    for name in ("clipped_low", "clipped_high", "dual_clipped"):
        assert torch.equal(getattr(stats, name), getattr(seq_stats, name)), name


@pytest.mark.parametrize("weights", ["none", "token"])
def test_sequence_clip_at_p0_is_gspo_token(weights):
    """GSPO-token, from its definition: s_i,t = sg[s_i] pi_t / sg[pi_t], PPO-clipped per token by A_t's sign."""
    new, old, adv, mask = token_batch(drift=0.002)
    eps_low, eps_high = 3e-4, 4e-4
    w = torch.rand(mask.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    w = w if weights == "token" else torch.ones_like(w)
    leaf = new.clone().requires_grad_(True)
    loss, clipped, _ = holder_po_token_loss(leaf, old, adv, mask, 0.0, eps_low=eps_low, eps_high=eps_high)
    ref_leaf = new.clone().requires_grad_(True)
    s = torch.exp(masked_mean(new - old, mask))[:, None]
    s_t = s * torch.exp(ref_leaf - ref_leaf.detach())
    ref = torch.maximum(-adv * s_t, -adv * s_t.clamp(1 - eps_low, 1 + eps_high)) * mask
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad_of(loss, leaf, w), grad_of(ref, ref_leaf, w), rtol=1e-12, atol=1e-15)
    clipped_ref = ((adv > 0) & (s > 1 + eps_high)) | ((adv < 0) & (s < 1 - eps_low))
    assert torch.equal(clipped, clipped_ref & mask)
    mixed = (clipped.any(-1) & ~(clipped | ~mask | (adv == 0)).all(-1)).sum()
    assert mixed > 0, "a row should be clipped for its tokens of one sign and not the other"


@pytest.mark.parametrize("p", [-2.0, -0.5, 0.5, 1.0, 2.5])
def test_sequence_gradient_is_eq16_with_token_advantages(p):
    """d(sum of row i's terms)/d log pi_t = -A_t I_t rho^{1-p} r_t^p (Eq. 8/16 with each token's own advantage):
    token t's direction weighted by n W_t(p) and its advantage; W from the formula r^p / sum r^p."""
    new, old, adv, mask = token_batch(seed=5, drift=0.3)
    leaf = new.clone().requires_grad_(True)
    loss, clipped, stats = holder_po_token_loss(leaf, old, adv, mask, p)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    r = torch.exp(new - old)
    rho = torch.where(mask.any(-1), masked_mean(torch.where(mask, r**p, 0), mask), 1) ** (1 / p)
    closed = torch.where(mask, -adv * (~clipped) * rho[:, None] ** (1 - p) * r**p, 0)
    torch.testing.assert_close(grad, closed, rtol=1e-9, atol=1e-13)
    assert 0 < clipped.sum() < mask.sum()
    # the same share, through the paper's weights: n W_t(p) rho
    shares = holder_token_weights(new - old, mask, p) * mask.sum(-1, keepdim=True)
    by_weights = torch.where(mask, -adv * (~clipped) * rho[:, None] * shares, 0)
    torch.testing.assert_close(closed, by_weights, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(torch.exp(stats.log_rho[mask.any(-1)]), rho[mask.any(-1)], rtol=1e-12, atol=0)


def test_token_clip_at_p1_has_grpo_per_token_gradient():
    """Token clip at p = 1: token t's gradient is GRPO's, d/dlog pi_t of max(-A_t r_t, -A_t clip(r_t)) (row sum)."""
    new, old, adv, mask = token_batch(seed=7, drift=0.1)
    leaf = new.clone().requires_grad_(True)
    loss, clipped, stats = holder_po_token_loss(leaf, old, adv, mask, 1.0, clip_mode="token")
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    ref_leaf = new.clone().requires_grad_(True)
    r = torch.exp(ref_leaf - old)
    grpo = torch.maximum(-adv * r, -adv * r.clamp(1 - EPS, 1 + EPS)) * mask
    (ref_grad,) = torch.autograd.grad(grpo.sum(), ref_leaf)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)
    r = r.detach()
    beyond = ((adv > 0) & (r > 1 + EPS)) | ((adv < 0) & (r < 1 - EPS))
    assert torch.equal(clipped, beyond & mask)
    assert torch.equal(stats.token_clipped, clipped.sum(-1).to(torch.float64))
    # the value of each term is A_t times the row's mean clipped ratio (the sequence's objective)
    clipped_r = torch.where(adv > 0, torch.minimum(r, r.clamp(max=1 + EPS)), torch.maximum(r, r.clamp(min=1 - EPS)))
    torch.testing.assert_close(loss, -adv * masked_mean(clipped_r, mask)[:, None] * mask, rtol=1e-12, atol=1e-15)


def test_dual_clip_bounds_negative_advantage_tokens():
    new, old, adv, mask = token_batch(seed=8, drift=0.8)
    loss, clipped, stats = holder_po_token_loss(new, old, adv, mask, 1.0, dual_clip=1.5)
    rho = torch.exp(stats.log_rho)[:, None]
    capped = (adv < 0) & (rho > 1.5) & mask
    assert capped.any()
    torch.testing.assert_close(loss[capped], (-adv * 1.5)[capped], rtol=1e-12, atol=0)
    assert clipped[capped].all() and stats.dual_clipped[capped.any(-1)].eq(1).all()


def test_padding_may_hold_nan_and_rows_may_be_empty():
    new, old, adv, mask = token_batch(seed=9)
    new = torch.where(mask, new, torch.nan)
    adv = torch.where(mask, adv, torch.nan)
    leaf = new.clone().requires_grad_(True)
    for p in (0.0, 2.0, 40.0):
        loss, _, _ = holder_po_token_loss(leaf, old, adv, mask, p)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert torch.equal(loss[1], torch.zeros_like(loss[1]))  # row 1 has no valid token


def test_float32_and_bf16_inputs_compute_in_float32():
    new, old, adv, mask = token_batch(seed=10)
    ref, _, _ = holder_po_token_loss(new, old, adv, mask, -1.0)
    loss, _, _ = holder_po_token_loss(new.float(), old.float(), adv.float(), mask, -1.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    assert holder_po_token_loss(new.bfloat16(), old.bfloat16(), adv.float(), mask, 1.0)[0].dtype == torch.float32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"advantages": torch.zeros(3, 4)}, r"advantages must have shape \[B\] = \[2\] or \[B, T\] = \[2, 3\]"),
        ({"advantages": torch.tensor([[1.0, float("nan"), 0.0]] * 2)}, "advantages has 2 non-finite"),
        ({"clip_mode": "seq"}, "clip_mode must be one of"),
        ({"p": float("nan")}, "p must be a finite real number"),
    ],
)
def test_bad_input_names_the_argument(change, message):
    args = {
        "logprobs": torch.zeros(2, 3),
        "old_logprobs": torch.zeros(2, 3),
        "advantages": torch.ones(2, 3),
        "mask": torch.ones(2, 3),
        "p": 1.0,
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        holder_po_token_loss(**args)
