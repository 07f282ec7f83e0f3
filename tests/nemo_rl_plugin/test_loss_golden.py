"""``HolderPOLossFn`` against a golden file: loss, gradient and every metric on fixed NeMo RL-shaped micro-batches.

The golden file (``golden_loss_fn.json``) was recorded with the loss as it stood *before* the issue-13 redesign
(``python tests/nemo_rl_plugin/test_loss_golden.py --record``); its inputs are stored in it, so the comparison does
not depend on torch's random streams. Cases: every clip mode, p in {0, 1.5, -2, 4, ...} and a scheduled p, KL on
(k1 / k2 / k3, clamps, on-policy approximation, unfiltered log-probs) and off, dual clip, importance-sampling
correction (both levels, tis / icepop / seq-mask-tis), the ratio against the generation policy, whole micro-batches
and NeMo RL's packed path (``SequencePackingLossWrapper``: one call per sequence with rows trimmed to their length,
losses summed, metrics summed except the four ``probs_ratio*_min/_max`` taken by min / max, infinities skipped).
Tolerances: 1e-12 absolute in float64; 1e-6 relative in float32 (relative to the value itself for the loss and the
metrics, and to the largest entry of the gradient for its entries, some of which are 0).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from holder_nemo.nemo_rl import HolderPOLossFn

GOLDEN = Path(__file__).with_name("golden_loss_fn.json")
EXTREME_KEYS = {"probs_ratio_min", "probs_ratio_max", "probs_ratio_clamped_min", "probs_ratio_clamped_max"}

KL_OFF = {"reference_policy_kl_penalty": 0.0}
IS_ON = {**KL_OFF, "use_importance_sampling_correction": True}


def _p(p: float, **holder) -> dict:
    return {"holder": {"schedule": {"kind": "constant", "p_max": p, "p_min": min(p, -2.0)}, **holder}}


def _tis(kind: str, high: float, low: float | None = None) -> dict:
    out = {"truncated_importance_sampling_type": kind, "truncated_importance_sampling_ratio": high}
    return out if low is None else {**out, "truncated_importance_sampling_ratio_min": low}


def _kl(beta: float, kind: str = "k3", clamp_in: float | None = 20.0, clamp_out: float | None = 10.0) -> dict:
    return {
        "reference_policy_kl_penalty": beta,
        "reference_policy_kl_type": kind,
        "kl_input_clamp_value": clamp_in,
        "kl_output_clamp_value": clamp_out,
    }


# (name, loss_fn config, training step for set_step)
CASES: list[tuple[str, dict, int]] = [
    ("seq_p0", {**KL_OFF, **_p(0.0)}, 1),
    ("seq_p1.5", {**KL_OFF, **_p(1.5)}, 1),
    ("seq_p-2", {**KL_OFF, **_p(-2.0)}, 1),
    ("seq_p4", {**KL_OFF, **_p(4.0)}, 1),
    ("seq_scheduled_step37", {**KL_OFF}, 37),
    ("seq_asym_dual", {**KL_OFF, "ratio_clip_min": 0.1, "ratio_clip_max": 0.28, "ratio_clip_c": 3.0, **_p(-1)}, 1),
    ("token_p1", {**KL_OFF, **_p(1.0, clip_mode="token")}, 1),
    ("token_p-2_dual", {**KL_OFF, "ratio_clip_c": 2.0, **_p(-2.0, clip_mode="token")}, 1),
    ("token_log_p0", {**KL_OFF, "ratio_clip_min": 0.4, "ratio_clip_max": 0.4, **_p(0.0, clip_mode="token_log")}, 1),
    ("token_log_p1.5", {**KL_OFF, **_p(1.5, clip_mode="token_log")}, 1),
    ("none_p1", {**KL_OFF, **_p(1.0, clip_mode="none")}, 1),
    ("none_p-3", {**KL_OFF, **_p(-3.0, clip_mode="none")}, 1),
    ("kl_k3_default", {"reference_policy_kl_penalty": 0.05}, 200),
    ("kl_k1_noclamp", {**_kl(0.1, "k1", None, None), **_p(0.5)}, 1),
    ("kl_k2_tight_clamps", {**_kl(0.2, "k2", 0.15, 0.01), **_p(-1.0)}, 1),
    ("kl_on_policy_token", {**_kl(0.1), "use_on_policy_kl_approximation": True, **_p(2.0, clip_mode="token")}, 1),
    ("kl_unfiltered", {**_kl(0.1), **_p(0.7)}, 1),
    ("is_mean", {**IS_ON, **_p(1.0)}, 1),
    ("is_sum", {**IS_ON, **_p(0.0, is_correction_level="sequence_sum")}, 1),
    ("is_tis", {**IS_ON, **_tis("tis", 1.02), **_p(-0.5)}, 1),
    ("is_icepop_kl", {**IS_ON, **_kl(0.05), **_tis("icepop", 1.02, 0.99), **_p(1.0, clip_mode="token")}, 1),
    ("is_seq_mask_tis", {**IS_ON, **_tis("seq-mask-tis", 1.01, 0.995), **_p(2.0)}, 1),
    ("vs_generation", {**KL_OFF, **_p(1.0, importance_ratio="train_vs_generation")}, 1),
]
UNFILTERED_CASES = {"kl_unfiltered"}


def make_inputs(seed: int, batch: int = 6, seq: int = 14) -> dict[str, list]:
    """A NeMo RL-shaped micro-batch as plain lists (float64): prompt of 3 tokens, ragged responses (row 1 ends early,
    row 2 is empty), row 3 masked out by ``sample_mask``, junk in the padding and the prompt."""
    g = torch.Generator().manual_seed(seed)
    token_mask = torch.zeros(batch, seq)
    token_mask[:, 3:] = 1
    token_mask[1, seq - 5 :] = 0
    token_mask[2, :] = 0
    sample_mask = torch.ones(batch)
    sample_mask[3] = 0
    lengths = [seq, seq - 5, 3, seq, seq, seq][:batch]
    adv = torch.randn(batch, 1, generator=g, dtype=torch.float64).expand(batch, seq).clone()
    prev = -2 * torch.rand(batch, seq, generator=g, dtype=torch.float64) - 0.05
    gen = prev + 0.02 * torch.randn(batch, seq, generator=g, dtype=torch.float64)
    ref = prev + 0.2 * torch.randn(batch, seq, generator=g, dtype=torch.float64)
    curr = prev[:, 1:] + 0.3 * torch.randn(batch, seq - 1, generator=g, dtype=torch.float64)
    unfiltered = curr - 0.01 * torch.rand(batch, seq - 1, generator=g, dtype=torch.float64)
    junk = (token_mask[:, 1:] * sample_mask[:, None]) == 0
    curr = torch.where(junk, torch.full_like(curr, -30.0), curr)
    prev[:, 0] = 0.0
    return {
        "next_token_logprobs": curr.tolist(),
        "curr_logprobs_unfiltered": unfiltered.tolist(),
        "token_mask": token_mask.tolist(),
        "sample_mask": sample_mask.tolist(),
        "advantages": adv.tolist(),
        "prev_logprobs": prev.tolist(),
        "generation_logprobs": gen.tolist(),
        "reference_policy_logprobs": ref.tolist(),
        "input_lengths": lengths,
    }


def _tensors(inputs: dict, dtype: torch.dtype, unfiltered: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    data = {
        k: torch.tensor(v, dtype=dtype)
        for k, v in inputs.items()
        if k not in ("next_token_logprobs", "curr_logprobs_unfiltered", "input_lengths")
    }
    data["input_lengths"] = torch.tensor(inputs["input_lengths"])
    if unfiltered:
        data["curr_logprobs_unfiltered"] = torch.tensor(inputs["curr_logprobs_unfiltered"], dtype=dtype)
    return torch.tensor(inputs["next_token_logprobs"], dtype=dtype), data


def _counts(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = data["sample_mask"].sum()
    toks = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).sum()
    return seqs, toks


def _accumulate(total: dict[str, float], metrics: dict[str, float]) -> None:
    """NeMo RL v0.7.0's ``SequencePackingLossWrapper`` metric accumulation."""
    for key, value in metrics.items():
        if key not in total:
            total[key] = math.inf if key.endswith("_min") and key in EXTREME_KEYS else 0.0
            if key in EXTREME_KEYS and key.endswith("_max"):
                total[key] = -math.inf
        if key in EXTREME_KEYS:
            if not math.isinf(value):
                total[key] = (min if key.endswith("_min") else max)(total[key], value)
        else:
            total[key] += value


