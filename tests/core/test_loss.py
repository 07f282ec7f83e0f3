"""holder_po_loss: the paper's special cases (GSPO, GRPO, GMPO), closed-form gradients, clipping, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from holder_nemo.core import holder_po_loss

EPS = 0.2


def batch(b: int = 8, t: int = 12, spread: float = 0.3, seed: int = 0, drift: float = 0.0):
    """float64 NeMo-RL-like batch: ragged masks, one empty row, advantages of both signs and one zero.

    ``drift`` adds a per-row offset to the log-ratios so that some sequences land outside the clip range.
    """
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 3
    new = old + torch.randn(b, t, generator=gen, dtype=torch.float64) * spread
    new = new + torch.randn(b, 1, generator=gen, dtype=torch.float64) * drift
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    lengths[0], lengths[1] = t, 0
    mask = torch.arange(t)[None, :] < lengths[:, None]
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    adv[2] = 0.0
    return new, old, adv, mask


def masked_mean(x, mask):
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def only_valid(x, mask):
    """Reference values for empty rows are meaningless (0 ** (1/p)); the loss defines them as 0."""
    return torch.where(mask.any(-1), x, torch.zeros_like(x))


def ppo(ratio, adv, lo, hi):
    """PPO's pessimistic objective as a loss, in ratio space: max(-A r, -A clip(r))."""
    return torch.maximum(-adv * ratio, -adv * ratio.clamp(lo, hi))


# ---- special cases, written from the published formulas ------------------------------------------------------


def test_sequence_clip_at_p0_is_gspo():
    new, old, adv, mask = batch(spread=0.5)
    loss, _ = holder_po_loss(new, old, adv, mask, 0.0, clip_mode="sequence", eps_low=3e-4, eps_high=4e-4)
    s = torch.exp(masked_mean(new - old, mask))  # GSPO's s_i = (pi/pi_old)^(1/|y|)
    expected = ppo(s, adv, 1 - 3e-4, 1 + 4e-4) * mask.any(-1)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-15)


def test_token_clip_at_p1_is_grpo_sequence_mean():
    new, old, adv, mask = batch(spread=0.5)
    loss, metrics = holder_po_loss(new, old, adv, mask, 1.0, clip_mode="token")
    r = torch.exp(new - old)
    expected = masked_mean(ppo(r, adv[:, None], 1 - EPS, 1 + EPS), mask)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-15)
    assert metrics.summary()["token_clipped"] > 0  # the fraction of valid tokens clipped


@pytest.mark.parametrize("p", [0.0, 1e-6, -1e-6])
def test_token_log_clip_at_p0_is_gmpo(p):
    new, old, adv, mask = batch(spread=0.6)
    eps = 0.4
    loss, _ = holder_po_loss(new, old, adv, mask, p, clip_mode="token_log", eps_low=eps, eps_high=eps)
    delta = new - old
    # GMPO: sign-aware clip of each log-ratio to [-eps, eps], geometric mean, loss -A * ratio
    clipped = torch.where(
        adv[:, None] > 0, torch.minimum(delta, delta.clamp(-eps, eps)), torch.maximum(delta, delta.clamp(-eps, eps))
    )
    expected = -adv * torch.exp(masked_mean(clipped, mask)) * mask.any(-1)
    torch.testing.assert_close(loss, expected, rtol=1e-5 if p else 1e-12, atol=1e-12)


def test_unclipped_p1_is_unclipped_grpo():
    new, old, adv, mask = batch()
    loss, _ = holder_po_loss(new, old, adv, mask, 1.0, clip_mode="none")
    expected = -adv * masked_mean(torch.exp(new - old), mask)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-15)


def test_sequence_clip_is_ppo_on_rho_for_any_p():
    new, old, adv, mask = batch(spread=0.4)
    for p in (-2.0, -0.5, 0.7, 2.0, 3.0):
        loss, _ = holder_po_loss(new, old, adv, mask, p)
        r = torch.exp(new - old)
        rho = (masked_mean(r**p, mask)) ** (1 / p)
        torch.testing.assert_close(loss, only_valid(ppo(rho, adv, 1 - EPS, 1 + EPS), mask), rtol=1e-12, atol=1e-15)


def test_token_clip_is_eq11_for_any_p():
    new, old, adv, mask = batch(spread=0.4)
    r = torch.exp(new - old)
    c = torch.minimum(r, r.clamp(1 - EPS, 1 + EPS))
    d = torch.maximum(r, r.clamp(1 - EPS, 1 + EPS))
    for p in (-2.0, 0.5, 2.0):
        loss, _ = holder_po_loss(new, old, adv, mask, p, clip_mode="token")
        c_p, d_p = masked_mean(c**p, mask) ** (1 / p), masked_mean(d**p, mask) ** (1 / p)
        expected = only_valid(-adv * torch.where(adv > 0, c_p, d_p), mask)
        expected = torch.where(adv == 0, torch.zeros_like(expected), expected)
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-15)


