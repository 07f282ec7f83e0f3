"""Run by test_plugin_nemo_rl_parallel.py (needs nemo_rl): 4 gloo ranks feed ``HolderPOLossFn`` the log-probs of
NeMo RL v0.7.0's own parallel path and compare loss, metrics and logit gradients with the single-rank run.

The path is the Megatron worker's: ``wrap_loss_fn_with_input_preparation`` + ``prepare_loss_input`` (unpacked),
``SequencePackingLossWrapper`` + ``prepare_loss_input`` (packing, one sequence per loss call) and
``SequencePackingFusionLossWrapper`` + ``prepare_packed_loss_input`` (packing, fused), i.e.
``get_next_token_logprobs_from_logits`` -> ``from_parallel_logits_to_logprobs[_packed_sequences]``
(``DistributedLogprob`` over the vocab-parallel TP group, ``AllGatherCPTensor`` over the load-balanced 2 x CP layout),
with the worker's ``loss / cp_size`` (``LossPostProcessor``, whose module needs Megatron-Bridge, so the one line is
repeated here). Each rank holds the logits a Megatron rank holds: its vocabulary shard and its CP chunks (r and
2 CP - 1 - r of every (padded) sequence). The reference is the same NeMo RL functions with TP = CP = 1.

Patched because they are CUDA-only (nothing else is): ``Tensor.cuda`` is the identity and ``pin_memory=True`` is
dropped from ``torch.tensor`` (``AllGatherCPTensor.backward`` pins its index tensor). Prints "OK" from rank 0.
"""

from __future__ import annotations

import os
import sys
import tempfile
import typing

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD, V, B, S = 4, 16, 5, 24
LAYOUTS = ((2, 1), (1, 2), (2, 2))  # (TP, CP)
CONFIGS = [  # clip modes and the optional terms that read other inputs (KL, IS correction)
    {"holder": {"clip_mode": "sequence", "schedule": {"kind": "constant", "p_max": 2.0}}},
    {"holder": {"clip_mode": "sequence", "schedule": {"kind": "constant", "p_max": -2.0}}, "ratio_clip_c": 3.0},
    {
        "reference_policy_kl_penalty": 0.05,
        "use_importance_sampling_correction": True,
        "holder": {"clip_mode": "token", "schedule": {"kind": "constant", "p_max": 0.0}},
    },
    {"holder": {"clip_mode": "token_log", "schedule": {"kind": "constant", "p_max": 1.0}}, "ratio_clip_min": 0.4},
]


def patch_cuda_only_calls() -> None:
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    original = torch.tensor

    def tensor(*args, **kwargs):
        kwargs.pop("pin_memory", None)
        return original(*args, **kwargs)

    torch.tensor = tensor


def make_data(seed: int) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Full logits [B, S, V] (float32), a NeMo RL micro-batch, and each row's unpadded length."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([24, 17, 9, 20, 13])
    token_mask = torch.zeros(B, S)
    for i, n in enumerate(lengths.tolist()):
        token_mask[i, 4:n] = 1  # 4 prompt tokens, then the response
    sample_mask = torch.ones(B)
    sample_mask[3] = 0
    prev = -torch.rand(B, S, generator=g, dtype=torch.float64) * 3 - 0.1
    data = {
        "input_ids": torch.randint(0, V, (B, S), generator=g),
        "token_mask": token_mask,
        "sample_mask": sample_mask,
        "advantages": torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, S).clone(),
        "prev_logprobs": prev.float(),
        "generation_logprobs": (prev + 0.05 * torch.randn(B, S, generator=g, dtype=torch.float64)).float(),
        "reference_policy_logprobs": (prev + 0.2 * torch.randn(B, S, generator=g, dtype=torch.float64)).float(),
    }
    logits = (3 * torch.randn(B, S, V, generator=g)).float()
    return logits, data, lengths


def cp_chunks(length: int, cp: int, cp_rank: int) -> torch.Tensor:
    """Positions of a (padded) sequence of ``length`` tokens held by ``cp_rank``: chunks r and 2 CP - 1 - r."""
    from nemo_rl.distributed.model_utils import _get_tokens_on_this_cp_rank

    return _get_tokens_on_this_cp_rank(torch.arange(length), cp_rank, cp, seq_dim=0)


