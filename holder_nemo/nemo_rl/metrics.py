"""The metrics ``HolderPOLossFn`` reports to NeMo RL: their keys and how each combines.

NeMo RL decides by *name* how it combines a loss's metrics (v0.7.0: its workers do not divide keys containing
``_min`` / ``_max`` by the number of global batches; ``grpo_train`` and ``SequencePackingLossWrapper`` take min / max
of the four ``probs_ratio*_min/_max`` keys and sum every other). Our metrics declare their reduction instead (the
HölderPO ones are the fields of ``holder_nemo.core.HolderStats``); ``check_nemo_rl_reductions`` runs at import and
refuses a table NeMo RL would combine otherwise, so a new ``..._max`` metric cannot be summed silently.
"""

from __future__ import annotations

from collections.abc import Mapping

from holder_nemo.core import HolderStats, Reduce

# HölderPO statistics -> NeMo RL metric keys (the reduction is the field's own, declared in ``HolderStats``).
HOLDER_KEYS = {
    "ratio_sum": "probs_ratio",
    "clamped_ratio_sum": "probs_ratio_clamped",
    "ratio_min": "probs_ratio_min",
    "ratio_max": "probs_ratio_max",
    "clamped_ratio_min": "probs_ratio_clamped_min",
    "clamped_ratio_max": "probs_ratio_clamped_max",
    "p": "holder/p",
    "log_rho": "holder/log_rho",
    "jensen_gap": "holder/jensen_gap",
    "effective_tokens": "holder/effective_tokens",
    "clipped_low": "holder/seq_clip_frac_low",
    "clipped_high": "holder/seq_clip_frac_high",
    "dual_clipped": "holder/seq_dual_clip_frac",
    "token_clipped": "holder/token_clip_frac",
}
# The other metrics, per sequence: NeMo RL's train/inference mismatch diagnostics and ClippedPG's bookkeeping.
OTHER_REDUCTIONS = {
    "num_valid_samples": Reduce.SUM,
    "token_mult_prob_error": Reduce.TOKEN_MEAN,
    "gen_kl_error": Reduce.TOKEN_MEAN,
    "policy_kl_error": Reduce.TOKEN_MEAN,
    "js_divergence_error": Reduce.TOKEN_MEAN,
    "approx_entropy": Reduce.TOKEN_MEAN,
    "holder/kl_to_old": Reduce.TOKEN_MEAN,
    "kl_penalty": Reduce.SEQUENCE_MEAN,
    "sampling_importance_ratio": Reduce.SEQUENCE_MEAN,
    "is_oob_ratio": Reduce.SEQUENCE_MEAN,
}
METRIC_REDUCTIONS: dict[str, Reduce] = {
    "loss": Reduce.SUM,
    **{key: HolderStats.reductions()[name] for name, key in HOLDER_KEYS.items()},
    **OTHER_REDUCTIONS,
}
# grpo_train / SequencePackingLossWrapper (v0.7.0) reduce exactly these keys by min / max.
NEMO_RL_EXTREME_KEYS = {"probs_ratio_min", "probs_ratio_max", "probs_ratio_clamped_min", "probs_ratio_clamped_max"}


def check_nemo_rl_reductions(reductions: Mapping[str, Reduce]) -> None:
    """Raise if NeMo RL's name-based reductions would combine a metric otherwise than it declares."""
    for key, how in reductions.items():
        extreme = how in (Reduce.MIN, Reduce.MAX)
        named = "_min" in key or "_max" in key
        if extreme != named or (extreme and key not in NEMO_RL_EXTREME_KEYS):
            raise AssertionError(f"metric {key!r} reduces by {how.value}, but NeMo RL would combine it by its name")


check_nemo_rl_reductions(METRIC_REDUCTIONS)