def run_case(config: dict, step: int, inputs: dict, dtype: torch.dtype, packed: bool, unfiltered: bool) -> dict:
    """Loss, gradient w.r.t. ``next_token_logprobs`` and metrics of one case (packed: one call per sequence)."""
    loss_fn = HolderPOLossFn(config)
    loss_fn.set_step(step)
    curr, data = _tensors(inputs, dtype, unfiltered)
    seqs, toks = _counts(data)
    x = curr.clone().requires_grad_()
    if not packed:
        loss, metrics = loss_fn(next_token_logprobs=x, data=data, global_valid_seqs=seqs, global_valid_toks=toks)
    else:
        loss, metrics = 0.0, {}
        for i, n in enumerate(data["input_lengths"].tolist()):
            row = {k: (v[i : i + 1, :n] if v.dim() == 2 and v.shape[1] > 1 else v[i : i + 1]) for k, v in data.items()}
            if "curr_logprobs_unfiltered" in row:
                row["curr_logprobs_unfiltered"] = data["curr_logprobs_unfiltered"][i : i + 1, : n - 1]
            part, part_metrics = loss_fn(
                next_token_logprobs=x[i : i + 1, : n - 1], data=row, global_valid_seqs=seqs, global_valid_toks=toks
            )
            loss = loss + part
            _accumulate(metrics, part_metrics)
    (grad,) = torch.autograd.grad(loss, x)
    return {
        "loss": float(loss.detach()),
        "grad": grad.double().tolist(),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }


