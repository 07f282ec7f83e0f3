"""``HolderPOLossFn``: the HölderPO policy loss as a NeMo RL v0.6+/v0.7 ``LossFunction``, a thin composition.

Contract (NeMo RL v0.7.0, ``nemo_rl/algorithms/loss/interfaces.py`` and ``ClippedPGLossFn``):

* ``loss_type = SEQUENCE_LEVEL``, ``input_type = LOGPROB``; called with keyword arguments
  ``next_token_logprobs [B, S-1], data, global_valid_seqs, global_valid_toks``.
* Shift: position t of ``next_token_logprobs`` scores token t+1, so ``token_mask``, ``advantages``,
  ``prev_logprobs``, ``generation_logprobs`` and ``reference_policy_logprobs`` are read as ``[:, 1:]``;
  the valid-token mask is ``token_mask[:, 1:] * sample_mask[:, None]``.
* Normalisation: every term is a sum over this micro-batch's sequences divided by ``global_valid_seqs`` (summed over
  data-parallel ranks), so the losses of any split into micro-batches / DP ranks / single packed sequences add up
  to the full-batch loss and gradient.
* Metrics are Python floats normalised the same way (by the global sequence or token count, as each declares its
  ``Reduce``), so NeMo RL's reductions give global values (``metrics.py``: the keys, their reductions, and the
  import-time check that NeMo RL's name-based reduction agrees).

One call: read the micro-batch (``MicroBatch.read``) -> the core objective (``holder_po_objective``) -> the
train/inference diagnostics and the KL penalty (``holder_nemo.core.estimators``) -> one stacked tensor of the loss
value, the non-finite count and every metric -> one device-to-host transfer.

The loss object is cloudpickled to every policy worker on every ``policy.train`` call; the current training step
travels with it (``set_step`` on the driver, see ``holder_nemo.nemo_rl.steps``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from holder_nemo.core import (
    ClipSpec,
    HolderStats,
    Normalisers,
    Reduce,
    as_order,
    holder_po_objective,
    js_divergence,
    kl_estimate,
    reduce_table,
    reduce_values,
    sequence_is_weights,
)
from holder_nemo.core.validation import check_finite_where
from holder_nemo.nemo_rl.loss_config import HolderPOLossConfig, parse_loss_config
from holder_nemo.nemo_rl.metrics import HOLDER_KEYS, METRIC_REDUCTIONS, OTHER_REDUCTIONS


# NeMo RL's loss enums, resolved lazily so the plugin imports (and is testable) without ``nemo_rl``. NeMo RL compares
# ``loss_fn.loss_type == LossType.TOKEN_LEVEL`` and ``loss_fn.input_type == LossInputType.LOGPROB`` by enum identity,
# so where ``nemo_rl`` is importable the loss must hand out NeMo RL's own members. Elsewhere (unit tests, the CPU
# reference run) these mirrors with the same names and values stand in; they hold only the members the loss uses.
class MirrorLossType(enum.Enum):
    """Same names and values as ``nemo_rl.algorithms.loss.interfaces.LossType`` (v0.6+), the members we use."""

    SEQUENCE_LEVEL = "sequence_level"


class MirrorLossInputType(enum.Enum):
    """Same names and values as ``nemo_rl.algorithms.loss.interfaces.LossInputType`` (v0.6+), the members we use."""

    LOGPROB = "logprob"


def nemo_rl_enum_member(enum_name: str, member: str) -> enum.Enum:
    """``nemo_rl``'s ``<enum_name>[member]`` when nemo_rl is importable, else the mirror's."""
    try:
        from nemo_rl.algorithms.loss import interfaces  # v0.6+ (older versions are refused by the version gate)
    except ImportError:
        mirrors = {"LossType": MirrorLossType, "LossInputType": MirrorLossInputType}
        return mirrors[enum_name][member]
    return getattr(interfaces, enum_name)[member]


@dataclass(frozen=True)
class MicroBatch:
    """A NeMo RL micro-batch in the loss's frame: [B, T] with T = S-1, float32 (float64 for float64 log-probs).

    curr: log pi_theta (with grad); old: the ratio's denominator (prev or gen, per ``holder.importance_ratio``);
    prev / gen: ``prev_logprobs`` / ``generation_logprobs``; mask: bool ``token_mask * sample_mask``;
    advantages: [B] masked mean per row; sample_valid: [B] bool; ref: reference log-probs (None without a KL
    penalty); curr_unfiltered: log pi_theta before top-k/top-p filtering (the KL's input, ``curr`` if absent).
    """

    curr: Tensor
    old: Tensor
    prev: Tensor
    gen: Tensor
    mask: Tensor
    advantages: Tensor
    sample_valid: Tensor
    ref: Tensor | None
    curr_unfiltered: Tensor

    @classmethod
    def read(cls, curr: Tensor, data: Mapping[str, Any], config: HolderPOLossConfig) -> MicroBatch:
        dtype = torch.float64 if curr.dtype == torch.float64 else torch.float32
        device = curr.device

        def shifted(key: str) -> Tensor:
            return data[key][:, 1:].to(device=device, dtype=dtype)

        sample_mask = data["sample_mask"].to(device)
        # mask = token_mask[:, 1:] * sample_mask (position t scores token t+1)
        mask = (data["token_mask"][:, 1:].to(device) * sample_mask.unsqueeze(-1)) != 0
        zero = torch.zeros((), dtype=dtype, device=device)
        # A_i = (1/n_i) sum_t A_{i,t} over the valid tokens
        advantages = torch.where(mask, shifted("advantages"), zero).sum(-1) / mask.sum(-1).clamp(min=1).to(dtype)
        prev, gen = shifted("prev_logprobs"), shifted("generation_logprobs")
        unfiltered = data.get("curr_logprobs_unfiltered")
        return cls(
            curr=curr.to(dtype),
            old=prev if config.holder.importance_ratio == "train_vs_old" else gen,
            prev=prev,
            gen=gen,
            mask=mask,
            advantages=advantages,
            sample_valid=sample_mask != 0,
            ref=shifted("reference_policy_logprobs") if config.kl_penalty != 0 else None,
            curr_unfiltered=curr.to(dtype) if unfiltered is None else unfiltered.to(device=device, dtype=dtype),
        )

    def row_sum(self, values: Tensor) -> Tensor:
        """[B, T] -> [B] sum over valid tokens (padding may hold NaN / inf)."""
        return torch.where(self.mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(-1)


def _global_count(count: Tensor | float | int, like: Tensor) -> Tensor:
    return torch.as_tensor(count, device=like.device).detach().to(like.dtype)


class HolderPOLossFn:
    """HölderPO loss for NeMo RL (v0.6+ ``LOGPROB`` interface). Build it from the ``loss_fn`` config section.

    Args:
        loss_fn_config: the ``loss_fn`` mapping (ClippedPG keys + ``holder:`` block; see ``loss_config.py`` and
            docs/nemo_rl.md). Invalid or unknown keys raise ``LossConfigError`` naming the key.

    The Hölder order p of the current call is ``schedule(step)`` with ``step`` set by ``set_step`` (1-based: the
    k-th GRPO training step uses p(k), as in the paper's code); before any ``set_step`` the step is 1. The
    reward-driven schedule (``kind: reward``) also reads the step's mean reward, set by ``set_mean_reward``; only a
    caller that knows it (the reference run) may configure it: the schema refuses it otherwise, because NeMo RL
    v0.7.0 does not pass rewards to ``policy.train``.
    """

    metric_reductions = METRIC_REDUCTIONS

    def __init__(self, loss_fn_config: Mapping[str, Any] | HolderPOLossConfig) -> None:
        self.config: HolderPOLossConfig = parse_loss_config(loss_fn_config)
        self.schedule = self.config.holder.schedule
        cfg = self.config
        self.clip = ClipSpec(cfg.holder.clip_mode, cfg.ratio_clip_min, cfg.ratio_clip_max, cfg.ratio_clip_c)
        # Attributes NeMo RL reads off the loss object (prepare_loss_input: top-k/top-p unfiltered logprobs for KL).
        self.reference_policy_kl_penalty = cfg.kl_penalty
        self.use_linear_ce_fusion = False
        self.step = 1
        self.mean_reward: float | None = None

    # NeMo RL's enums when nemo_rl is importable (identity comparisons in the workers), mirrors otherwise.
    @property
    def loss_type(self):
        return nemo_rl_enum_member("LossType", "SEQUENCE_LEVEL")

    @property
    def input_type(self):
        return nemo_rl_enum_member("LossInputType", "LOGPROB")

    def set_step(self, step: int) -> None:
        """Set the 1-based global training step whose p the next calls use."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        self.step = step

    def set_mean_reward(self, mean_reward: float) -> None:
        """The mean reward of the step about to be trained (read by the ``reward`` schedule only)."""
        self.mean_reward = float(mean_reward)

    @property
    def p(self) -> float:
        """Hölder order used at the current step (and mean reward, for kind ``reward``)."""
        return self.schedule(self.step, self.mean_reward)

    def __call__(
        self,
        next_token_logprobs: Tensor,
        data: Mapping[str, Any],
        global_valid_seqs: Tensor,
        global_valid_toks: Tensor,
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of one micro-batch (already divided by the global sequence count) and its metrics.

        Args:
            next_token_logprobs: [B, S-1] log pi_theta of token t+1 at position t (any float dtype; computed in
                float32, float64 if given).
            data: NeMo RL micro-batch with ``token_mask`` [B, S], ``sample_mask`` [B], ``advantages`` [B, S],
                ``prev_logprobs`` [B, S], ``generation_logprobs`` [B, S], and ``reference_policy_logprobs`` [B, S]
                (only when the KL penalty is on; ``curr_logprobs_unfiltered`` [B, S-1] is used for it if present).
            global_valid_seqs: number of valid sequences in the global batch (scalar tensor).
            global_valid_toks: number of valid next-token positions in the global batch (scalar tensor).
        """
        batch = MicroBatch.read(next_token_logprobs, data, self.config)
        # x_t = log pi_theta(y_t) - log pi_old(y_t)  (pi_old: prev or gen, per holder.importance_ratio)
        log_ratio = batch.curr - batch.old
        order = as_order(self.p, log_ratio.shape[0], log_ratio.dtype, log_ratio.device)
        loss_per_seq, stats = holder_po_objective(log_ratio, batch.mask, batch.advantages, order, self.clip)
        norm = Normalisers(
            batch.sample_valid,
            stats.num_tokens > 0,
            _global_count(global_valid_seqs, log_ratio),
            _global_count(global_valid_toks, log_ratio),
        )
        table = {HOLDER_KEYS[name]: entry for name, entry in stats.table().items() if name in HOLDER_KEYS}
        table.update(self._diagnostics(batch, log_ratio))
        is_weights, is_table = self._is_weights(batch, stats)
        table.update(is_table)
        if self.config.use_importance_sampling_correction:
            loss_per_seq = loss_per_seq * is_weights
        # loss = sum_{i counted} loss_i / global_valid_seqs  (micro-batches and ranks add up to the batch's loss)
        loss = reduce_values(loss_per_seq, Reduce.SEQUENCE_MEAN, norm)
        if self.config.kl_penalty != 0:
            # KL_i = (1/n_i) sum_t kl_t;  loss += beta * sum_{i counted} KL_i / global_valid_seqs
            kl_per_seq = batch.row_sum(self._kl_tokens(batch)) / stats.num_tokens.clamp(min=1)
            kl = reduce_values(kl_per_seq, Reduce.SEQUENCE_MEAN, norm)
            loss = loss + self.config.kl_penalty * kl
            table["kl_penalty"] = (kl_per_seq.detach(), Reduce.SEQUENCE_MEAN)
        return loss, self._to_host(loss, log_ratio, batch, table, norm)

    def _diagnostics(self, batch: MicroBatch, log_ratio: Tensor) -> dict[str, tuple[Tensor, Reduce]]:
        """Per-sequence token sums of NeMo RL's mismatch diagnostics, the entropy estimate and KL(old || new)."""
        with torch.no_grad():
            kind = self.config.reference_policy_kl_type
            prev, gen, curr = batch.prev, batch.gen, batch.curr.detach()
            sums = {
                "num_valid_samples": torch.ones_like(batch.advantages),
                "token_mult_prob_error": batch.row_sum(torch.exp((gen - prev).abs())),  # sum_t e^{|gen - prev|}
                "gen_kl_error": batch.row_sum(kl_estimate(gen, prev, kind)),
                "policy_kl_error": batch.row_sum(kl_estimate(prev, gen, kind)),
                "js_divergence_error": batch.row_sum(js_divergence(prev, gen)),
                "approx_entropy": -batch.row_sum(torch.exp(curr - gen) * curr),  # -sum_t (pi / pi_gen) log pi
                "holder/kl_to_old": batch.row_sum(kl_estimate(curr, batch.old, "k3")),
                "kl_penalty": torch.zeros_like(batch.advantages),
            }
        return {key: (values, OTHER_REDUCTIONS[key]) for key, values in sums.items()}

    def _is_weights(self, batch: MicroBatch, stats: HolderStats) -> tuple[Tensor, dict[str, tuple[Tensor, Reduce]]]:
        """The train/inference importance weight per sequence (``core.sequence_is_weights``) and its metrics."""
        cfg = self.config
        with torch.no_grad():
            weights, out = sequence_is_weights(
                batch.row_sum(batch.prev - batch.gen),
                stats.num_tokens,
                cfg.holder.is_correction_level,
                cfg.truncated_importance_sampling_type,
                cfg.truncated_importance_sampling_ratio,
                cfg.truncated_importance_sampling_ratio_min,
            )
        table = {"sampling_importance_ratio": (weights, Reduce.SEQUENCE_MEAN)}
        if cfg.truncated_importance_sampling_type is not None:
            table["is_oob_ratio"] = (out.to(weights.dtype), Reduce.SEQUENCE_MEAN)
        return weights, table

    def _kl_tokens(self, batch: MicroBatch) -> Tensor:
        """Per-token KL(pi_theta || pi_ref) estimator (with gradient); masked tokens hold junk."""
        cfg = self.config
        unfiltered = batch.curr_unfiltered
        if cfg.use_on_policy_kl_approximation:  # w_t = pi_theta / pi_gen
            weights = torch.exp(unfiltered - batch.gen)
        else:  # value 1, keeps the score-function gradient of the sampled tokens (as NeMo RL v0.7.0)
            weights = torch.exp(unfiltered - unfiltered.detach())
        weights = torch.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0)
        kind, clamp_in, clamp_out = cfg.reference_policy_kl_type, cfg.kl_input_clamp_value, cfg.kl_output_clamp_value
        return kl_estimate(unfiltered, batch.ref, kind, input_clamp=clamp_in, output_clamp=clamp_out, weights=weights)

    def _to_host(
        self, loss: Tensor, log_ratio: Tensor, batch: MicroBatch, table: dict, norm: Normalisers
    ) -> dict[str, float]:
        """Every number of the call in one device -> host transfer; raises on non-finite inputs (``check_finite``)."""
        check = self.config.holder.check_finite
        with torch.no_grad():
            bad = batch.row_sum(~torch.isfinite(log_ratio)) + (~torch.isfinite(batch.advantages) & norm.has_tokens)
            bad_count = bad.sum().to(loss.dtype) if check else loss.new_zeros(())
            values = torch.cat([torch.stack([loss.detach(), bad_count]), reduce_table(table, norm)]).tolist()
        if values[1] > 0:
            self._raise_nonfinite(batch)
        return {"loss": values[0], **dict(zip(table, values[2:], strict=True))}

    @staticmethod
    def _raise_nonfinite(batch: MicroBatch) -> None:
        """Name the input that holds a NaN / inf at a valid position (the error path may read the device freely)."""
        check_finite_where("logprobs", batch.curr.detach(), batch.mask)
        check_finite_where("old_logprobs", batch.old, batch.mask)
        raise ValueError("advantages has non-finite value(s) at valid positions")
