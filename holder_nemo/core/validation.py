"""Input checks shared by the core functions: every error names the argument and what was expected."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 are upcast: ratios near 1 need the mantissa)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_2d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B, T], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [B, T], got shape {tuple(x.shape)}")


def check_float(name: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_same_shape(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has shape {tuple(ref.shape)}; they must match"
        )


def as_bool_mask(mask: Tensor, like: Tensor) -> Tensor:
    """Validate a [B, T] mask (bool, or integer/float holding only 0 and 1) and return it as bool."""
    check_2d("mask", mask)
    check_same_shape("mask", mask, "log_ratio", like)
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"mask must be bool or hold only 0/1, got dtype {mask.dtype}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1 (or be bool)")
    return mask != 0


def check_finite_where(name: str, x: Tensor, mask: Tensor) -> None:
    """NaN/inf in a valid position is a bug upstream (overflowing logits, a bad mask); padding may hold anything."""
    bad = ~torch.isfinite(x) & mask
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) at valid (unmasked) positions, first at [{row}, {col}] "
            f"= {x[row, col].item()}; pass check_finite=False to skip this check"
        )


@dataclass(frozen=True)
class Order:
    """The Hölder order of every sequence, with what is known about it without reading the tensor.

    p: [B], finite. zero: p is 0 everywhere (a Python 0 was given), so no exponential is needed.
    """

    p: Tensor
    zero: bool


def as_order(p: float | Tensor, batch: int, dtype: torch.dtype, device: torch.device) -> Order:
    """p as an ``Order`` over ``batch`` sequences; NaN and +/-inf rejected (the max/min limits are not HölderPO
    orders: ``PSchedule`` refuses them too).

    A Python number is checked on the host for free; a tensor is checked with one host read (``bool(isfinite)``).
    """
    if isinstance(p, Tensor):
        if p.dim() == 0:
            p = p.expand(batch)
        if p.shape != (batch,):
            raise ValueError(f"p must be a float or a Tensor of shape [B] = [{batch}], got shape {tuple(p.shape)}")
        p = p.detach().to(dtype=dtype, device=device)
        if not bool(torch.isfinite(p).all()):
            raise ValueError("p must be finite in every row (NaN and +/-inf are refused)")
        return Order(p, zero=False)
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise ValueError(f"p must be a real number or a Tensor[B], got {type(p).__name__}")
    if not math.isfinite(p):
        raise ValueError(f"p must be a finite real number, got {p!r}")
    p_t = torch.full((batch,), float(p), dtype=dtype, device=device)
    return Order(p_t, zero=p == 0)


def check_eps(name: str, value: float, *, upper: float | None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if upper is not None and value >= upper:
        raise ValueError(f"{name} must be in [0, {upper}), got {value!r}")
