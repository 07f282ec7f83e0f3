"""Context parallelism: the Hölder mean of sequences whose tokens are spread over a process group.

Each rank reduces its own tokens to the core's partial statistics (``holder_nemo.core.holder_partials``: a
[B, NUM_PARTIALS] block per call), one all-gather collects every rank's block, and every rank merges the same blocks
with ``holder_nemo.core.merge_partials``: the result is the Hölder mean of the whole sequences, identical on every
rank, for any assignment of token positions to ranks (contiguous, Megatron's 2 * CP load-balanced chunks, Ulysses,
...). Nothing of size O(tokens) crosses ranks; the maths is the single-process one (a single process merges one
block).

Gradient convention ("exact local gradient"): each rank merges its own block with its autograd graph and the other
ranks' blocks detached, so backward on rank r yields d(loss)/d x_t for the tokens rank r holds, with no
communication; the gradient of a loss computed identically on every rank is the sum over ranks of the per-rank
gradients (no 1/CP, no x CP).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from holder_nemo.core import HolderMean, holder_partials, merge_partials
from holder_nemo.core.holder_mean import prepare_log_ratio

ProcessGroup = Any  # torch.distributed.ProcessGroup; Any keeps None and group objects alike in signatures


def group_size(group: ProcessGroup | None) -> int:
    """World size of ``group``; 1 for ``None`` or when torch.distributed is not initialised (single process)."""
    if group is None or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _gather_blocks(block: Tensor, group: ProcessGroup | None) -> Tensor:
    """[B, C] -> [R, B, C]: every rank's block, this rank's own one with its autograd graph (one all-gather)."""
    size = group_size(group)
    if size == 1:
        return block[None]
    parts = [torch.empty_like(block) for _ in range(size)]
    dist.all_gather(parts, block.detach().contiguous(), group=group)
    parts[dist.get_rank(group)] = block
    return torch.stack(parts)


def cp_holder_statistics(
    log_ratio: Tensor, mask: Tensor, p: float | Tensor, group: ProcessGroup | None, *, check_finite: bool = True
) -> HolderMean:
    """``holder_nemo.core.holder_statistics`` of sequences split over the CP ``group``: the merged statistics of the
    whole sequences (log rho_p, n, mu, extremes, effective tokens), identical on every rank. Arguments as
    ``cp_log_holder_mean``."""
    x, mask_b, order = prepare_log_ratio(log_ratio, mask, p, check_finite=False)
    block = holder_partials(x, mask_b, order)
    if check_finite:  # counted in the same all-gather, so every rank raises together
        bad = (mask_b & ~torch.isfinite(x)).sum(-1).to(x.dtype)
        block = torch.cat([block, bad[:, None]], dim=-1)
    blocks = _gather_blocks(block, group)
    if check_finite:
        bad = blocks[..., -1].detach().sum(0)
        if bool((bad > 0).any()):
            first = int((bad > 0).nonzero()[0])
            raise ValueError(
                f"log_ratio has {int(bad.sum())} non-finite value(s) at valid (unmasked) positions across the group, "
                f"first in sequence {first}; pass check_finite=False to skip this check"
            )
        blocks = blocks[..., :-1]
    return merge_partials(blocks, order)


def cp_log_holder_mean(
    log_ratio: Tensor, mask: Tensor, p: float | Tensor, group: ProcessGroup | None, *, check_finite: bool = True
) -> Tensor:
    """log rho_p of each sequence whose tokens are split over the CP ``group``; equals ``core.log_holder_mean`` of
    the whole sequences.

    Args:
        log_ratio: [B, T_local] this rank's shard of log pi_theta - log pi_old (nats); any assignment of token
            positions to ranks; T_local may differ between ranks and may be 0. Computed in float32 (float64 if given).
        mask: [B, T_local] bool or 0/1, valid tokens of this shard.
        p: Hölder order (float; 0 -> geometric mean; +/-inf -> max/min) or Tensor[B]; identical on every rank.
        group: the CP group; None or size 1 -> single process. B must be equal on every rank.
        check_finite: raise ValueError (on every rank) on NaN/inf at valid positions.
    Returns:
        [B] global log rho_p, identical on every rank; 0 with zero gradient for sequences without valid tokens.
        Backward: exact gradient for this rank's tokens, no communication (convention: sum over CP ranks).
    """
    return cp_holder_statistics(log_ratio, mask, p, group, check_finite=check_finite).log_rho
