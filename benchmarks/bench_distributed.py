"""Context-parallel Hölder reduction: communication and wall time against gathering the tokens.

Bytes per rank per micro-batch for the Hölder reduction over a context-parallel (CP) group: holder_nemo's partial
statistics all-gather (``cp_log_holder_mean``: [B, NUM_PARTIALS] float32 per rank, one column more with its
default ``check_finite``, nothing in backward) versus the peers' all-gather of per-token log-probs (NeMo RL's
``AllGatherCPTensor`` pattern: forward all-gather of [B, S/CP], backward all-reduce of the [B, S] gradient, then the
loss on the whole sequences on every rank). Computed for CP = 2/4/8, and measured on real gloo ranks (bytes the
rank wrote to its sockets, /proc/self/io ``wchar``) for the CP sizes in --measure-cp, together with the
forward+backward wall time of both, in the same run.

Usage (prints ratios; ~1 minute on 2 CPU cores):

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --measure-cp 2,4,8 --tokens 16384
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta

import torch

from holder_nemo.core.holder_mean import NUM_PARTIALS

STATS_PER_SEQUENCE = NUM_PARTIALS  # measured with check_finite=False (True adds the non-finite count column)
FLOAT32 = 4


def computed_bytes(batch: int, tokens: int, cp: int) -> dict[str, float]:
    """Bytes each rank sends per micro-batch (gloo: all-gather sends its block to every other rank; ring all-reduce
    sends 2 (CP-1)/CP of the payload)."""
    ours = (cp - 1) * batch * STATS_PER_SEQUENCE * FLOAT32
    gather_fwd = (cp - 1) * batch * (tokens // cp) * FLOAT32
    reduce_bwd = 2 * (cp - 1) / cp * batch * tokens * FLOAT32
    return {"ours": ours, "allgather_fwd": gather_fwd, "allgather_fwd_bwd": gather_fwd + reduce_bwd}


def _wchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])


class _AllGatherTokens(torch.autograd.Function):
    """The baseline: every rank gets all per-token log-probs; backward all-reduces the gradient and keeps its slice."""

    @staticmethod
    def forward(ctx, local, group):
        import torch.distributed as dist

        parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, local.contiguous(), group=group)
        ctx.group, ctx.rank, ctx.width = group, dist.get_rank(group), local.shape[1]
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[:, ctx.rank * ctx.width : (ctx.rank + 1) * ctx.width], None


def _cp_rank(rank: int, world: int, init_file: str, out_file: str, batch: int, tokens: int, repeats: int) -> None:
    import torch.distributed as dist

    from holder_nemo.core import log_holder_mean
    from holder_nemo.distributed import cp_log_holder_mean

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=300)
    )
    gen = torch.Generator().manual_seed(0)
    full = torch.randn(batch, tokens, generator=gen) * 0.1
    mask_full = torch.ones(batch, tokens, dtype=torch.bool)
    width = tokens // world
    local = full[:, rank * width : (rank + 1) * width].clone()
    mask = mask_full[:, rank * width : (rank + 1) * width]
    p = -1.3

    def ours():
        x = local.clone().requires_grad_(True)
        cp_log_holder_mean(x, mask, p, None if world == 1 else dist.group.WORLD, check_finite=False).sum().backward()

    def baseline():
        x = local.clone().requires_grad_(True)
        gathered = _AllGatherTokens.apply(x, dist.group.WORLD)
        log_holder_mean(gathered, mask_full, p, check_finite=False).sum().backward()

    result = {}
    for name, fn in (("ours", ours), ("baseline", baseline)):
        fn()  # warm-up
        dist.barrier()
        before = _wchar()
        fn()
        sent = _wchar() - before
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        result[name] = {"bytes_sent": sent, "seconds": statistics.median(times)}
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def measure_cp(cp: int, batch: int, tokens: int, repeats: int) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        mp.spawn(_cp_rank, args=(cp, os.path.join(tmp, "init"), out, batch, tokens, repeats), nprocs=cp, join=True)
        with open(out) as f:
            return json.load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="sequences per micro-batch")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per sequence")
    parser.add_argument("--measure-cp", default="2,4", help="CP sizes to spawn gloo ranks for (comma separated)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    measure = {int(c) for c in args.measure_cp.split(",") if c}
    print(f"CP Hölder reduction, B={args.batch} sequences x {args.tokens} tokens, float32, bytes sent per rank")
    print(
        f"{'CP':>3} {'ours':>8} {'gather fwd':>11} {'gather f+b':>11} {'ratio f+b':>10} "
        f"{'measured ours':>14} {'measured gather f+b':>20} {'time gather/ours':>17}"
    )
    rows = []
    for cp in (2, 4, 8):
        c = computed_bytes(args.batch, args.tokens, cp)
        row = {"cp": cp, **c, "ratio": c["allgather_fwd_bwd"] / c["ours"]}
        line = f"{cp:>3} {c['ours']:>8.0f} {c['allgather_fwd']:>11.0f} {c['allgather_fwd_bwd']:>11.0f}"
        line += f" {row['ratio']:>9.0f}x"
        if cp in measure:
            m = measure_cp(cp, args.batch, args.tokens, args.repeats)
            row["measured"] = m
            t_ratio = m["baseline"]["seconds"] / m["ours"]["seconds"]
            line += (
                f" {m['ours']['bytes_sent']:>14d} {m['baseline']['bytes_sent']:>20d} {t_ratio:>16.1f}x"
                f"  ({m['ours']['seconds'] * 1e3:.1f} ms vs {m['baseline']['seconds'] * 1e3:.1f} ms)"
            )
        rows.append(row)
        print(line, flush=True)

    print(json.dumps({"cp": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
