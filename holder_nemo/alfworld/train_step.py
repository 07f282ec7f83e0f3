"""One HölderPO policy update on per-step ALFWorld rows, as the paper's verl fork computes it (CPU reference path).

Loss (verl ``dp_actor.update_policy`` with ``loss_mode=holder_seq``, the paper's ALFWorld runs):

    loss = mean_rows( HölderPO_seq(rows) )  -  entropy_coeff * token_mean(entropy)  +  kl_coef * token_mean(low_var_kl)

with ``low_var_kl`` = k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` clamped to [-10, 10], token means over all
valid response tokens of the mini-batch, gradient clipping at ``max_grad_norm`` and the step skipped on a non-finite
gradient norm. The HölderPO term is ``holder_nemo.core.holder_po_loss`` (sequence clip), one value per row = per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from holder_nemo.alfworld.step_samples import TokenizedBatch
from holder_nemo.core import holder_po_loss, kl_estimate


@dataclass(frozen=True)
class UpdateConfig:
    """Paper ALFWorld settings: KL 0.01 (low_var_kl), entropy 0.001, sequence clip 0.2, grad clip 1.0."""

    kl_coef: float = 0.01
    entropy_coeff: float = 0.001
    eps_low: float = 0.2
    eps_high: float = 0.2
    clip_mode: str = "sequence"
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("kl_coef", "entropy_coeff", "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def token_logprobs_and_entropy(model: torch.nn.Module, batch: TokenizedBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Log-probabilities [B, T-1] of tokens 1..T-1 given their prefix, entropies [B, T-1], and the mask [B, T-1]."""
    attention = torch.arange(batch.input_ids.shape[1])[None, :] < batch.lengths[:, None]
    logits = model(input_ids=batch.input_ids, attention_mask=attention.long()).logits[:, :-1].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = batch.input_ids[:, 1:]
    token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return token_lp, entropy, batch.response_mask[:, 1:]


def policy_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: TokenizedBatch,
    *,
    p: float,
    old_logprobs: Tensor,
    ref_logprobs: Tensor | None,
    config: UpdateConfig | None = None,
) -> dict[str, float]:
    """One optimiser step on ``batch``; ``old_logprobs``/``ref_logprobs`` are [B, T-1] (aligned with the mask)."""
    config = config or UpdateConfig()
    model.train()
    logprobs, entropy, mask = token_logprobs_and_entropy(model, batch)
    if old_logprobs.shape != logprobs.shape:
        raise ValueError(f"old_logprobs shape {tuple(old_logprobs.shape)} != {tuple(logprobs.shape)}")
    per_row, stats = holder_po_loss(
        logprobs,
        old_logprobs,
        batch.advantages,
        mask,
        p,
        clip_mode=config.clip_mode,
        eps_low=config.eps_low,
        eps_high=config.eps_high,
    )
    valid_rows = mask.any(-1)
    pg_loss = per_row[valid_rows].mean() if valid_rows.any() else per_row.sum() * 0
    n_tokens = mask.sum().clamp(min=1)
    entropy_mean = (entropy * mask).sum() / n_tokens
    loss = pg_loss - config.entropy_coeff * entropy_mean
    kl_mean = torch.zeros(())
    if ref_logprobs is not None and config.kl_coef > 0:
        # verl's low_var_kl: k3 with the log-ratio clamped to [-20, 20] and the estimate to [-10, 10]
        low_var_kl = kl_estimate(logprobs, ref_logprobs, "k3", input_clamp=20.0, output_clamp=10.0)
        kl_mean = (low_var_kl * mask).sum() / n_tokens
        loss = loss + config.kl_coef * kl_mean
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    stepped = bool(torch.isfinite(grad_norm))
    if stepped:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    summary = stats.summary()
    return {
        "loss": float(loss.detach()),
        "pg_loss": float(pg_loss.detach()),
        "entropy": float(entropy_mean.detach()),
        "kl": float(kl_mean.detach()),
        "grad_norm": float(grad_norm),
        "stepped": float(stepped),
        "p": float(summary["p"]),
        "log_rho_mean": float(summary["log_rho"]),
        "seq_clip_frac_low": float(summary["clipped_low"]),
        "seq_clip_frac_high": float(summary["clipped_high"]),
    }


@torch.no_grad()
def frozen_logprobs(model: torch.nn.Module, batch: TokenizedBatch) -> Tensor:
    """Log-probabilities [B, T-1] under ``model`` without gradient (old policy / reference policy)."""
    was_training = model.training
    model.eval()
    try:
        return token_logprobs_and_entropy(model, batch)[0]
    finally:
        model.train(was_training)
