"""The loss on CUDA agrees with the float64 CPU reference, from bf16 logits as NeMo RL feeds them (GPU only)."""

from __future__ import annotations

import pytest
import torch

from holder_nemo.core import holder_po_loss, log_holder_mean


def _log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits.float() if logits.dtype != torch.float64 else logits
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@pytest.mark.gpu
@pytest.mark.parametrize("clip_mode", ["sequence", "token", "token_log"])
@pytest.mark.parametrize("p", [-2.0, 0.0, 1e-4, 2.0])
def test_cuda_loss_and_gradient_match_cpu_float64(clip_mode, p):
    gen = torch.Generator().manual_seed(0)
    b, t, v = 8, 512, 4096
    logits = (torch.randn(b, t, v, generator=gen) * 2).bfloat16()
    targets = torch.randint(0, v, (b, t), generator=gen)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    adv = torch.randn(b, generator=gen)
    with torch.no_grad():
        old = _log_probs(logits.double(), targets) + torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.1

    def run(device: str, dtype: torch.dtype):
        leaf = logits.detach().to(device=device, dtype=dtype).clone().requires_grad_(True)
        lp = _log_probs(leaf, targets.to(device))
        loss, metrics = holder_po_loss(
            lp, old.to(device, dtype=lp.dtype), adv.to(device), mask.to(device), p, clip_mode=clip_mode
        )
        loss.sum().backward()
        return loss.detach().double().cpu(), leaf.grad.double().cpu(), metrics.summary()["log_rho"].double().cpu()

    loss_gpu, grad_gpu, rho_gpu = run("cuda", torch.bfloat16)
    loss_ref, grad_ref, rho_ref = run("cpu", torch.float64)
    # bf16 logits are exact inputs for both; the GPU path computes in float32
    torch.testing.assert_close(loss_gpu, loss_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rho_gpu, rho_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_gpu, grad_ref, rtol=2e-2, atol=1e-6)  # bf16 logits gradient


@pytest.mark.gpu
def test_cuda_holder_mean_extreme_values_are_finite():
    x = torch.tensor([[50.0] + [0.0] * 2999, [-50.0] + [0.0] * 2999], device="cuda", requires_grad=True)
    out = log_holder_mean(x, torch.ones_like(x, dtype=torch.bool), 2.0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