def padded(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def run_case(mode: str, cfg: dict, seed: int, tp: int, cp: int, groups: dict, rank: int) -> None:
    from nemo_rl.algorithms.loss.utils import prepare_loss_input, prepare_packed_loss_input
    from nemo_rl.algorithms.loss.wrapper import (
        SequencePackingFusionLossWrapper,
        SequencePackingLossWrapper,
        wrap_loss_fn_with_input_preparation,
    )
    from nemo_rl.distributed.batched_data_dict import BatchedDataDict

    from holder_nemo.nemo_rl import HolderPOLossFn

    logits, raw, lengths = make_data(seed)
    data = BatchedDataDict(raw)
    seqs = data["sample_mask"].sum()
    toks = (data["token_mask"][:, 1:] * data["sample_mask"][:, None]).sum()
    loss_fn = HolderPOLossFn(cfg)
    local = rank % (tp * cp)
    cp_rank, tp_rank = divmod(local, tp)
    vocab = slice(tp_rank * (V // tp), (tp_rank + 1) * (V // tp))
    tp_group, cp_group, single = groups[(tp, cp)]["tp"], groups[(tp, cp)]["cp"], groups["self"]

    def call(wrapper, args, shard, tp_g, cp_g, tp_r):
        loss, metrics = wrapper(shard, BatchedDataDict(dict(data)), seqs, toks, *args, tp_r, tp_g, cp_g)
        return loss, metrics

    if mode == "unpacked":
        wrapper = lambda x, d, s, t, *a: wrap_loss_fn_with_input_preparation(  # noqa: E731
            x, d, s, t, loss_fn, prepare_loss_input, *a
        )
        full = logits.clone().requires_grad_()
        ref_loss, ref_metrics = call(wrapper, (), full, single, single, 0)
        ref_loss.backward()
        positions = cp_chunks(S, cp, cp_rank)
        shard = logits[:, positions, vocab].clone().requires_grad_()
        loss, metrics = call(wrapper, (), shard, tp_group, cp_group, tp_rank)
        (loss / cp).backward()  # the Megatron worker's LossPostProcessor: loss / cp_size
        expected_grad = full.grad[:, positions, vocab]
    else:
        # Megatron packing: each sequence padded to a multiple of 2 x CP (x TP under sequence parallelism).
        multiple = 2 * cp * tp
        pad_lengths = [padded(int(n), multiple) for n in lengths]
        cu = torch.tensor([0, *torch.cumsum(lengths, 0).tolist()], dtype=torch.int32)
        cu_padded = torch.tensor([0, *torch.cumsum(torch.tensor(pad_lengths), 0).tolist()], dtype=torch.int32)
        packed = torch.zeros(1, int(cu_padded[-1]), V)
        for i, n in enumerate(lengths.tolist()):
            packed[0, int(cu_padded[i]) : int(cu_padded[i]) + n] = logits[i, :n]
        wrapper_cls, prepare = (
            (SequencePackingLossWrapper, prepare_loss_input)
            if mode == "packed"
            else (SequencePackingFusionLossWrapper, prepare_packed_loss_input)
        )

        def wrapper(x, d, s, t, tp_r, tp_g, cp_g):
            return wrapper_cls(loss_fn, prepare, cu, cu_padded, tp_r, tp_g, cp_g)(x, d, s, t)

        full = packed.clone().requires_grad_()
        ref_loss, ref_metrics = call(wrapper, (), full, single, single, 0)
        ref_loss.backward()
        positions = torch.cat(
            [int(cu_padded[i]) + cp_chunks(pad_lengths[i], cp, cp_rank) for i in range(B)]
        )  # this rank's slice of the packed sequence, in Megatron's order
        shard = packed[:, positions, vocab].clone().requires_grad_()
        loss, metrics = call(wrapper, (), shard, tp_group, cp_group, tp_rank)
        (loss / cp).backward()
        expected_grad = full.grad[:, positions, vocab]
    where = f"{mode} TP{tp} CP{cp} {cfg['holder']['clip_mode']} seed {seed} rank {rank}"
    torch.testing.assert_close(loss, ref_loss, rtol=2e-6, atol=1e-7, msg=lambda m: f"{where}: loss\n{m}")
    torch.testing.assert_close(shard.grad, expected_grad, rtol=1e-5, atol=1e-7, msg=lambda m: f"{where}: grad\n{m}")
    assert expected_grad.abs().sum() > 0, where
    assert metrics.keys() == ref_metrics.keys(), where
    for key, value in ref_metrics.items():
        assert abs(metrics[key] - value) <= 2e-6 * max(1.0, abs(value)), (where, key, metrics[key], value)


def check_single_rank_against_float64(seed: int, group) -> float:
    """NeMo RL's TP = CP = 1 log-probs against a float64 log-softmax: they are computed in float32."""
    from nemo_rl.distributed.model_utils import get_next_token_logprobs_from_logits

    logits, data, _ = make_data(seed)
    ours = get_next_token_logprobs_from_logits(data["input_ids"], logits, vocab_parallel_rank=0,
                                               vocab_parallel_group=group, context_parallel_group=group)  # fmt: skip
    exact = torch.log_softmax(logits.double(), -1)[:, :-1].gather(-1, data["input_ids"][:, 1:, None]).squeeze(-1)
    assert ours.dtype == torch.float32
    error = (ours.double() - exact).abs().max().item()
    assert error < 2e-6, error
    return error


def run(rank: int, init_file: str) -> None:
    if sys.version_info < (3, 12):
        import typing_extensions

        typing.TypedDict = typing_extensions.TypedDict
    patch_cuda_only_calls()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    groups: dict = {"self": None}
    for r in range(WORLD):  # every rank creates every group, in the same order
        group = dist.new_group([r])
        if r == rank:
            groups["self"] = group
    for tp, cp in LAYOUTS:
        size = tp * cp
        mine = {}
        for replica in range(WORLD // size):
            base = replica * size
            for c in range(cp):
                g = dist.new_group([base + c * tp + t for t in range(tp)])
                if rank in range(base + c * tp, base + c * tp + tp):
                    mine["tp"] = g
            for t in range(tp):
                g = dist.new_group([base + c * tp + t for c in range(cp)])
                if rank in [base + c * tp + t for c in range(cp)]:
                    mine["cp"] = g
        groups[(tp, cp)] = mine
    error = check_single_rank_against_float64(7, groups["self"])
    cases = 0
    for tp, cp in LAYOUTS:
        for i, cfg in enumerate(CONFIGS):
            for mode in ("unpacked", "packed", "packed_fused"):
                run_case(mode, cfg, 11 + i, tp, cp, groups, rank)
                cases += 1
    dist.barrier()
    if rank == 0:
        print(f"OK {cases} cases; single-rank NeMo RL log-probs vs float64: max error {error:.2e}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(run, args=(os.path.join(tmp, "init"),), nprocs=WORLD, start_method="spawn")
