"""HolderPOLossFn on NeMo RL-shaped batches: formulas, normalisation, micro-batch/DP invariance, metrics, pickling."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from nemo_rl_batches import global_counts, make_batch, reference_loss, slice_rows

from holder_nemo.nemo_rl import HolderPOLossFn
from holder_nemo.nemo_rl.loss import MirrorLossInputType, MirrorLossType

MINMAX_KEYS = {"probs_ratio_min", "probs_ratio_max", "probs_ratio_clamped_min", "probs_ratio_clamped_max"}


def constant_p(p: float, **holder) -> dict:
    return {
        "reference_policy_kl_penalty": 0.0,
        "holder": {"schedule": {"kind": "constant", "p_max": p, "p_min": min(p, -2.0)}, **holder},
    }


def call(loss_fn, curr, data, counts=None):
    seqs, toks = global_counts(data) if counts is None else counts
    return loss_fn(next_token_logprobs=curr, data=data, global_valid_seqs=seqs, global_valid_toks=toks)


@pytest.mark.parametrize(
    ("p", "clip_mode"), [(0.0, "sequence"), (1.0, "sequence"), (-2.0, "sequence"), (1.0, "token"), (2.0, "token")]
)
def test_loss_and_gradient_match_float64_reference(p, clip_mode):
    curr, data = make_batch(drift=0.4)
    loss_fn = HolderPOLossFn(constant_p(p, clip_mode=clip_mode))
    x = curr.clone().requires_grad_()
    loss, _ = call(loss_fn, x, data)
    y = curr.clone().requires_grad_()
    ref = reference_loss(y, data, p, clip_mode)
    (g_loss,) = torch.autograd.grad(loss, x)
    (g_ref,) = torch.autograd.grad(ref, y)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_loss, g_ref, rtol=1e-9, atol=1e-12)
    assert g_loss.abs().sum() > 0  # some sequences are inside the clip range


def test_gspo_formula_at_p0_sequence_clip():
    """NeMo RL GSPO (sequence_level_importance_ratios, token_level_loss false): r_i = exp(mean_t(curr - prev)),
    loss = sum_i max(-A r_i, -A clip(r_i)) / #valid sequences. Written from the published formula."""
    curr, data = make_batch(seed=3)
    loss, _ = call(HolderPOLossFn(constant_p(0.0)), curr, data)
    mask = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).bool()
    log_r = torch.where(mask, curr - data["prev_logprobs"][:, 1:], 0).sum(-1) / mask.sum(-1).clamp(min=1)
    adv = data["advantages"][:, 0]
    r = torch.exp(log_r)
    per_seq = torch.maximum(-adv * r, -adv * r.clamp(0.8, 1.2)) * mask.any(-1)
    expected = (per_seq * data["sample_mask"]).sum() / data["sample_mask"].sum()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)


def test_token_clip_at_p1_is_sequence_normalised_ppo():
    """p = 1, token clip: ClippedPG with token_level_loss false: mean over sequences of the token-mean PPO loss."""
    curr, data = make_batch(seed=4, drift=0.5)
    loss, _ = call(HolderPOLossFn(constant_p(1.0, clip_mode="token")), curr, data)
    mask = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).bool()
    r = torch.exp(curr - data["prev_logprobs"][:, 1:])
    adv = data["advantages"][:, 1:]
    ppo = torch.maximum(-adv * r, -adv * r.clamp(0.8, 1.2))
    per_seq = torch.where(mask, ppo, 0).sum(-1) / mask.sum(-1).clamp(min=1)
    expected = per_seq.sum() / data["sample_mask"].sum()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("clip_mode", ["sequence", "token", "token_log", "none"])
