"""NeMo RL's loss enums, resolved lazily so the plugin imports (and is testable) without ``nemo_rl``.

NeMo RL compares ``loss_fn.loss_type == LossType.TOKEN_LEVEL`` and ``loss_fn.input_type == LossInputType.LOGPROB``
by enum identity, so where ``nemo_rl`` is importable the loss must hand out NeMo RL's own members. Elsewhere
(unit tests, the CPU reference run) these mirrors with the same names and values stand in.
"""

from __future__ import annotations

import enum
from typing import Any


class MirrorLossType(enum.Enum):
    """Same names and values as ``nemo_rl.algorithms.loss.interfaces.LossType`` (v0.6+)."""

    TOKEN_LEVEL = "token_level"
    SEQUENCE_LEVEL = "sequence_level"


class MirrorLossInputType(enum.Enum):
    """Same names and values as ``nemo_rl.algorithms.loss.interfaces.LossInputType`` (v0.6+)."""

    LOGIT = "logit"
    LOGPROB = "logprob"
    DISTILLATION = "distillation"
    DISTILLATION_CROSS_TOKENIZER = "distillation_cross_tokenizer"
    DRAFT = "draft"


def _nemo_rl_enum(name: str) -> Any | None:
    """``nemo_rl``'s enum class, or None when nemo_rl is absent."""
    try:
        from nemo_rl.algorithms.loss import interfaces  # v0.6+ (older versions are refused by the version gate)
    except ImportError:
        return None
    return getattr(interfaces, name)


def loss_type(name: str) -> enum.Enum:
    """``LossType[name]`` from nemo_rl when importable, else the mirror."""
    cls = _nemo_rl_enum("LossType") or MirrorLossType
    return cls[name]


def loss_input_type(name: str) -> enum.Enum:
    """``LossInputType[name]`` from nemo_rl when importable, else the mirror."""
    cls = _nemo_rl_enum("LossInputType") or MirrorLossInputType
    return cls[name]