def record() -> None:
    inputs = {"a": make_inputs(seed=1), "b": make_inputs(seed=2)}
    results = {}
    for name, config, step in CASES:
        for dtype_name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            for packed in (False, True):
                batch = "b" if packed else "a"
                key = f"{name}/{dtype_name}/{'packed' if packed else 'whole'}"
                results[key] = run_case(config, step, inputs[batch], dtype, packed, name in UNFILTERED_CASES)
    GOLDEN.write_text(json.dumps({"inputs": inputs, "results": results}, indent=0, sort_keys=True) + "\n")
    print(f"wrote {len(results)} results to {GOLDEN}")


def _close(got: float, want: float, tol: float, scale: float) -> bool:
    if math.isinf(want) or math.isnan(want):
        return got == want or (math.isnan(got) and math.isnan(want))
    return abs(got - want) <= tol * scale


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("packed", [False, True], ids=["whole", "packed"])
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize(("name", "config", "step"), CASES, ids=[c[0] for c in CASES])
def test_matches_golden(golden, name, config, step, dtype_name, packed):
    want = golden["results"][f"{name}/{dtype_name}/{'packed' if packed else 'whole'}"]
    inputs = golden["inputs"]["b" if packed else "a"]
    got = run_case(config, step, inputs, getattr(torch, dtype_name), packed, name in UNFILTERED_CASES)
    tol, relative = (1e-12, False) if dtype_name == "float64" else (1e-6, True)

    def scale(value: float) -> float:
        return abs(value) if relative else 1.0

    assert _close(got["loss"], want["loss"], tol, scale(want["loss"])), (got["loss"], want["loss"])
    assert got["metrics"].keys() == want["metrics"].keys()
    for key, value in want["metrics"].items():
        assert _close(got["metrics"][key], value, tol, scale(value)), (key, got["metrics"][key], value)
    grad_want = torch.tensor(want["grad"], dtype=torch.float64)
    grad_got = torch.tensor(got["grad"], dtype=torch.float64)
    grad_scale = float(grad_want.abs().max()) if relative else 1.0
    assert float((grad_got - grad_want).abs().max()) <= tol * max(grad_scale, 1e-30)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/nemo_rl_plugin/test_loss_golden.py --record")
    record()
