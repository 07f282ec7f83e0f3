"""Per-token divergence estimators and the sequence-level importance-sampling weight, with NeMo RL's conventions.

* ``kl_estimate``: Schulman's k1 / k2 / k3 estimators of KL(pi || pi_ref) from the sampled tokens' log-probs
  (the KL penalty of the loss, and the train/inference mismatch diagnostics);
* ``js_divergence``: the Jensen-Shannon divergence of the sampled tokens' probabilities under two policies, as
  NeMo RL's ``js_divergence_error`` defines it (mixture M = (P + Q) / 2 of the two token probabilities);
* ``sequence_is_weights``: one train/inference importance weight per sequence and its truncation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

KL_KINDS = ("k1", "k2", "k3")
IS_LEVELS = ("sequence_mean", "sequence_sum")
TRUNCATIONS = ("tis", "icepop", "seq-mask-tis")


def kl_estimate(
    logprobs: Tensor,
    logprobs_reference: Tensor,
    kind: str,
    *,
    input_clamp: float | None = None,
    output_clamp: float | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) with x = log pi_ref - log pi: k1 = -x, k2 = x^2 / 2, k3 = e^x - 1 - x.

    ``input_clamp`` clamps x to [-c, c] (a clamped token's weight is detached, so the clamp silences both gradients),
    ``weights`` multiply the estimate, ``output_clamp`` clamps the result: NeMo RL v0.7.0's ``calculate_kl``.
    Shapes: any, broadcastable; the result has the broadcast shape.
    """
    # x = log pi_ref - log pi of each sampled token
    x = logprobs_reference - logprobs
    if input_clamp is not None:
        clamped = x.clamp(-input_clamp, input_clamp)
        if weights is not None:
            weights = torch.where(x == clamped, weights, weights.detach())
        x = clamped
    if kind == "k1":
        kl = -x  # k1 = -x
    elif kind == "k2":
        kl = 0.5 * x.square()  # k2 = x^2 / 2
    elif kind == "k3":
        kl = torch.expm1(x) - x  # k3 = e^x - 1 - x >= 0
    else:
        raise ValueError(f"KL estimator kind must be one of {KL_KINDS}, got {kind!r}")
    if weights is not None:
        kl = weights * kl
    if output_clamp is not None:
        kl = kl.clamp(-output_clamp, output_clamp)
    return kl


def js_divergence(logp: Tensor, logq: Tensor) -> Tensor:
    """Per-token JS(P || Q) = (KL(P || M) + KL(Q || M)) / 2 with M = (P + Q) / 2, each KL the k3 term of the sampled
    token (NeMo RL's ``js_divergence_error``). Shapes: equal; >= 0."""
    # log M = log((P + Q) / 2)
    log_mixture = torch.logaddexp(logp, logq) - math.log(2.0)
    # JS = (KL(P || M) + KL(Q || M)) / 2
    return 0.5 * (kl_estimate(log_mixture, logp, "k3") + kl_estimate(log_mixture, logq, "k3"))


def sequence_is_weights(
    log_ratio_sum: Tensor,
    num_tokens: Tensor,
    level: str,
    truncation: str | None = None,
    high: float | None = None,
    low: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Detached train/inference importance weight per sequence, w = pi_old / pi_gen at sequence level.

    Args:
        log_ratio_sum: [B] sum over each sequence's valid tokens of log pi_old - log pi_gen.
        num_tokens: [B] number of valid tokens.
        level: ``sequence_mean``: w = exp(mean_t), the length-normalised (geometric-mean) weight; ``sequence_sum``:
            w = exp(sum_t), NeMo RL's GSPO weight, which collapses on long responses (NeMo RL PR #2269).
        truncation: None, or ``tis`` (clamp w to [low or 0, high]), ``icepop`` (zero sequences whose w lies outside
            [low, high]) or ``seq-mask-tis`` (zero sequences whose geometric-mean weight lies outside [low, high]).
    Returns:
        (weights [B], out_of_bounds [B] bool; all False without truncation). Non-finite weights become 0.
    """
    with torch.no_grad():
        # sequence_mean: log w = (1/n) sum_t log(pi_old / pi_gen);  sequence_sum: log w = sum_t log(pi_old / pi_gen)
        log_mean = log_ratio_sum / num_tokens.clamp(min=1)
        log_w = log_mean if level == "sequence_mean" else log_ratio_sum
        weights = torch.nan_to_num(torch.exp(log_w), nan=0.0, posinf=0.0, neginf=0.0)
        out = torch.zeros_like(weights, dtype=torch.bool)
        if truncation is None:
            return weights, out
        lo = 0.0 if low is None else low
        if truncation == "tis":
            return weights.clamp(lo, high), (weights > high) | (weights < lo)
        probe = weights if truncation == "icepop" else torch.exp(log_mean)
        out = (probe < lo) | (probe > high)
        return torch.where(out, torch.zeros_like(weights), weights), out