def test_microbatch_and_data_parallel_split_invariance(clip_mode):
    """Summing the losses of any split (micro-batches, DP ranks, one packed sequence at a time) gives the full-batch
    loss and gradient; summed metrics give the full-batch metrics (min/max keys by min/max)."""
    cfg = {
        "reference_policy_kl_penalty": 0.05,
        "use_importance_sampling_correction": True,
        "holder": {"clip_mode": clip_mode},
    }
    loss_fn = HolderPOLossFn(cfg)
    loss_fn.set_step(123)
    curr, data = make_batch(batch=8, seed=5)
    counts = global_counts(data)
    x = curr.clone().requires_grad_()
    full_loss, full_metrics = call(loss_fn, x, data, counts)
    (full_grad,) = torch.autograd.grad(full_loss, x)

    for split in ([slice(0, 3), slice(3, 5), slice(5, 8)], [[i] for i in range(8)], [[0, 5, 7], [1, 2, 3, 4, 6]]):
        y = curr.clone().requires_grad_()
        total, summed = 0, {}
        for rows in split:
            part_loss, metrics = call(loss_fn, y[rows], slice_rows(data, rows), counts)
            total = total + part_loss
            for key, value in metrics.items():
                if key in MINMAX_KEYS:
                    pick = min if key.endswith("_min") else max
                    summed[key] = pick(summed.get(key, value), value)
                else:
                    summed[key] = summed.get(key, 0.0) + value
        (grad,) = torch.autograd.grad(total, y)
        torch.testing.assert_close(total, full_loss, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, full_grad, rtol=1e-12, atol=1e-14)
        assert summed.keys() == full_metrics.keys()
        for key, value in full_metrics.items():
            assert summed[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert full_metrics["holder/p"] == pytest.approx(loss_fn.p)


def test_packed_single_sequence_calls_with_trimmed_rows():
    """NeMo RL's non-fused packing wrapper calls the loss per sequence with every [1, S] tensor trimmed to the
    sequence's unpadded length; the sum equals the padded full-batch loss."""
    loss_fn = HolderPOLossFn({"reference_policy_kl_penalty": 0.0})
    curr, data = make_batch(batch=5, seed=6)
    counts = global_counts(data)
    full, _ = call(loss_fn, curr, data, counts)
    lengths = [12, 8, 3, 12, 12]  # prompt + response; row 2 is an empty response
    total = 0.0
    for i, n in enumerate(lengths):
        row = {k: (v[i : i + 1, :n] if v.dim() == 2 else v[i : i + 1]) for k, v in data.items()}
        part, _ = call(loss_fn, curr[i : i + 1, : n - 1], row, counts)
        total = total + part
    torch.testing.assert_close(total, full, rtol=1e-12, atol=1e-14)


def test_padding_garbage_empty_and_masked_rows_are_ignored():
    loss_fn = HolderPOLossFn({"reference_policy_kl_penalty": 0.1})
    curr, data = make_batch(seed=7)
    x = curr.clone().requires_grad_()
    loss, metrics = call(loss_fn, x, data)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss)
    assert grad[2].abs().sum() == 0  # empty response
    assert grad[3].abs().sum() == 0  # sample_mask = 0
    assert grad[:, :2].abs().sum() == 0  # prompt positions
    data2 = {k: v.clone() for k, v in data.items()}
    for key in ("prev_logprobs", "generation_logprobs", "reference_policy_logprobs", "advantages"):
        data2[key][3] = float("nan")  # a masked-out sample may hold anything
    loss2, _ = call(loss_fn, curr, data2)
    torch.testing.assert_close(loss2, loss.detach())
    assert metrics["num_valid_samples"] == 5.0


def test_all_rows_masked_gives_zero_loss_and_sentinels():
    curr, data = make_batch(seed=8)
    data["sample_mask"] = torch.zeros_like(data["sample_mask"])
    x = curr.clone().requires_grad_()
    loss, metrics = call(HolderPOLossFn({}), x, data, (torch.tensor(10.0), torch.tensor(50.0)))
    loss.backward()
    assert loss.item() == 0 and x.grad.abs().sum() == 0
    assert metrics["probs_ratio_min"] == math.inf and metrics["probs_ratio_max"] == -math.inf
    assert metrics["num_valid_samples"] == 0 and metrics["holder/p"] == 0


def test_bf16_logprobs_close_to_float64():
    curr, data = make_batch(seed=9)
    loss_fn = HolderPOLossFn({"reference_policy_kl_penalty": 0.0})
    exact, _ = call(loss_fn, curr, data)
    x = curr.to(torch.bfloat16).requires_grad_()
    approx, metrics = call(loss_fn, x, data)
    approx.backward()
    assert approx.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    assert approx.item() == pytest.approx(exact.item(), abs=2e-2)
    assert all(math.isfinite(v) or k in MINMAX_KEYS for k, v in metrics.items())


