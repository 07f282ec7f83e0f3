"""HölderPO maths, framework-free (torch only): the Hölder mean (centred log-mean-exp), the clipped
objective, the divergence estimators, the per-sequence statistics and the p schedules (docs/core.md)."""

from holder_nemo.core.estimators import KL_KINDS, js_divergence, kl_estimate, sequence_is_weights
from holder_nemo.core.holder_mean import (
    HolderMean,
    holder_mean,
    holder_statistics,
    holder_token_weights,
    log_holder_mean,
)
from holder_nemo.core.objective import CLIP_MODES, ClipSpec, holder_po_loss, holder_po_objective
from holder_nemo.core.schedules import SCHEDULE_KINDS, PSchedule
from holder_nemo.core.stats import HolderStats, Normalisers, Reduce, reduce_table, reduce_values
from holder_nemo.core.token_advantages import holder_po_token_loss, holder_po_token_objective
from holder_nemo.core.validation import Order, as_order

__all__ = [
    "CLIP_MODES",
    "KL_KINDS",
    "SCHEDULE_KINDS",
    "ClipSpec",
    "HolderMean",
    "HolderStats",
    "Normalisers",
    "Order",
    "PSchedule",
    "Reduce",
    "as_order",
    "holder_mean",
    "holder_po_loss",
    "holder_po_objective",
    "holder_po_token_loss",
    "holder_po_token_objective",
    "holder_statistics",
    "holder_token_weights",
    "js_divergence",
    "kl_estimate",
    "log_holder_mean",
    "reduce_table",
    "reduce_values",
    "sequence_is_weights",
]
