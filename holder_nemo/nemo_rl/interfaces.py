"""NeMo RL's loss enums, resolved lazily so the plugin imports (and is testable) without ``nemo_rl``.

NeMo RL compares ``loss_fn.loss_type == LossType.TOKEN_LEVEL`` and ``loss_fn.input_type == LossInputType.LOGPROB``
by enum identity, so where ``nemo_rl`` is importable the loss must hand out NeMo RL's own members. Elsewhere
(unit tests, the CPU reference run) these mirrors with the same names and values stand in; they hold only the
members the HölderPO loss uses.
"""

from __future__ import annotations

import enum


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