def test_importance_weight_levels_and_truncation():
    """sequence_mean: w = exp(mean_t(prev - gen)) (length-normalised); sequence_sum: exp(sum) (NeMo RL GSPO)."""
    curr, data = make_batch(seed=10, gen_noise=0.1)
    mask = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).bool()
    diff = torch.where(mask, data["prev_logprobs"][:, 1:] - data["generation_logprobs"][:, 1:], 0)
    w_mean = torch.exp(diff.sum(-1) / mask.sum(-1).clamp(min=1))
    w_sum = torch.exp(diff.sum(-1))
    base = HolderPOLossFn({"reference_policy_kl_penalty": 0.0})
    per_seq_terms = []
    for i in range(curr.shape[0]):  # loss contribution of each sequence without IS correction
        rows = [i]
        part, _ = call(base, curr[rows], slice_rows(data, rows), global_counts(data))
        per_seq_terms.append(part)
    terms = torch.stack(per_seq_terms)
    for level, w in (("sequence_mean", w_mean), ("sequence_sum", w_sum)):
        cfg = {"reference_policy_kl_penalty": 0.0, "use_importance_sampling_correction": True}
        loss_fn = HolderPOLossFn({**cfg, "holder": {"is_correction_level": level}})
        loss, metrics = call(loss_fn, curr, data)
        torch.testing.assert_close(loss, (terms * w).sum(), rtol=1e-12, atol=1e-14)
        valid = data["sample_mask"].bool()
        assert metrics["sampling_importance_ratio"] == pytest.approx(float(w[valid].mean()), rel=1e-12)
    valid_sorted = torch.sort(w_mean[data["sample_mask"].bool()]).values
    lo, hi = float(valid_sorted[1]), float(valid_sorted[-2])
    for kind, expected_w in (
        ("tis", w_mean.clamp(lo, hi)),
        ("icepop", torch.where((w_mean < lo) | (w_mean > hi), 0.0, w_mean)),
    ):
        cfg = {
            "reference_policy_kl_penalty": 0.0,
            "use_importance_sampling_correction": True,
            "truncated_importance_sampling_type": kind,
            "truncated_importance_sampling_ratio": hi,
            "truncated_importance_sampling_ratio_min": lo,
        }
        loss, metrics = call(HolderPOLossFn(cfg), curr, data)
        torch.testing.assert_close(loss, (terms * expected_w).sum(), rtol=1e-12, atol=1e-14)
        assert metrics["is_oob_ratio"] == pytest.approx(2 / 5)  # the smallest and the largest of 5 valid rows


def test_kl_penalty_k3_matches_reference():
    curr, data = make_batch(seed=11)
    loss_fn = HolderPOLossFn({**constant_p(0.5), "reference_policy_kl_penalty": 0.3})
    x = curr.clone().requires_grad_()
    loss, metrics = call(loss_fn, x, data)
    y = curr.clone().requires_grad_()
    ref = reference_loss(y, data, 0.5, "sequence", beta=0.3)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(*[torch.autograd.grad(v, t)[0] for v, t in ((loss, x), (ref, y))], rtol=1e-9, atol=0)
    no_kl, _ = call(HolderPOLossFn(constant_p(0.5)), curr, data)
    assert metrics["kl_penalty"] == pytest.approx((loss - no_kl).item() / 0.3, rel=1e-9)
    in_reward = HolderPOLossFn({**constant_p(0.5), "reference_policy_kl_penalty": 0.3, "use_kl_in_reward": True})
    assert in_reward.reference_policy_kl_penalty == 0.0


def test_importance_ratio_against_generation_logprobs():
    curr, data = make_batch(seed=12)
    swapped = dict(data, prev_logprobs=data["generation_logprobs"])
    a, _ = call(HolderPOLossFn({"holder": {"importance_ratio": "train_vs_generation"}}), curr, data)
    b, _ = call(HolderPOLossFn({}), curr, swapped)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_schedule_step_p_and_metric_names():
    loss_fn = HolderPOLossFn({})  # paper default: linear_dec 2 -> -2 over 500 steps
    assert loss_fn.step == 1 and loss_fn.p == pytest.approx(1.992)
    loss_fn.set_step(500)
    assert loss_fn.p == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="step"):
        loss_fn.set_step(-1)
    _, metrics = call(loss_fn, *make_batch())
    for key in ("loss", "num_valid_samples", "gen_kl_error", "token_mult_prob_error", "probs_ratio", *MINMAX_KEYS):
        assert key in metrics
    # the workers keep keys containing _min/_max undivided and grpo_train sums them: only NeMo RL's four may
    assert {k for k in metrics if "_min" in k or "_max" in k} == MINMAX_KEYS
    assert all(isinstance(v, float) for v in metrics.values())


