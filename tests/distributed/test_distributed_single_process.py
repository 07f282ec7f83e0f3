"""Single-process paths of holder_nemo.distributed (group None) against holder_nemo.core: value, gradient, dtypes and
errors. The merge of many shards in one process is tested with the core (tests/core/test_holder_mean.py)."""

from __future__ import annotations

import math

import pytest
import torch
from log_ratio_batches import masked_log_ratios

from holder_nemo.core import log_holder_mean
from holder_nemo.distributed import cp_log_holder_mean, group_size

P_VALUES = [0.0, 1e-7, 1e-4, 1e-2, -0.5, 1.0, -2.0, 2.0, 25.0, -25.0, math.inf, -math.inf]


@pytest.mark.parametrize("p", P_VALUES)
def test_group_none_equals_core(p):
    x, mask = masked_log_ratios()
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    ref = log_holder_mean(x1, mask, p)
    out = cp_log_holder_mean(x2, mask, p, None)
    up = torch.linspace(-1, 1, x.shape[0], dtype=x.dtype)
    (g_ref,) = torch.autograd.grad((ref * up).sum(), x1)
    (g,) = torch.autograd.grad((out * up).sum(), x2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    assert out[0] == 0 and bool((g[0] == 0).all())  # empty row: 0 with zero gradient


def test_bf16_input_is_computed_in_float32():
    x, mask = masked_log_ratios()
    xb = x.to(torch.bfloat16).requires_grad_(True)
    out_b = cp_log_holder_mean(xb, mask, 0.7, None)
    assert out_b.dtype == torch.float32
    out_b.sum().backward()
    assert xb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out_b, log_holder_mean(xb.detach(), mask, 0.7), rtol=1e-6, atol=1e-6)


def test_reduction_errors_name_the_field():
    x, mask = masked_log_ratios()
    with pytest.raises(ValueError, match="non-finite"):
        bad = x.clone()
        bad[2, 0] = float("nan")
        m = mask.clone()
        m[2, 0] = True
        cp_log_holder_mean(bad, m, 1.0, None)
    with pytest.raises(ValueError, match="mask"):
        cp_log_holder_mean(x, mask[:, :3], 1.0, None)
    with pytest.raises(ValueError, match="p must"):
        cp_log_holder_mean(x, mask, float("nan"), None)
    # NaN at masked positions is padding and is ignored
    padded = torch.where(mask, x, torch.nan)
    torch.testing.assert_close(cp_log_holder_mean(padded, mask, 2.0, None), log_holder_mean(x, mask, 2.0))


def test_no_group_is_one_process():
    assert group_size(None) == 1
