"""Spawned gloo ranks for tests/nemo_rl_megatron/test_megatron_step.py: NeMo RL's Megatron training step, distributed vs
single-rank, for every layout of one world size and every loss variant, in ONE launch (imports cost ~20 s a process).

``python megatron_ranks.py WORLD OUT.json``:

1. Rank 0 alone (a world of one) builds the single-rank model, keeps its weights, computes the policy's own log-probs
   of the batch (NeMo RL's ``LogprobsPostProcessor`` forward) to place prev / generation / reference log-probs around
   them, and runs the training step of every variant, unpacked and packed: loss, every reduced gradient, grad norm,
   every parameter after the optimizer step.
2. All WORLD ranks (a file store, gloo's sockets on the loopback interface) run the same step for each layout of that
   world size from the same weights and batch (each rank its TP shard / pipeline stage / CP chunks / DP rows) and
   compare with the reference: loss, every element of every gradient (all-gathered over the distributed optimizer's
   shards), the optimizer's grad norm, every parameter after the step. Each rank also checks that every TCP
   connection it holds is on 127.0.0.0/8.

Rank 0 writes one JSON record per (layout, variant) case to OUT.json; the test asserts on them. Nothing is
compared with a hard-coded number.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from megatron_step import Layout  # noqa: E402

# Loss variants (HölderPO holder block): two orders p with the sequence clip (the paper's), and the token clip.
VARIANTS = {
    "seq_p2": {"clip_mode": "sequence", "schedule": {"kind": "constant", "p_max": 2.0}},
    "seq_p-1.3": {"clip_mode": "sequence", "schedule": {"kind": "constant", "p_max": -1.3}},
    "token_p0.5": {"clip_mode": "token", "schedule": {"kind": "constant", "p_max": 0.5}},
}
LAYOUTS = {
    2: [
        Layout("tp2_sp", tp=2, sp=True),
        Layout("cp2_packed", cp=2, packing=True),
        Layout("tp2_sp_packed", tp=2, sp=True, packing=True),
        Layout("pp2_1f1b", pp=2),
        Layout("pp2_1f1b_packed", pp=2, packing=True),
        Layout("dp2_packed", packing=True),
    ],
    4: [
        Layout("tp2_cp2_sp_packed", tp=2, cp=2, sp=True, packing=True),
        Layout("pp2_tp2_sp_packed", pp=2, tp=2, sp=True, packing=True),
    ],
}
# The negative control: NeMo RL's LossPostProcessor(cp_normalize=False) under CP 2 (the test expects a failure).
NEGATIVE = {2: ("cp2_packed", "seq_p2"), 4: ("tp2_cp2_sp_packed", "seq_p2")}
DATA_SEED, LOGPROB_SEED = 7, 11


def quiet() -> None:
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)


def run_variant(layout: Layout, variant: str, weights, data, *, cp_normalize=True) -> dict:
    """One training step of ``layout`` with loss ``variant``; gradients and parameters by single-rank name."""
    from megatron_step import (
        build_training_state,
        global_names,
        initialize_model_parallel,
        loss_config,
        partition_dims,
        policy_config,
        reduced_gradients,
        shard_for_train,
        synced_parameters,
        worker_train,
    )

    from holder_nemo.nemo_rl import HolderPOLossFn

    policy = policy_config(layout)
    initialize_model_parallel(policy)
    state = build_training_state(policy, weights)
    before = {name: p.detach().clone() for name, p in global_names(state.gpt).items()}
    grads = {}
    start = time.perf_counter()
    result = worker_train(
        state,
        shard_for_train(data, policy),
        HolderPOLossFn(loss_config(VARIANTS[variant])),
        cp_normalize=cp_normalize,
        before_optimizer=lambda s: grads.update(reduced_gradients(s)),
    )
    seconds = time.perf_counter() - start
    after = synced_parameters(state)
    from megatron.core.pipeline_parallel import get_forward_backward_func

    schedule = get_forward_backward_func().__name__
    return {
        "result": result,
        "grads": grads,
        "before": before,
        "after": after,
        "seconds": seconds,
        "partition": partition_dims(state.gpt),
        "gated": state.config.gated_linear_unit,
        "schedule": schedule,
    }


def reference(world_dir: str) -> dict:
    """Rank 0, world of one: weights, batch, and the single-rank step of every variant, unpacked and packed."""
    from megatron_step import (
        build_training_state,
        global_names,
        initialize_model_parallel,
        logprobs_forward,
        make_batch,
        policy_config,
        with_logprobs,
    )

    dist.init_process_group("gloo", init_method=f"file://{world_dir}/reference", rank=0, world_size=1)
    single = Layout("single")
    policy = policy_config(single)
    initialize_model_parallel(policy)
    state = build_training_state(policy, None)
    weights = {n: p.detach().clone() for n, p in global_names(state.gpt).items()}
    batch = make_batch(DATA_SEED)
    curr = logprobs_forward(state, batch)
    data = with_logprobs(batch, curr, LOGPROB_SEED)
    runs = {}
    for packing in (False, True):
        for variant in VARIANTS:
            runs[(packing, variant)] = run_variant(Layout("single", packing=packing), variant, weights, data)
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()
    return {"weights": weights, "data": data, "runs": runs}


def compare(layout: Layout, variant: str, run: dict, ref: dict, *, negative: bool) -> dict:
    """This rank's comparison with the single-rank run, reduced over all ranks (max / sum)."""
    from megatron_step import tp_shard

    grad_abs, grad_rel, param_abs, update_rel = 0.0, 0.0, 0.0, 0.0
    worst = ""
    zero_grads = 0
    names = sorted(ref["grads"])
    sizes = [ref["grads"][n].numel() for n in names]
    offsets = {n: sum(sizes[:i]) for i, n in enumerate(names)}
    covered = torch.zeros(sum(sizes), dtype=torch.uint8)
    for name, grad in run["grads"].items():
        dim = run["partition"][name]

        def piece(full, name=name, dim=dim):
            return tp_shard(name, full, dim, run["gated"])

        expected = piece(ref["grads"][name])
        diff = (grad - expected).abs().max().item()
        scale = expected.abs().max().item()
        if diff > grad_abs:
            grad_abs, worst = diff, name
        grad_rel = max(grad_rel, diff / max(scale, 1e-30))
        index = piece(torch.arange(ref["grads"][name].numel()).view(ref["grads"][name].shape))
        covered[offsets[name] + index.flatten()] = 1
        zero_grads += int(scale == 0)
        expected_after = piece(ref["after"][name])
        expected_before = piece(ref["before"][name])
        param_abs = max(param_abs, (run["after"][name] - expected_after).abs().max().item())
        step = (expected_after - expected_before).abs().max().item()
        update = (run["after"][name] - run["before"][name]) - (expected_after - expected_before)
        update_rel = max(update_rel, update.abs().max().item() / max(step, 1e-30))
    stats = torch.tensor([grad_abs, grad_rel, param_abs, update_rel, run["seconds"]], dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    dist.all_reduce(covered, op=dist.ReduceOp.MAX)  # which reference gradient elements some rank compared
    zero = torch.tensor([zero_grads])
    dist.all_reduce(zero, op=dist.ReduceOp.MAX)
    names_worst = [None] * dist.get_world_size()
    dist.all_gather_object(names_worst, (grad_abs, worst))
    res, ref_res = run["result"], ref["result"]
    return {
        "layout": layout.name,
        "variant": variant,
        "negative_control": negative,
        "world": dist.get_world_size(),
        "loss": res["global_loss"],
        "reference_loss": ref_res["global_loss"],
        "grad_norm": res["grad_norm"],
        "reference_grad_norm": ref_res["grad_norm"],
        "max_abs_grad_diff": stats[0].item(),
        "max_rel_grad_diff": stats[1].item(),
        "worst_grad": max(names_worst)[1],
        "max_abs_param_diff_after_step": stats[2].item(),
        "max_rel_update_diff": stats[3].item(),
        "reference_grad_max": max(v.abs().max().item() for v in ref["grads"].values()),
        "gradient_elements_compared": int(covered.sum().item()),
        "reference_gradient_elements": covered.numel(),
        "reference_parameters": len(names),
        "zero_gradient_tensors": int(zero.item()),
        "update_successful": res["update_successful"],
        "schedule": run["schedule"],
        "seconds": stats[4].item(),
        "reference_seconds": ref["seconds"],
        "reference_clip_fractions": {
            k: float(sum(v)) for k, v in ref_res["all_mb_metrics"].items() if "clip" in k and k.startswith("holder/")
        },
    }


def loopback_only() -> list[str]:
    """Every inet connection of this process that is not on 127.0.0.0/8 (should be none)."""
    import psutil

    bad = []
    for conn in psutil.Process().net_connections(kind="inet"):
        for addr in (conn.laddr, conn.raddr):
            if addr and not (addr.ip.startswith("127.") or addr.ip in ("::1", "::ffff:127.0.0.1")):
                bad.append(f"{conn.laddr} -> {conn.raddr}")
    return bad


def rank_main(rank: int, world: int, tmp: str, out: str) -> None:
    quiet()
    from megatron_cpu import apply_cpu_patches, cuda_literals_on_cpu

    apply_cpu_patches()
    with cuda_literals_on_cpu():
        if rank == 0:
            t0 = time.perf_counter()
            ref = reference(tmp)
            torch.save(ref, f"{tmp}/reference.pt")
            reference_seconds = time.perf_counter() - t0
        dist.init_process_group("gloo", init_method=f"file://{tmp}/world", rank=rank, world_size=world)
        dist.barrier()
        if rank != 0:
            ref = torch.load(f"{tmp}/reference.pt", weights_only=False)
            reference_seconds = 0.0
        records = []
        cases = [(layout, variant, False) for layout in LAYOUTS[world] for variant in VARIANTS]
        negative_layout, negative_variant = NEGATIVE[world]
        cases.append((next(x for x in LAYOUTS[world] if x.name == negative_layout), negative_variant, True))
        for layout, variant, negative in cases:
            run = run_variant(layout, variant, ref["weights"], ref["data"], cp_normalize=not negative)
            records.append(compare(layout, variant, run, ref["runs"][(layout.packing, variant)], negative=negative))
            if rank == 0:
                r = records[-1]
                print(f"{r['layout']:>20} {r['variant']:>11} neg={negative!s:5} |dgrad| {r['max_abs_grad_diff']:.2e}"
                      f" rel {r['max_rel_grad_diff']:.2e} dloss {abs(r['loss'] - r['reference_loss']):.2e}"
                      f" {r['seconds']:.2f}s", flush=True)  # fmt: skip
        bad = [None] * world
        dist.all_gather_object(bad, loopback_only())
        if rank == 0:
            summary = {
                "world": world,
                "records": records,
                "non_loopback_connections": [c for b in bad for c in b],
                "reference_seconds": reference_seconds,
                "gloo_socket_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
                "versions": versions(),
            }
            Path(out).write_text(json.dumps(summary, indent=1))
        dist.barrier()
        dist.destroy_process_group()


def versions() -> dict:
    import megatron.core
    import nemo_rl

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "megatron_core": megatron.core.__version__,
        "nemo_rl": getattr(nemo_rl, "__version__", "?"),
        "nemo_rl_path": str(Path(nemo_rl.__file__).parent),
    }


def main() -> None:
    world, out = int(sys.argv[1]), sys.argv[2]
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's pairs on the loopback interface only
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(rank_main, args=(world, tmp, out), nprocs=world, start_method="spawn")


if __name__ == "__main__":
    main()
