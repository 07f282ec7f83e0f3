"""verl-agent's entropy bonus (``actor.entropy_coeff`` 0.001) through NeMo RL's loss interface.

verl subtracts ``entropy_coeff x token-mean entropy`` from the policy loss, the entropy of the full next-token
distribution at every response position. NeMo RL v0.7.0 hands a ``LOGPROB`` loss function only the log-probs of the
sampled tokens (``next_token_logprobs``), not the logits, so the entropy is estimated from the samples:

* value: ``H_t ~ -w_t log pi(y_t)`` with ``w_t = pi(y_t) / pi_old(y_t)`` (``prev_logprobs``), unbiased for the
  entropy at position t since ``y_t`` was drawn from ``pi_old``;
* gradient: the surrogate ``-sg(w_t log pi(y_t)) log pi(y_t)`` has, in expectation over ``y_t``, exactly the gradient
  of ``H_t`` (score-function form of ``grad H = -E_pi[log pi grad log pi]``; the ``+1`` term has mean 0).

Both are token means over the global batch (sum over this micro-batch's valid tokens / ``global_valid_toks``), so
they add up over micro-batches and data-parallel ranks as NeMo RL's other terms do. The estimate is noisier than
verl's exact entropy (one sample per position); its expectation and its gradient's are the same
(``tests/alfworld/test_entropy.py`` checks both in closed form).

It needs whole rows: context parallelism and sequence packing hand the loss a shard, so
``training.PerStepSettings`` refuses the bonus with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


class EntropyBonusLoss:
    """``inner`` loss minus ``coeff x`` (estimated token-mean entropy); everything else is ``inner``'s (``p``,
    ``set_step``, ``loss_type``, ``input_type``...), so the step hook and NeMo RL see the HölderPO loss."""

    def __init__(self, inner: Any, coeff: float) -> None:
        self.inner = inner
        self.coeff = float(coeff)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (unpickling): avoid recursing into __getattr__
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def loss_type(self) -> Any:
        return self.inner.loss_type

    @property
    def input_type(self) -> Any:
        return self.inner.input_type

    def __call__(
        self, next_token_logprobs: Tensor, data: Mapping[str, Any], global_valid_seqs: Tensor, global_valid_toks: Tensor
    ) -> tuple[Tensor, dict[str, Any]]:
        """The inner loss of this micro-batch minus the entropy term, and the metrics plus ``entropy_estimate``
        (NeMo RL's ``LossFunction`` call, as ``HolderPOLossFn.__call__``)."""
        loss, metrics = self.inner(next_token_logprobs, data, global_valid_seqs, global_valid_toks)
        term, estimate = self.entropy_term(next_token_logprobs, data, global_valid_toks)
        metrics = dict(metrics)
        metrics["entropy_estimate"] = float(estimate)
        return loss - self.coeff * term.to(loss.dtype), metrics

    @staticmethod
    def entropy_term(
        next_token_logprobs: Tensor, data: Mapping[str, Any], global_valid_toks: Tensor | float
    ) -> tuple[Tensor, Tensor]:
        """(term, estimate): ``term``'s value is the importance-weighted entropy estimate (token sum / the global
        valid-token count) and its gradient the score-function entropy gradient; ``estimate`` is the value, detached.

        Shapes: ``next_token_logprobs`` [B, S-1]; ``data["token_mask"]``, ``data["prev_logprobs"]`` [B, S] (column t
        scores token t, so both are read as ``[:, 1:]``); ``data["sample_mask"]`` [B].
        """
        width = data["token_mask"].shape[1] - 1
        if next_token_logprobs.shape[1] != width:
            raise ValueError(
                f"entropy bonus: next_token_logprobs has {next_token_logprobs.shape[1]} columns for rows of {width} "
                "next tokens; it needs whole rows (no context parallelism, no sequence packing)"
            )
        dtype = torch.float64 if next_token_logprobs.dtype == torch.float64 else torch.float32
        curr = next_token_logprobs.to(dtype)
        old = data["prev_logprobs"][:, 1:].to(device=curr.device, dtype=dtype)
        mask = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).to(curr.device) > 0
        weight = torch.exp(curr.detach() - old)
        zero = torch.zeros((), dtype=dtype, device=curr.device)
        count = torch.as_tensor(global_valid_toks, device=curr.device).detach().to(dtype).clamp(min=1.0)
        estimate = torch.where(mask, -weight * curr.detach(), zero).sum() / count
        surrogate = torch.where(mask, -(weight * curr.detach()) * curr, zero).sum() / count
        return estimate + surrogate - surrogate.detach(), estimate