# ---- gradients --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip_mode", ["sequence", "token", "token_log", "none"])
@pytest.mark.parametrize("p", [-2.0, 0.0, 0.5, 1.0, 3.0])
def test_gradient_matches_central_finite_differences(clip_mode, p):
    new, old, adv, mask = batch(b=5, t=6, spread=0.15, seed=3)
    leaf = new.clone().requires_grad_(True)

    def f(x):
        return holder_po_loss(x, old, adv, mask, p, clip_mode=clip_mode)[0]

    assert torch.autograd.gradcheck(f, (leaf,), eps=1e-7, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("p", [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0])
def test_sequence_gradient_is_paper_eq16(p):
    """d loss_i / d log pi_t = -I_i A_i rho^{1-p} r_t^p / |y_i| (Eq. 16; p = 0 -> rho / |y|)."""
    new, old, adv, mask = batch(b=16, spread=0.3, seed=5, drift=0.3)
    leaf = new.clone().requires_grad_(True)
    loss, metrics = holder_po_loss(leaf, old, adv, mask, p)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    r = torch.exp(new - old)
    rho = torch.exp(metrics.log_rho)
    n = mask.sum(-1, keepdim=True).clamp(min=1)
    kept = 1 - metrics.clipped_low - metrics.clipped_high
    kept_valid = (kept * metrics.valid * (adv != 0)).sum()
    assert 0 < kept_valid < (mask.any(-1) & (adv != 0)).sum()  # both clipped and unclipped rows are exercised
    closed = -(kept * adv * rho ** (1 - p))[:, None] * r**p / n * mask
    torch.testing.assert_close(grad, closed, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("p", [-2.0, 0.5, 1.0, 2.0])
def test_token_gradient_is_paper_eq13(p):
    """d loss_i / d log pi_t = -A_i H^{1-p} I_t r_t^p / |y_i|, H = C (A > 0) or D (A < 0)."""
    new, old, adv, mask = batch(spread=0.3, seed=6)
    leaf = new.clone().requires_grad_(True)
    loss, _ = holder_po_loss(leaf, old, adv, mask, p, clip_mode="token")
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    r = torch.exp(new - old)
    pos, neg = (adv > 0)[:, None], (adv < 0)[:, None]
    keep = ~((pos & (r > 1 + EPS)) | (neg & (r < 1 - EPS)))
    h_tokens = torch.where(
        pos, torch.minimum(r, r.clamp(1 - EPS, 1 + EPS)), torch.maximum(r, r.clamp(1 - EPS, 1 + EPS))
    )
    h = only_valid(masked_mean(h_tokens**p, mask) ** (1 / p), mask)
    n = mask.sum(-1, keepdim=True).clamp(min=1)
    closed = -(adv * h ** (1 - p))[:, None] * keep * r**p / n * mask
    closed = torch.where(mask, closed, torch.zeros_like(closed))
    torch.testing.assert_close(grad, closed, rtol=1e-6, atol=1e-12)


def test_empty_rows_zero_adv_and_padding_give_zero_gradient_and_no_nan():
    new, old, adv, mask = batch()
    new = new.masked_fill(~mask, float("nan"))  # padding may hold garbage
    leaf = new.clone().requires_grad_(True)
    for p in (0.0, 2.0, -2.0, 40.0):
        for mode in ("sequence", "token", "token_log", "none"):
            loss, metrics = holder_po_loss(leaf, old, adv, mask, p, clip_mode=mode)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
            assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
            assert loss[1] == 0 and loss[2] == 0
            assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
            assert torch.equal(grad[2], torch.zeros_like(grad[2]))
            values = {**vars(metrics), **metrics.summary()}
            assert all(torch.isfinite(v).all() for k, v in values.items() if k not in {"p"})


# ---- clipping details, dtypes, metrics --------------------------------------------------------------------------


def test_clip_fractions_and_jensen_gap_metrics():
    old = torch.zeros(4, 3, dtype=torch.float64)
    new = torch.log(torch.tensor([[1.5, 1.5, 1.5], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0], [2.0, 0.5, 1.0]])).double()
    adv = torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    mask = torch.ones(4, 3, dtype=torch.bool)
    loss, m = holder_po_loss(new, old, adv, mask, 2.0)
    assert m.clipped_high.tolist() == [1.0, 0.0, 0.0, 1.0]  # row 3: rho_2 = sqrt(5.25/3) = 1.32 > 1.2
    assert m.clipped_low.tolist() == [0.0, 1.0, 0.0, 0.0]
    summary = m.summary()
    assert summary["clipped_high"].item() == pytest.approx(0.5) and summary["clipped_low"].item() == pytest.approx(0.25)
    torch.testing.assert_close(loss[:3], torch.tensor([-1.2, 0.8, -1.0], dtype=torch.float64))
    gap = m.jensen_gap
    assert gap[:3].abs().max() < 1e-15 and gap[3] > 0  # equal ratios -> no gap; p > 0 -> M_p >= M_0
    assert m.effective_tokens[:3].tolist() == pytest.approx([3.0, 3.0, 3.0])
    token_ratio_max, token_ratio_min = summary["log_ratio_max"].exp(), summary["log_ratio_min"].exp()
    assert token_ratio_max.item() == pytest.approx(2.0) and token_ratio_min.item() == pytest.approx(0.5)
    assert summary["valid"].item() == 4 and summary["p"].item() == 2.0


def test_dual_clip_bounds_negative_advantage_loss():
    old = torch.zeros(2, 2)
    new = torch.log(torch.tensor([[10.0, 10.0], [1.1, 1.1]]))
    adv = torch.tensor([-2.0, -2.0])
    mask = torch.ones(2, 2)
    loss, _ = holder_po_loss(new, old, adv, mask, 1.0)
    assert loss.tolist() == pytest.approx([20.0, 2.2])
    loss, m = holder_po_loss(new, old, adv, mask, 1.0, dual_clip=3.0)
    assert loss.tolist() == pytest.approx([6.0, 2.2])
    assert m.dual_clipped.tolist() == [1.0, 0.0]


def test_token_advantages_are_reduced_by_masked_mean():
    new, old, adv, mask = batch()
    token_adv = adv[:, None].expand_as(new) + torch.randn_like(new) * mask
    token_adv = token_adv.masked_fill(~mask, 1e9)  # padding values must not leak in
    seq_adv = masked_mean(token_adv.masked_fill(~mask, 0), mask)
    torch.testing.assert_close(
        holder_po_loss(new, old, token_adv, mask, 1.5)[0], holder_po_loss(new, old, seq_adv, mask, 1.5)[0]
    )


def test_low_precision_inputs_are_upcast():
    new, old, adv, mask = batch(spread=0.05)
    loss_bf16, _ = holder_po_loss(new.bfloat16(), old.bfloat16(), adv.bfloat16(), mask, -2.0)
    assert loss_bf16.dtype == torch.float32
    ref, _ = holder_po_loss(new.bfloat16().double(), old.bfloat16().double(), adv.bfloat16().double(), mask, -2.0)
    torch.testing.assert_close(loss_bf16.double(), ref, rtol=1e-5, atol=1e-6)


def test_large_off_policy_ratios_stay_finite_in_float32():
    new = torch.tensor([[60.0, 0.0, 0.0], [-60.0, 0.0, 0.0]], requires_grad=True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([-1.0, 1.0])
    for p in (3.0, -3.0, 2.0):
        loss, _ = holder_po_loss(new, old, adv, torch.ones(2, 3), p)
        (grad,) = torch.autograd.grad(loss.sum(), new)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"logprobs": torch.zeros(3)}, "logprobs must have shape"),
        ({"old_logprobs": torch.zeros(2, 4)}, "old_logprobs has shape"),
        ({"old_logprobs": torch.zeros(2, 3, dtype=torch.int64)}, "old_logprobs must be a floating-point"),
        ({"mask": torch.ones(2, 4)}, "mask has shape"),
        ({"advantages": torch.zeros(3)}, "advantages must have shape"),
        ({"advantages": torch.zeros(2, dtype=torch.int64)}, "advantages must be a floating-point"),
        ({"logprobs": torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])}, "logprobs has 1 non-finite"),
        ({"old_logprobs": torch.tensor([[0.0, float("-inf"), 0.0], [0.0] * 3])}, "old_logprobs has 1 non-finite"),
        ({"advantages": torch.tensor([float("nan"), 0.0])}, "advantages has 1 non-finite"),
        ({"clip_mode": "tokens"}, "clip_mode must be one of"),
        ({"eps_low": 1.0}, r"eps_low must be in \[0, 1\)"),
        ({"eps_high": -0.1}, "eps_high must be a finite number >= 0"),
        ({"dual_clip": 1.0}, "dual_clip must be None or a number > 1"),
        ({"p": float("nan")}, "p must be a finite real number"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = {
        "logprobs": torch.zeros(2, 3),
        "old_logprobs": torch.zeros(2, 3),
        "advantages": torch.zeros(2),
        "mask": torch.ones(2, 3),
        "p": 1.0,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        holder_po_loss(**args)


def test_finite_checks_can_be_switched_off():
    new = torch.tensor([[0.0, float("nan")]])
    loss, _ = holder_po_loss(new, torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), 1.0, check_finite=False)
    assert math.isnan(loss.item())
