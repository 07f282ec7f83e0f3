"""One masked batch of token log-ratios for the Hölder-mean tests (tests/core and tests/distributed)."""

from __future__ import annotations

import torch


def masked_log_ratios(seed: int = 0, b: int = 7, t: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """([b, t] float64 log-ratios, [b, t] bool mask) with the cases a reduction gets wrong.

    Row 0 has no valid token, row 1 exactly one; rows 2 and 3 each hold one dominating token (+40 / -40) that decides
    the mean at large |p|.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, generator=gen, dtype=torch.float64) * 0.3
    x[2, 5] = 40.0
    x[3, 7] = -40.0
    mask = torch.rand(b, t, generator=gen) < 0.8
    mask[0] = False
    mask[1] = False
    mask[1, 9] = True
    return x, mask
