"""log_holder_mean and holder_token_weights against float64 references, limits and the paper's identities."""

from __future__ import annotations

import math

import pytest
import torch

from holder_nemo.core import as_order, holder_mean, holder_statistics, holder_token_weights, log_holder_mean

INF = float("inf")


def reference_log_holder_mean(x: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """Straight from Eq. 1 in float64, one row at a time (logsumexp form; fine away from tiny |p|)."""
    out = []
    for row, row_mask in zip(x.double(), mask.bool(), strict=True):
        v = row[row_mask]
        if v.numel() == 0:
            out.append(0.0)
        elif p == 0:
            out.append(v.mean().item())
        else:
            out.append(((torch.logsumexp(p * v, 0) - math.log(v.numel())) / p).item())
    return torch.tensor(out, dtype=torch.float64)


def masked_log_ratios(seed: int = 0, b: int = 7, t: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """([b, t] float64 log-ratios, [b, t] bool mask) with the cases a reduction gets wrong.

    Row 0 has no valid token, row 1 exactly one; rows 2 and 3 each hold one dominating token (+40 / -40) that decides
    the mean at large |p|.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.3
    x[2, 5] = 40.0
    x[3, 7] = -40.0
    mask = torch.rand(b, t, generator=gen) < 0.8
    mask[0] = False
    mask[1] = False
    mask[1, 9] = True
    return x, mask


def ragged_batch(batch: int = 6, length: int = 9, scale: float = 0.5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, generator=gen, dtype=torch.float64) * scale
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0], lengths[-1] = length, 0  # a full row and an empty row
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return x, mask


@pytest.mark.parametrize("p", [0.0, 0.25, 1.0, 2.0, 3.0, -0.5, -1.0, -2.0, 7.0, -7.0, 40.0, 300.0, -300.0])
def test_matches_float64_reference(p):
    x, mask = ragged_batch()
    got = log_holder_mean(x, mask, p)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, reference_log_holder_mean(x, mask, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [0.0, 1.0, -2.0, 3.0])
def test_float32_and_bf16_inputs_are_computed_in_float32(p):
    x, mask = ragged_batch(scale=0.05)
    ref = reference_log_holder_mean(x, mask, p)
    got32 = log_holder_mean(x.float(), mask, p)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref, rtol=1e-5, atol=1e-7)
    bf16 = x.bfloat16()
    got_bf16 = log_holder_mean(bf16, mask, p)
    assert got_bf16.dtype == torch.float32
    torch.testing.assert_close(
        got_bf16.double(), reference_log_holder_mean(bf16.double(), mask, p), rtol=1e-5, atol=1e-6
    )


def test_mask_may_be_bool_int_or_float():
    x, mask = ragged_batch()
    expected = log_holder_mean(x, mask, 1.5)
    for as_type in (torch.int64, torch.int32, torch.float32, torch.float64):
        torch.testing.assert_close(log_holder_mean(x, mask.to(as_type), 1.5), expected, rtol=0, atol=0)


def test_p_zero_is_geometric_mean_and_jensen_ordering():
    x, mask = ragged_batch()
    mu = log_holder_mean(x, mask, 0.0)
    n = mask.sum(-1).clamp(min=1)
    torch.testing.assert_close(mu, (x * mask).sum(-1) / n, rtol=0, atol=1e-15)
    # power-mean inequality: M_p is non-decreasing in p (strictly where the row has distinct values), from min to max
    ps = [-5.0, -1.0, -1e-4, 0.0, 1e-4, 0.5, 1.0, 4.0]
    values = torch.stack([log_holder_mean(x, mask, p) for p in ps])
    assert bool((values[1:] - values[:-1] >= -1e-12).all())
    rows = mask.any(-1)
    x_min = torch.where(mask, x, INF).amin(-1)[rows]
    x_max = torch.where(mask, x, -INF).amax(-1)[rows]
    assert bool((values[0][rows] >= x_min).all() and (values[-1][rows] <= x_max).all())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-7)])
@pytest.mark.parametrize("tiny", [1e-7, 1e-6, 1e-5, 1e-4, 1e-3])
def test_tiny_p_continuous_with_zero_in_value(dtype, tol, tiny):
    # Second-order expansion: log M_p = mu + p var/2 + O(p^2), var = population variance over valid tokens.
    x, mask = ragged_batch(scale=1.0)
    x = x.to(dtype)
    mu = log_holder_mean(x, mask, 0.0).double()
    xd, n = x.double(), mask.sum(-1).clamp(min=1)
    var = (((xd - mu[:, None]) ** 2) * mask).sum(-1) / n
    for sign in (1, -1):
        p = sign * tiny
        got = log_holder_mean(x, mask, p).double()
        expected = mu + p * var / 2
        # remainder is O(p^2 * E|x-mu|^3) which is far below tol for these p
        assert (got - expected).abs().max().item() < tol * 10 + 10 * tiny**2, (p, dtype)


@pytest.mark.parametrize("tiny", [1e-7, 1e-5, 1e-3])
def test_tiny_p_continuous_with_zero_in_gradient(tiny):
    x, mask = ragged_batch(scale=1.0)
    grads = {}
    for p in (0.0, tiny, -tiny):
        leaf = x.clone().requires_grad_(True)
        log_holder_mean(leaf, mask, p).sum().backward()
        grads[p] = leaf.grad
    uniform = mask.double() / mask.sum(-1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(grads[0.0], uniform.double(), rtol=0, atol=1e-15)
    for p in (tiny, -tiny):
        # d/dx_t log M_p = W_t(p) = (1 + p (x_t - mu) + O(p^2)) / n
        assert (grads[p] - grads[0.0]).abs().max().item() < 10 * tiny


def test_gradient_is_the_paper_token_weight():
    """Eq. 3: grad rho = rho sum_t W_t grad log pi_t, i.e. d log rho / d x_t = W_t(p)."""
    x, mask = ragged_batch()
    for p in (-3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 5.0):
        leaf = x.clone().requires_grad_(True)
        log_holder_mean(leaf, mask, p).sum().backward()
        torch.testing.assert_close(leaf.grad, holder_token_weights(x, mask, p), rtol=1e-12, atol=1e-14)


def test_gradient_matches_central_finite_differences():
    x, mask = ragged_batch(batch=3, length=5)
    for p in (-2.0, -0.3, 0.0, 1e-4, 1.0, 3.0):
        leaf = x.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t, p=p: log_holder_mean(t, mask, p), (leaf,), eps=1e-6, atol=1e-9)


def test_extreme_p_times_log_ratio_has_no_overflow_or_nan():
    x = torch.tensor([[50.0, 0.0, -3.0, 1.0], [-50.0, 0.0, 2.0, 0.0], [500.0, -500.0, 0.0, 0.0]])
    mask = torch.ones_like(x, dtype=torch.bool)
    for p in (2.0, -2.0, 20.0, -20.0, 3.0):
        leaf = x.clone().requires_grad_(True)
        out = log_holder_mean(leaf, mask, p)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(leaf.grad).all(), p
        torch.testing.assert_close(out.double(), reference_log_holder_mean(x, mask, p), rtol=1e-6, atol=1e-5)
    # the case that breaks the authors' direct exp(p x): p = 2, x = +50 -> rho = 9.47e19 in float32
    # (the authors' form gives inf); we are exact to float32 resolution of log rho (ulp(46) = 3.8e-6)
    log_rho = log_holder_mean(torch.tensor([[50.0] + [0.0] * 2999]), torch.ones(1, 3000), 2.0)
    assert math.isclose(log_rho.item(), 0.5 * math.log((math.exp(100) + 2999) / 3000), rel_tol=1e-7)


def test_fully_masked_rows_return_zero_with_zero_gradient():
    x = torch.tensor([[float("nan"), 1.0], [0.3, -0.2]], requires_grad=True)
    mask = torch.tensor([[False, False], [True, True]])
    for p in (0.0, 2.0, -2.0, 300.0, -300.0, 1e-9):
        out = log_holder_mean(x, mask, p)
        assert out[0].item() == 0.0
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(grad[0], torch.zeros(2)) and torch.isfinite(grad).all()


def test_per_sequence_p_tensor_equals_row_by_row():
    x, mask = ragged_batch(batch=5)
    p = torch.tensor([2.0, 0.0, -300.0, -1.5, 1e-6], dtype=torch.float64)
    got = log_holder_mean(x, mask, p)
    for i in range(5):
        single = log_holder_mean(x[i : i + 1], mask[i : i + 1], float(p[i]))
        torch.testing.assert_close(got[i : i + 1], single, rtol=0, atol=0)


def test_large_p_approaches_max_and_min_and_infinite_p_is_refused():
    """p -> +/-inf is the max/min limit (with the gradient shared by the tied tokens); the limit itself is no
    HölderPO order: ``PSchedule`` refuses it, and so does the core, naming p."""
    x = torch.tensor([[0.1, 0.7, 0.7, -0.2]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False]])
    out = log_holder_mean(x, mask, 1e4)
    assert out.item() == pytest.approx(0.7 - math.log(3 / 2) / 1e4, abs=1e-12)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.5, 0.5, 0.0]], dtype=torch.float64))
    assert log_holder_mean(x, mask, -1e4).item() == pytest.approx(0.1 + math.log(3) / 1e4, abs=1e-12)
    for p in (INF, -INF, torch.tensor([1.0, INF]), torch.tensor([-INF])):
        with pytest.raises(ValueError, match=r"p must be (a )?finite"):
            rows = len(p) if isinstance(p, torch.Tensor) else 1
            log_holder_mean(torch.zeros(rows, 2), torch.ones(rows, 2), p)


def test_token_weights_definition_and_limits():
    x, mask = ragged_batch()
    for p in (-2.0, 0.0, 1.0, 3.0):
        w = holder_token_weights(x, mask, p)
        expected = torch.zeros_like(x)
        for i in range(x.shape[0]):
            if mask[i].any():
                r_p = torch.exp(p * x[i][mask[i]])
                expected[i][mask[i]] = r_p / r_p.sum()
        torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-15)
        assert torch.equal(w[~mask], torch.zeros(int((~mask).sum()), dtype=w.dtype))
    n = mask.sum(-1).double()
    torch.testing.assert_close(holder_statistics(x, mask, 0.0).effective_tokens, n, rtol=1e-12, atol=0)


def test_theorem1_entropy_of_weights_peaks_at_zero():
    x, mask = ragged_batch(scale=1.0)
    rows = mask.sum(-1) >= 2
    ent = {p: holder_statistics(x, mask, p).effective_tokens[rows] for p in (-4.0, -1.0, 0.0, 1.0, 4.0)}
    assert bool((ent[0.0] > ent[1.0]).all() and (ent[1.0] > ent[4.0]).all())
    assert bool((ent[0.0] > ent[-1.0]).all() and (ent[-1.0] > ent[-4.0]).all())


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(3), torch.ones(3), 1.0), "log_ratio must have shape"),
        ((torch.zeros(2, 3), torch.ones(2, 4), 1.0), "mask has shape"),
        ((torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3), 1.0), "log_ratio must be a floating-point"),
        ((torch.zeros(2, 3), torch.full((2, 3), 2), 1.0), "mask must hold only 0 and 1"),
        ((torch.zeros(2, 3), torch.ones(2, 3), float("nan")), "p must be a finite real number"),
        ((torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0.5, float("nan")])), "p must be finite in every row"),
        ((torch.zeros(2, 3), torch.ones(2, 3), torch.ones(3)), r"p must be a float or a Tensor of shape \[B\]"),
        ((torch.tensor([[0.0, float("nan")]]), torch.ones(1, 2), 1.0), "log_ratio has 1 non-finite"),
        ((torch.tensor([[0.0, float("inf")]]), torch.ones(1, 2), 1.0), r"first at \[0, 1\]"),
    ],
)
def test_bad_input_names_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        log_holder_mean(*args)


def test_finite_check_ignores_padding_and_can_be_switched_off():
    x = torch.tensor([[0.1, float("nan")]])
    mask = torch.tensor([[1, 0]])
    assert log_holder_mean(x, mask, 2.0).item() == pytest.approx(0.1)
    bad = torch.tensor([[0.1, float("nan")]])
    assert torch.isnan(log_holder_mean(bad, torch.ones(1, 2), 2.0, check_finite=False)).all()


def test_the_mean_is_the_centred_formula_to_the_last_bit():
    """log rho is the plain centred log-mean-exp of the module docstring, written out here independently."""
    x, mask = masked_log_ratios(seed=3)
    for p in (0.37, -1.5, 4.0):
        order = as_order(p, x.shape[0], x.dtype, x.device)
        x0 = torch.where(mask, x, 0.0)
        n = mask.sum(-1).clamp(min=1).double()
        mu = x0.sum(-1) / n
        a = torch.where(mask, p * (x0 - mu[:, None]), -INF)
        shift = a.amax(-1).where(mask.any(-1), 0.0)
        u = a - shift[:, None]
        mean_expm1 = torch.where(mask, torch.expm1(u), 0.0).sum(-1) / n
        log_sum = torch.log(torch.where(mask, torch.exp(u), 0.0).sum(-1).clamp(min=1)) - torch.log(n)
        log_mean = torch.where(mean_expm1 > -0.5, torch.log1p(mean_expm1.clamp(min=-0.5)), log_sum)
        expected = (mu + (shift + log_mean) / p).where(mask.any(-1), 0.0)
        assert torch.equal(holder_mean(x, mask, order).log_rho, expected)


@pytest.mark.parametrize("p", [1e-9, -3e-6, 1e-4, 25.0, -25.0, 300.0, -300.0])
def test_float32_is_accurate_for_tiny_and_huge_p_times_x(p):
    """float32 to 1e-5 of the float64 reference for tiny |p| (the centred form) and |p * x| in the thousands (no
    overflow), gradients finite."""
    x, mask = masked_log_ratios()
    ref = log_holder_mean(x, mask, p)
    scale = float(x[mask].abs().max())
    leaf = x.float().requires_grad_(True)
    out32 = log_holder_mean(leaf, mask, p)
    (grad,) = torch.autograd.grad(out32.sum(), leaf)
    assert out32.dtype == torch.float32 and bool(torch.isfinite(out32).all() and torch.isfinite(grad).all())
    torch.testing.assert_close(out32.double(), ref, rtol=1e-5, atol=1e-5 * scale)
