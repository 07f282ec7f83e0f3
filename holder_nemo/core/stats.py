"""Per-sequence statistics whose fields declare how they combine across sequences, micro-batches and ranks.

A statistic is one value per sequence, [B]. Its ``Reduce`` says how the B values become one number and how the
numbers of several micro-batches (or data-parallel ranks) combine into the number of the whole batch:

    SEQUENCE_MEAN  sum over the counted sequences / number of sequences   partial results add
    TOKEN_MEAN     per-sequence sums over tokens, summed / number of tokens   partial results add
    SUM            sum over the counted sequences                          partial results add
    MIN / MAX      extreme over the sequences that have tokens (+inf / -inf when none)   min / max

The denominators are passed in (``Normalisers``): local counts for a whole batch, or the *global* counts NeMo RL
hands its loss, in which case every micro-batch's number is already its share of the global value and shares add.
No metric name carries its reduction: ``reduce_table`` stacks every reduced value into one tensor, so a caller
moves all of them to the host in one transfer.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Annotated, get_type_hints

import torch
from torch import Tensor


class Reduce(enum.Enum):
    """How a per-sequence statistic reduces over sequences and combines over micro-batches (module docstring)."""

    SEQUENCE_MEAN = "sequence_mean"
    TOKEN_MEAN = "token_mean"
    SUM = "sum"
    MIN = "min"
    MAX = "max"

    @property
    def empty(self) -> float:
        """The value of no sequences at all, and the identity of ``combine``."""
        return {Reduce.MIN: math.inf, Reduce.MAX: -math.inf}.get(self, 0.0)

    def combine(self, a: float, b: float) -> float:
        """Merge the numbers of two micro-batches (or ranks) of one batch."""
        if self is Reduce.MIN:
            return min(a, b)
        if self is Reduce.MAX:
            return max(a, b)
        return a + b


@dataclass(frozen=True)
class Normalisers:
    """What the reductions divide by and which sequences they count.

    counted: [B] bool, the sequences SEQUENCE_MEAN and SUM add up (NeMo RL: ``sample_mask``).
    has_tokens: [B] bool, the sequences MIN and MAX look at (at least one valid token).
    num_sequences, num_tokens: 0-d tensors, the denominators of SEQUENCE_MEAN and TOKEN_MEAN (at least 1 is used).
    """

    counted: Tensor
    has_tokens: Tensor
    num_sequences: Tensor
    num_tokens: Tensor

    @classmethod
    def local(cls, has_tokens: Tensor, num_tokens: Tensor) -> Normalisers:
        """Counts of this batch alone: sequences with tokens, and their tokens (``num_tokens`` [B])."""
        return cls(has_tokens, has_tokens, has_tokens.sum(), num_tokens.sum())


def reduce_values(values: Tensor, how: Reduce, norm: Normalisers) -> Tensor:
    """One 0-d tensor from the per-sequence ``values`` [B] (NaN / inf in sequences that do not count is ignored)."""
    if how in (Reduce.MIN, Reduce.MAX):
        fill = torch.full((), how.empty, dtype=values.dtype, device=values.device)
        picked = torch.where(norm.has_tokens, values, fill)
        return picked.amin() if how is Reduce.MIN else picked.amax()
    total = torch.where(norm.counted, values, torch.zeros_like(values)).sum()
    if how is Reduce.SUM:
        return total
    count = norm.num_tokens if how is Reduce.TOKEN_MEAN else norm.num_sequences
    return total / count.to(values.dtype).clamp(min=1)


def reduce_table(table: Mapping[str, tuple[Tensor, Reduce]], norm: Normalisers) -> Tensor:
    """[len(table)] reduced values in the table's order, one tensor (one device -> host transfer for all)."""
    if not table:
        return torch.zeros(0)
    return torch.stack([reduce_values(values, how, norm) for values, how in table.values()])


@functools.cache
def _declared_reductions(cls: type) -> tuple[tuple[str, Reduce], ...]:
    """The ``Reduce`` in each field's ``Annotated`` type, in field order."""
    hints = get_type_hints(cls, include_extras=True)
    return tuple((f.name, hints[f.name].__metadata__[0]) for f in fields(cls))


SequenceMean = Annotated[Tensor, Reduce.SEQUENCE_MEAN]
TokenMean = Annotated[Tensor, Reduce.TOKEN_MEAN]
Sum = Annotated[Tensor, Reduce.SUM]
Min = Annotated[Tensor, Reduce.MIN]
Max = Annotated[Tensor, Reduce.MAX]


@dataclass(frozen=True)
class HolderStats:
    """What one HölderPO call measured, per sequence ([B] each, detached; 0 in sequences without valid tokens).

    Each field's annotation declares its ``Reduce``. The "ratio" fields follow NeMo RL's ``probs_ratio*``
    convention: the ratio the clip acts on is the sequence's rho_p (counted once per valid token) in the
    ``sequence`` / ``none`` modes and each token's ratio in the token modes; "clamped" is that ratio inside the clip
    range.
    """

    p: SequenceMean  # Hölder order
    log_rho: SequenceMean  # log rho_p, the unclipped log Hölder mean of the token ratios
    jensen_gap: SequenceMean  # log rho_p - log rho_0 (>= 0 for p > 0)
    effective_tokens: SequenceMean  # exp(entropy of the token weights W(p)); n at p = 0
    clipped_low: SequenceMean  # 1 where the clip raised an A < 0 sequence's objective
    clipped_high: SequenceMean  # 1 where the clip capped an A > 0 sequence's objective
    dual_clipped: SequenceMean  # 1 where the dual clip bounded an A < 0 sequence's loss
    token_clipped: TokenMean  # number of tokens the token clip modes clipped
    num_tokens: Sum  # number of valid tokens
    valid: Sum  # 1 for sequences with at least one valid token
    log_ratio_min: Min  # smallest token log-ratio
    log_ratio_max: Max  # largest token log-ratio
    ratio_sum: TokenMean  # sum over valid tokens of the ratio the clip acts on
    clamped_ratio_sum: TokenMean  # the same, clamped to the clip range
    ratio_min: Min  # smallest ratio the clip acts on
    ratio_max: Max
    clamped_ratio_min: Min
    clamped_ratio_max: Max

    @classmethod
    def reductions(cls) -> dict[str, Reduce]:
        """Field name -> its ``Reduce``."""
        return dict(_declared_reductions(cls))

    def table(self) -> dict[str, tuple[Tensor, Reduce]]:
        """Field name -> (values [B], Reduce), for ``reduce_table``."""
        return {name: (getattr(self, name), how) for name, how in self.reductions().items()}

    def summary(self, norm: Normalisers | None = None) -> dict[str, Tensor]:
        """Every field reduced as declared (0-d tensors); default: this batch's own counts."""
        norm = Normalisers.local(self.valid > 0, self.num_tokens) if norm is None else norm
        return dict(zip(self.reductions(), reduce_table(self.table(), norm), strict=True))
