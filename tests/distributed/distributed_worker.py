"""Rank-side checks for tests/distributed/test_distributed_ranks.py: real gloo process groups, spawned processes.

One launch of 4 ranks runs every check. Each check builds the same global data on every rank from a fixed seed, takes
this rank's shard, runs ``holder_nemo.distributed``, and compares with the single-process float64 reference of
``holder_nemo.core``. Results go to ``out_dir/rank{r}.json`` as {check: "ok" | error text}; the pytest side asserts
them.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from holder_nemo.core import holder_token_weights, log_holder_mean
from holder_nemo.distributed import cp_holder_statistics, cp_log_holder_mean

RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}
P_VALUES = (0.0, 1e-6, 0.37, -0.8, 1.0, -2.0, 7.5, -30.0, math.inf, -math.inf)


def assert_close(actual, expected, dtype, what, scale=None):
    """|actual - expected| <= rtol * (|expected| + scale), scale defaulting to max |expected| (inputs' magnitude)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {list(actual.shape)} != {list(expected.shape)}")
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    bound = RTOL[dtype] * (expected.abs() + max(scale, 1e-30))
    err = (actual - expected).abs()
    if not bool((err <= bound).all()):
        i = int((err - bound).argmax())
        raise AssertionError(
            f"{what}: max error {float(err.max()):.3e} (at flat index {i}: {float(actual.reshape(-1)[i])!r} vs "
            f"{float(expected.reshape(-1)[i])!r}), bound {float(bound.reshape(-1)[i]):.3e}"
        )


# --------------------------------------------------------------------------------------------------- data helpers
def make_log_ratios(gen, batch, seq, dtype):
    """Log-ratios with outliers, and a mask with an empty row, a single-token row and ragged lengths."""
    x = torch.randn(batch, seq, generator=gen, dtype=torch.float64) * 0.4
    x[:, ::7] += 3.0 * torch.randn(batch, (seq + 6) // 7, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
    lengths[0], lengths[1] = 0, 1
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    mask &= torch.rand(batch, seq, generator=gen) > 0.1  # holes inside rows too
    mask[1] = False
    mask[1, seq // 2] = True  # exactly one valid token
    return x.to(dtype), mask


def assign_random(gen, batch, seq, world):
    """owner[b, t]: an arbitrary rank per token; row 2 lives entirely on the last rank, row 3 entirely on rank 0."""
    owner = torch.randint(0, world, (batch, seq), generator=gen)
    owner[2] = world - 1
    owner[3] = 0
    return owner


def shard_by_owner(owner, rank, *tensors, fill=float("nan")):
    """Pack this rank's tokens of each row to the left of [B, T_local] (T_local = its max count); pad with ``fill``."""
    mine = owner == rank
    t_local = int(mine.sum(-1).max()) if mine.numel() else 0
    order = torch.argsort((~mine).to(torch.int8), dim=-1, stable=True)[:, :t_local]  # own positions first, in order
    local_valid = torch.gather(mine, 1, order)
    outs = []
    for t in tensors:
        picked = torch.gather(t, 1, order)
        if picked.dtype == torch.bool:
            picked = picked & local_valid
        else:
            picked = torch.where(local_valid, picked, torch.full_like(picked, fill))
        outs.append(picked)
    return order, local_valid, outs


def scatter_back(order, local_valid, local_values, shape):
    """Inverse of ``shard_by_owner`` for one rank: [B, T_local] -> [B, T] with zeros elsewhere."""
    out = torch.zeros(shape, dtype=local_values.dtype)
    return out.scatter_add_(1, order, torch.where(local_valid, local_values, torch.zeros_like(local_values)))


# --------------------------------------------------------------------------------------------------- checks
class Checks:
    def __init__(self, rank, world):
        self.rank, self.world = rank, world
        self.groups = {}

    def cp_group(self, cp):
        """This rank's group of ``cp`` consecutive ranks (every rank creates every group: new_group is collective)."""
        if cp not in self.groups:
            for start in range(0, self.world, cp):
                group = dist.new_group(list(range(start, start + cp)))
                if start <= self.rank < start + cp:
                    self.groups[cp] = group
        return self.groups[cp]

    # ---- issue item 2: exact CP reduction for arbitrary token assignments
    def _cp_reduction(self, impl, cp, dtype, seed):
        group = self.cp_group(cp)
        r = dist.get_rank(group)
        gen = torch.Generator().manual_seed(seed)
        batch, seq = 9, 23
        x, mask = make_log_ratios(gen, batch, seq, dtype)
        owner = assign_random(gen, batch, seq, cp)
        ps = [*P_VALUES, torch.tensor([0.0, -1.0, 2.0, 0.5, -0.25, 40.0, -40.0, 1e-5, 3.0], dtype=torch.float64)]
        for p in ps:
            order, local_valid, (x_loc, m_loc) = shard_by_owner(owner, r, x, mask)
            x_loc.requires_grad_(True)
            out = impl(x_loc, m_loc, p, group)
            upstream = torch.linspace(-1.0, 2.0, batch, dtype=out.dtype)
            (g_loc,) = torch.autograd.grad((out * upstream).sum(), x_loc)
            x_ref = x.double().clone().requires_grad_(True)
            p_ref = p.double() if isinstance(p, torch.Tensor) else p
            ref = log_holder_mean(x_ref, mask, p_ref)
            (g_ref,) = torch.autograd.grad((ref * upstream.double()).sum(), x_ref)
            scale = float(x[mask].abs().max())
            assert_close(out, ref, dtype, f"log rho (cp={cp}, p={p})", scale=scale)
            g_mine = scatter_back(order, local_valid & m_loc, g_loc.double(), x.shape)
            g_expect = torch.where(owner == r, g_ref, torch.zeros_like(g_ref))
            assert_close(g_mine, g_expect, dtype, f"local gradient (cp={cp}, p={p})", scale=float(g_ref.abs().max()))

    def cp_reduction_exact(self):
        for cp in (2, 4):
            for dtype, seed in ((torch.float64, 1), (torch.float32, 2)):
                self._cp_reduction(cp_log_holder_mean, cp, dtype, seed)

    def naive_per_rank_mean_is_caught(self):
        """The bug peers shipped: reduce each rank's shard on its own. The same checker must reject it."""

        def naive(x_loc, m_loc, p, group):
            return log_holder_mean(x_loc, m_loc, p, check_finite=False)

        try:
            self._cp_reduction(naive, 2, torch.float64, 1)
        except AssertionError:
            return
        raise AssertionError("the exactness check accepted the naive per-rank Hölder mean")

    def cp_stats_metrics(self):
        """n, mu, min/max and effective tokens reduced over CP = the core's metrics of the whole sequences."""
        group = self.cp_group(4)
        r = dist.get_rank(group)
        gen = torch.Generator().manual_seed(5)
        x, mask = make_log_ratios(gen, 7, 19, torch.float64)
        owner = assign_random(gen, 7, 19, 4)
        _, _, (x_loc, m_loc) = shard_by_owner(owner, r, x, mask)
        for p in (0.0, -1.5, 3.0, math.inf, -math.inf):
            stats = cp_holder_statistics(x_loc, m_loc, p, group)
            w = holder_token_weights(x, mask, p)
            eff = torch.exp(-torch.special.xlogy(w, w).sum(-1)) * mask.any(-1)
            assert_close(stats.effective_tokens, eff, torch.float64, f"effective tokens p={p}", scale=1.0)
            assert_close(stats.n, mask.sum(-1).double(), torch.float64, "n")
            mu = torch.where(mask, x, 0).sum(-1) / mask.sum(-1).clamp(min=1)
            assert_close(stats.mu, mu, torch.float64, "mu")
            xmax = torch.where(mask, x, -math.inf).amax(-1).where(mask.any(-1), 0)
            assert_close(stats.x_max, xmax, torch.float64, "x_max")

    def nonfinite_raises_on_every_rank(self):
        group = self.cp_group(2)
        x = torch.zeros(2, 3, dtype=torch.float64)
        if dist.get_rank(group) == 1:
            x[1, 2] = float("nan")
        try:
            cp_log_holder_mean(x, torch.ones(2, 3, dtype=torch.bool), 1.0, group)
        except ValueError as e:
            assert "non-finite" in str(e) and "sequence 1" in str(e), str(e)
            return
        raise AssertionError("no ValueError on this rank")


CHECK_ORDER = (
    "cp_reduction_exact",
    "naive_per_rank_mean_is_caught",
    "cp_stats_metrics",
    "nonfinite_raises_on_every_rank",
)


def run_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Entry point of one spawned rank."""
    torch.set_num_threads(1)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=90)
    )
    results: dict[str, str] = {}
    checks = Checks(rank, world)
    for name in CHECK_ORDER:
        try:
            getattr(checks, name)()
            results[name] = "ok"
        except Exception as e:  # reported to pytest, which fails the named test
            results[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        dist.barrier()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()
