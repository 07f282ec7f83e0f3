"""The entropy bonus through NeMo RL's LOGPROB loss interface (``alfworld.entropy.EntropyBonusLoss``), float64.

Closed forms: for a categorical policy pi = softmax(z) and a sampling policy pi_old, the estimator's expectation
over the sampled token equals the exact entropy, and the expectation of its gradient equals the exact entropy
gradient. The expectation is exact (a sum over the vocabulary weighted by pi_old), not Monte Carlo.
"""

from __future__ import annotations

import pytest
import torch

from holder_nemo.alfworld.entropy import EntropyBonusLoss
from holder_nemo.nemo_rl.loss import HolderPOLossFn

F64 = torch.float64
LOSS_CONFIG = {
    "ratio_clip_min": 0.2,
    "ratio_clip_max": 0.2,
    "reference_policy_kl_penalty": 0.0,
    "holder": {"schedule": {"kind": "constant", "p_max": 1.0}},
}


def _row(logprob: torch.Tensor, old: float, advantage: float = 0.0) -> dict:
    """One micro-batch row: [prompt token, sampled token]; column 1 holds the sampled token's values."""
    return {
        "token_mask": torch.tensor([[0.0, 1.0]], dtype=F64),
        "sample_mask": torch.tensor([1.0], dtype=F64),
        "advantages": torch.tensor([[0.0, advantage]], dtype=F64),
        "prev_logprobs": torch.tensor([[0.0, old]], dtype=F64),
        "generation_logprobs": torch.tensor([[0.0, old]], dtype=F64),
    }


def test_expected_value_and_gradient_are_the_exact_entropy() -> None:
    torch.manual_seed(0)
    z = torch.randn(7, dtype=F64, requires_grad=True)
    old = torch.log_softmax(torch.randn(7, dtype=F64), -1)  # pi_old != pi: the importance weight matters
    logp = torch.log_softmax(z, -1)
    exact = -(logp.exp() * logp).sum()
    (exact_grad,) = torch.autograd.grad(exact, z)

    value, grad = torch.zeros((), dtype=F64), torch.zeros(7, dtype=F64)
    for v in range(7):
        lp = torch.log_softmax(z, -1)[v].reshape(1, 1)
        term, estimate = EntropyBonusLoss.entropy_term(lp, _row(lp, float(old[v])), 1.0)
        (g,) = torch.autograd.grad(term, z)
        value += old[v].exp() * estimate
        grad += old[v].exp() * g
        assert torch.allclose(term.detach(), estimate)  # the term's value is the estimate
    assert torch.allclose(value, exact.detach(), rtol=1e-12, atol=0)
    assert torch.allclose(grad, exact_grad, rtol=1e-10, atol=1e-14)


def test_wrapper_subtracts_coeff_times_the_token_mean_and_keeps_the_holder_loss() -> None:
    inner = HolderPOLossFn(LOSS_CONFIG)
    wrapped = EntropyBonusLoss(inner, 0.001)
    torch.manual_seed(1)
    curr = (torch.randn(3, 4, dtype=F64) - 2.0).requires_grad_(True)
    data = {
        "token_mask": torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=F64),
        "sample_mask": torch.tensor([1.0, 1.0, 0.0], dtype=F64),  # the third row is padding: no loss, no entropy
        "advantages": torch.tensor([[0.5] * 5, [-1.0] * 5, [2.0] * 5], dtype=F64),
        "prev_logprobs": torch.randn(3, 5, dtype=F64) - 2.0,
        "generation_logprobs": torch.randn(3, 5, dtype=F64) - 2.0,
    }
    toks = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).sum()
    seqs = data["sample_mask"].sum()
    base, base_metrics = inner(curr, data, seqs, toks)
    loss, metrics = wrapped(curr, data, seqs, toks)
    mask = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]) > 0
    weight = torch.exp(curr.detach() - data["prev_logprobs"][:, 1:])
    estimate = (-weight * curr.detach())[mask].sum() / toks
    assert torch.allclose(loss, base - 0.001 * estimate, rtol=1e-12)
    assert metrics["entropy_estimate"] == pytest.approx(float(estimate), rel=1e-12)
    assert {k for k in base_metrics} < set(metrics)
    (g_loss,) = torch.autograd.grad(loss, curr)
    (g_base,) = torch.autograd.grad(inner(curr, data, seqs, toks)[0], curr)
    expected = torch.where(mask, 0.001 * weight * curr.detach() / toks, torch.zeros((), dtype=F64))
    assert torch.allclose(g_loss - g_base, expected, rtol=1e-10, atol=1e-15)


def test_wrapper_is_the_holder_loss_for_nemo_rl_and_the_step_hook() -> None:
    schedule = {"kind": "linear_dec", "p_max": 1.0, "p_min": -1.0, "steps": 4}
    inner = HolderPOLossFn({**LOSS_CONFIG, "holder": {"schedule": schedule}})
    wrapped = EntropyBonusLoss(inner, 0.001)
    assert wrapped.loss_type is inner.loss_type and wrapped.input_type is inner.input_type
    wrapped.set_step(3)
    assert inner.step == 3 and wrapped.p == inner.p == pytest.approx(1.0 - 2.0 * 3 / 4)
    import pickle

    clone = pickle.loads(pickle.dumps(wrapped))  # NeMo RL ships the loss to every worker
    assert clone.p == wrapped.p and clone.coeff == 0.001


def test_a_sharded_micro_batch_is_refused() -> None:
    data = _row(torch.zeros(1, 1, dtype=F64), 0.0)
    with pytest.raises(ValueError, match="whole rows"):
        EntropyBonusLoss.entropy_term(torch.zeros(1, 3, dtype=F64), data, 1.0)