def test_enums_mirror_nemo_rl_without_it():
    pytest.importorskip("torch")
    loss_fn = HolderPOLossFn({})
    if loss_fn.loss_type.__class__ is MirrorLossType:
        assert loss_fn.loss_type.value == "sequence_level"
        assert loss_fn.input_type is MirrorLossInputType.LOGPROB
    else:  # nemo_rl importable: its own members (identity comparisons in the workers)
        assert loss_fn.loss_type.name == "SEQUENCE_LEVEL" and loss_fn.input_type.name == "LOGPROB"


def test_pickle_round_trip_keeps_config_and_step():
    loss_fn = HolderPOLossFn({"ratio_clip_max": 0.28, "holder": {"clip_mode": "token", "schedule": {"steps": 100}}})
    loss_fn.set_step(40)
    clone = pickle.loads(pickle.dumps(loss_fn))
    assert clone.step == 40 and clone.p == loss_fn.p and clone.config == loss_fn.config
    curr, data = make_batch(seed=13)
    torch.testing.assert_close(call(clone, curr, data)[0], call(loss_fn, curr, data)[0])


def test_check_finite_raises_on_nan_at_valid_position():
    curr, data = make_batch(seed=14)
    curr[0, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        call(HolderPOLossFn({}), curr, data)
    loss, _ = call(HolderPOLossFn({"holder": {"check_finite": False}}), curr, data)
    assert torch.isnan(loss)


# Calls that read a tensor on the host: each is a device -> host transfer (and a stream sync) on a GPU.
HOST_READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu", "nonzero"}
HOST_READS |= {"masked_select", "unique", "unique_consecutive", "equal", "__repr__", "__format__"}


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts host reads of tensors, including boolean-mask indexing (its output size lives on the device)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        index = args[1] if name == "__getitem__" and len(args) > 1 else None
        indices = index if isinstance(index, tuple) else (index,)
        if name in HOST_READS or any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "cfg",
    [
        {},  # paper defaults: linear_dec p, sequence clip, k3 KL penalty, finite checks
        {"reference_policy_kl_penalty": 0.0, "holder": {"schedule": {"kind": "constant", "p_max": 0.0}}},
        {"ratio_clip_c": 3.0, "holder": {"clip_mode": "token", "check_finite": False}},
        {
            "use_importance_sampling_correction": True,
            "truncated_importance_sampling_type": "icepop",
            "truncated_importance_sampling_ratio": 1.5,
            "truncated_importance_sampling_ratio_min": 0.5,
            "holder": {"clip_mode": "token_log"},
        },
    ],
)
def test_one_device_to_host_transfer_per_call(cfg):
    """Everything the call reports travels in one ``tolist`` of one stacked tensor (the loss value, the
    non-finite count, every metric); nothing else reads the device, forward or backward."""
    curr, data = make_batch(seed=15)
    curr = curr.float().requires_grad_()
    data = {k: v.float() if v.is_floating_point() else v for k, v in data.items()}
    loss_fn = HolderPOLossFn(cfg)
    seqs, toks = global_counts(data)
    with _HostReads() as counter:
        loss, metrics = loss_fn(next_token_logprobs=curr, data=data, global_valid_seqs=seqs, global_valid_toks=toks)
        loss.backward()
    assert counter.reads == ["tolist"], counter.reads
    assert len(metrics) > 20 and curr.grad is not None


@pytest.mark.gpu
def test_one_stream_sync_per_call_on_cuda():
    """The same on a GPU, counted by CUDA itself: ``set_sync_debug_mode`` warns at every synchronising call."""
    import warnings

    curr, data = make_batch(seed=16)
    curr = curr.float().cuda().requires_grad_()
    data = {k: (v.float() if v.is_floating_point() else v).cuda() for k, v in data.items()}
    seqs, toks = global_counts(data)
    loss_fn = HolderPOLossFn({})
    loss_fn(next_token_logprobs=curr, data=data, global_valid_seqs=seqs, global_valid_toks=toks)  # warm-up
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loss, _ = loss_fn(next_token_logprobs=curr, data=data, global_valid_seqs=seqs, global_valid_toks=toks)
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
