"""``HolderPOLossFn`` against NeMo RL v0.7.0's own ``ClippedPGLossFn`` in GSPO mode, on the same LOGPROB micro-batch.

Both losses get what NeMo RL's workers hand a LOGPROB loss: ``next_token_logprobs`` [B, S-1] (a leaf with grad, as
the log-probs of the policy's forward pass would be), the micro-batch dict (``token_mask``, ``sample_mask``,
``advantages``, ``prev_logprobs``, ``generation_logprobs``, ``reference_policy_logprobs`` [B, S]) and the global
counts. Timed: one call + ``backward`` to the log-probs, median over rounds that run the variants interleaved on
the same inputs after a warm-up (separate processes differ by ~10% on CPU from page faults and frequency alone).

Variants (ratios are against ``clipped_pg_gspo``, measured in the same run):

* ``clipped_pg_gspo``: ``ClippedPGLossFn`` with ``sequence_level_importance_ratios: true``,
  ``token_level_loss: false`` (NeMo RL's GSPO), no KL;
* ``holderpo_p0``: ``HolderPOLossFn`` at p = 0, sequence clip, no KL (the same objective: GSPO); loss and gradient
  are checked equal to the baseline's before timing;
* ``holderpo_p-1.3``: the same at p = -1.3 (a point of the paper's annealed schedule, where the Hölder mean needs
  its exponentials); informational;
* with ``--kl``: both with the k3 KL penalty at 0.01 (NeMo RL's default), a second baseline/ratio pair.

Needs NeMo RL v0.7.0 importable (``PYTHONPATH=/path/to/nemo_rl_v0.7.0:.``). Usage::

    python benchmarks/bench_nemo_rl_loss.py                     # CPU, B=32, S=2048, 1 thread
    python benchmarks/bench_nemo_rl_loss.py --kl --rounds 50
    python benchmarks/bench_nemo_rl_loss.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

EPS = 0.2


def _typed_dict_for_old_python() -> None:
    """NeMo RL's config TypedDicts need typing_extensions.TypedDict under pydantic on Python < 3.12."""
    if sys.version_info < (3, 12):
        import typing

        import typing_extensions

        typing.TypedDict = typing_extensions.TypedDict  # type: ignore[misc]


def make_micro_batch(batch: int, seq: int, device: str, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """A GRPO micro-batch: 256 prompt tokens, responses of random length, float32 log-probs, one masked sample."""
    g = torch.Generator().manual_seed(seed)
    prompt = min(256, seq // 4)
    lengths = torch.randint(prompt + 1, seq + 1, (batch,), generator=g)
    positions = torch.arange(seq)[None, :]
    token_mask = ((positions >= prompt) & (positions < lengths[:, None])).float()
    sample_mask = torch.ones(batch)
    sample_mask[-1] = 0
    prev = -2 * torch.rand(batch, seq, generator=g) - 0.05
    data = {
        "token_mask": token_mask,
        "sample_mask": sample_mask,
        "advantages": torch.randn(batch, 1, generator=g).expand(batch, seq).contiguous(),
        "prev_logprobs": prev,
        "generation_logprobs": prev + 0.02 * torch.randn(batch, seq, generator=g),
        "reference_policy_logprobs": prev + 0.2 * torch.randn(batch, seq, generator=g),
    }
    curr = prev[:, 1:] + 0.1 * torch.randn(batch, seq - 1, generator=g)
    return curr.to(device), {k: v.to(device) for k, v in data.items()}


def build_losses(kl: float) -> dict[str, object]:
    _typed_dict_for_old_python()
    from nemo_rl.algorithms.loss.loss_functions import ClippedPGLossConfig, ClippedPGLossFn

    from holder_nemo.nemo_rl import HolderPOLossFn

    common = {"ratio_clip_min": EPS, "ratio_clip_max": EPS, "reference_policy_kl_penalty": kl}
    gspo = {**common, "token_level_loss": False, "sequence_level_importance_ratios": True}

    def holder(p: float) -> HolderPOLossFn:
        return HolderPOLossFn({**common, "holder": {"schedule": {"kind": "constant", "p_max": p, "p_min": -2.0}}})

    return {
        "clipped_pg_gspo": ClippedPGLossFn(ClippedPGLossConfig(**gspo)),
        "holderpo_p0": holder(0.0),
        "holderpo_p-1.3": holder(-1.3),
    }


def fwd_bwd(loss_fn, curr: torch.Tensor, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    x = curr.detach().requires_grad_()
    seqs = data["sample_mask"].sum()
    toks = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).sum()
    loss, _ = loss_fn(next_token_logprobs=x, data=data, global_valid_seqs=seqs, global_valid_toks=toks)
    loss.backward()
    return loss.detach(), x.grad


def check_same_objective(losses: dict, curr: torch.Tensor, data: dict) -> None:
    """GSPO and HölderPO at p = 0 are the same objective: equal loss and gradient (float32 rounding)."""
    ref_loss, ref_grad = fwd_bwd(losses["clipped_pg_gspo"], curr, data)
    loss, grad = fwd_bwd(losses["holderpo_p0"], curr, data)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-9)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_times(losses: dict, curr: torch.Tensor, data: dict, device: str, rounds: int) -> dict[str, float]:
    for loss_fn in losses.values():  # warm-up
        fwd_bwd(loss_fn, curr, data)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(rounds):
        for name, loss_fn in losses.items():
            sync(device)
            start = time.perf_counter()
            fwd_bwd(loss_fn, curr, data)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--kl", action="store_true", help="also time both losses with the k3 KL penalty at 0.01")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    curr, data = make_micro_batch(args.batch, args.seq, args.device)
    print(
        f"B = {args.batch}, S = {args.seq}, float32 log-probs, device {args.device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, median of {args.rounds} interleaved rounds (forward + backward)"
    )
    for kl in (0.0, 0.01) if args.kl else (0.0,):
        losses = build_losses(kl)
        check_same_objective(losses, curr, data)
        times = median_times(losses, curr, data, args.device, args.rounds)
        base = times["clipped_pg_gspo"]
        print(f"\nKL penalty {kl}: loss and gradient of holderpo_p0 equal clipped_pg_gspo's (checked)")
        for name, seconds in times.items():
            print(f"  {name:<16} {seconds * 1e3:8.2f} ms   x {seconds / base:.3f}")


if __name__ == "__main__":
    main()
