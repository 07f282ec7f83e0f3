"""The loss's share of NeMo RL v0.7.0's Megatron training step (the Megatron tier's path), HölderPO vs NeMo RL's
``ClippedPGLossFn`` in GSPO mode, on the same tiny ``GPTModel`` and batch.

The step is tests/nemo_rl_megatron's single-rank step (``megatron_step.worker_train``: ``megatron_forward_backward``
over megatron-core's schedule, ``finalize_model_grads``, the distributed optimizer's step) with our 7B recipe's
Megatron keys, on CPU with the tier's patches (tests/nemo_rl_megatron/megatron_cpu.py). Timed per step, in this
process's CPU time (``time.process_time``: on a shared machine wall time mostly measures the other jobs): the whole
``worker_train`` call, and the time spent inside the loss object's ``__call__`` (its forward, through NeMo RL's
``SequencePackingLossWrapper`` / ``prepare_loss_input``; the loss's backward runs inside megatron-core's backward and
is in the step time only). Each round rebuilds the model, DDP and optimizer from the same weights (not timed) and runs
the variants interleaved; medians over rounds. Ratios are against ``clipped_pg_gspo`` in the same run.

Variants: ``clipped_pg_gspo`` (``sequence_level_importance_ratios: true``, ``token_level_loss: false``, the recipe's
clip 0.2, no KL: the baseline); ``holderpo_p0`` (sequence clip, p = 0: the same objective, GSPO; its loss is checked
equal to the baseline's); ``holderpo_p-1.3`` (a point of the annealed schedule).

Needs the Megatron tier's environment (Python 3.13, megatron-core 0.19, NeMo RL v0.7.0 on PYTHONPATH)::

    PYTHONPATH=.:/path/to/nemo_rl_v0.7.0 /work/venv313/bin/python benchmarks/bench_megatron_step.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "nemo_rl_megatron"), str(REPO)]


class TimedLoss:
    """A NeMo RL loss object whose ``__call__`` time is accumulated (attributes pass through)."""

    def __init__(self, loss_fn: object, outside_mode: bool = False) -> None:
        self.__dict__["_loss_fn"] = loss_fn
        self.__dict__["seconds"] = 0.0
        self.__dict__["outside_mode"] = outside_mode

    def __call__(self, *args, **kwargs):
        import contextlib

        import torch

        # the tier's TorchFunctionMode (CUDA literals -> CPU) costs a Python call per torch op; the loss makes none
        mode_off = torch._C.DisableTorchFunction() if self.outside_mode else contextlib.nullcontext()
        start = time.process_time()
        with mode_off:
            out = self._loss_fn(*args, **kwargs)
        self.__dict__["seconds"] += time.process_time() - start
        return out

    def __getattr__(self, name: str):
        return getattr(self._loss_fn, name)


def build_losses() -> dict[str, object]:
    from megatron_step import loss_config
    from nemo_rl.algorithms.loss.loss_functions import ClippedPGLossConfig, ClippedPGLossFn

    from holder_nemo.nemo_rl import HolderPOLossFn

    recipe = loss_config({})
    clipped = {k: v for k, v in recipe.items() if k != "holder"}
    clipped.update(sequence_level_importance_ratios=True, token_level_loss=False)
    return {
        "clipped_pg_gspo": ClippedPGLossFn(ClippedPGLossConfig(**clipped)),
        "holderpo_p0": HolderPOLossFn(loss_config({"clip_mode": "sequence", "schedule": {"kind": "constant",
                                                                                          "p_max": 0.0}})),
        "holderpo_p-1.3": HolderPOLossFn(loss_config({"clip_mode": "sequence", "schedule": {"kind": "constant",
                                                                                             "p_max": -1.3}})),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--unpacked", action="store_true", help="sequence packing off (default: the recipe's on)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--fuse-loss", action="store_true", help="policy.sequence_packing.fuse_loss: one loss call per micro-batch"
    )
    parser.add_argument(
        "--loss-outside-mode", action="store_true", help="run the loss calls outside the tier's TorchFunctionMode"
    )
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import torch.distributed as dist
    from megatron_cpu import apply_cpu_patches, cuda_literals_on_cpu

    torch.set_num_threads(args.threads)
    apply_cpu_patches()
    from megatron_step import (
        Layout,
        build_training_state,
        global_names,
        initialize_model_parallel,
        logprobs_forward,
        make_batch,
        policy_config,
        shard_for_train,
        with_logprobs,
        worker_train,
    )

    with cuda_literals_on_cpu(), tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        unpacked = policy_config(Layout("single"))  # the tier's reference: weights and log-probs, unpacked
        initialize_model_parallel(unpacked)
        state = build_training_state(unpacked, None)
        weights = {n: p.detach().clone() for n, p in global_names(state.gpt).items()}
        data = with_logprobs(make_batch(7), logprobs_forward(state, make_batch(7)), 11)
        policy = policy_config(Layout("single", packing=not args.unpacked))
        policy["sequence_packing"]["fuse_loss"] = args.fuse_loss  # NeMo RL's SequencePackingFusionLossWrapper
        losses = build_losses()
        step: dict[str, list[float]] = {name: [] for name in losses}
        loss: dict[str, list[float]] = {name: [] for name in losses}
        values: dict[str, float] = {}
        for round_index in range(args.rounds + 1):  # round 0 warms up
            for name, loss_fn in losses.items():
                state = build_training_state(policy, weights)
                timed = TimedLoss(loss_fn, outside_mode=args.loss_outside_mode)
                start = time.process_time()
                result = worker_train(state, shard_for_train(data, policy), timed)
                elapsed = time.process_time() - start
                values[name] = result["global_loss"]
                if round_index:
                    step[name].append(elapsed)
                    loss[name].append(timed.seconds)
        dist.destroy_process_group()

    if abs(values["holderpo_p0"] - values["clipped_pg_gspo"]) > 1e-5 * max(1.0, abs(values["clipped_pg_gspo"])):
        raise SystemExit(f"p = 0 is not GSPO on this batch: {values}")
    base_step, base_loss = statistics.median(step["clipped_pg_gspo"]), statistics.median(loss["clipped_pg_gspo"])
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, packing {not args.unpacked},"
          f" fuse_loss {args.fuse_loss}, loss outside the TorchFunctionMode {args.loss_outside_mode}")  # fmt: skip
    print("| variant | step | loss forward | loss share of step | loss x ClippedPG | step x ClippedPG |")
    print("|---|---|---|---|---|---|")
    for name in losses:
        s, f = statistics.median(step[name]), statistics.median(loss[name])
        print(f"| `{name}` | {s * 1e3:.1f} ms | {f * 1e3:.2f} ms | {100 * f / s:.1f} % | {f / base_loss:.3f} |"
              f" {s / base_step:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
