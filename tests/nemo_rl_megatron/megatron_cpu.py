"""What it takes to run NeMo RL v0.7.0's Megatron training step on CPU gloo ranks (tests/nemo_rl_megatron only).

Everything here replaces the lowest layer that needs a GPU or a package that cannot be installed on CPU; nothing
replaces NeMo RL's or megatron-core's own logic. Each replacement, and why (docs/nemo_rl.md, "The Megatron tier"):

* ``cuda_rng``: ``torch.cuda.get_rng_state`` / ``set_rng_state`` and megatron-core's ``_get_cuda_rng_state`` /
  ``_set_cuda_rng_state`` use the CPU generator. ``model_parallel_cuda_manual_seed`` and
  ``CudaRNGStatesTracker.fork`` (dropout regions, activation recomputation) otherwise raise "Torch not compiled with
  CUDA enabled" / "Found no NVIDIA driver".
* ``current_device``: ``torch.cuda.current_device()`` is the CPU device (megatron-core passes it as ``device=`` for
  its memory buffer, pipeline point-to-point shapes, DDP buffers).
* ``streams``: ``torch.cuda.Stream`` / ``current_stream`` / ``stream`` / ``Event`` are CPU stand-ins whose waits do
  nothing (megatron-core's DDP wrapper and gradient buckets order CUDA streams; CPU work and gloo collectives with
  ``wait()`` are already ordered).
* ``synchronize`` / ``empty_cache``: no-ops.
* ``cuda_literals``: a ``TorchFunctionMode`` turns ``device="cuda"`` (and ``Tensor.to("cuda")``) into the CPU for the
  rank's whole run, and ``Tensor.cuda()`` is the identity: literal CUDA tensors in megatron-core's schedules,
  optimizer and clip-grad code and in NeMo RL's batch handling (``data_dict.to("cuda")``, ``.cuda()``). The same
  mode reports ``Tensor.type()`` with its CUDA name (``torch.cuda.FloatTensor``): megatron-core's optimizers sort
  parameters by that string and refuse any other.
* ``pin_memory``: ``pin_memory=True`` is dropped from ``torch.tensor`` globally: NeMo RL's ``AllGatherCPTensor``
  pins an index tensor in its *backward*, where a ``TorchFunctionMode`` is not active.
* ``megatron_bridge_types``: where Megatron-Bridge is not importable, a stand-in module provides the two type names
  ``nemo_rl/models/megatron/config.py`` imports (``ConfigContainer``, ``GlobalState``), used there only as
  annotations. (Bridge's own source does not import on CPU: ``megatron/bridge/peft/lora_layers.py`` imports
  ``transformer_engine.pytorch`` unconditionally, and a Transformer Engine stand-in would make megatron-core take its
  TE code paths.)
* ``norm`` (``SequenceParallelTorchNorm``): megatron-core's only norms that accept sequence parallelism are Transformer
  Engine's and Apex's; torch's ``RMSNorm`` (``WrappedTorchNorm``) is built with sequence parallelism off and its
  weight marked ``sequence_parallel`` as TE marks its own, so ``finalize_model_grads`` all-reduces its gradient over
  TP exactly as on a GPU. A per-token norm is exact on a sequence shard.
* ``attention`` (``PackedCausalAttention``): megatron-core's local ``DotProductAttention`` refuses packed (THD)
  sequences and context parallelism; only TE's does both. For packed layouts the tests use this small pure-torch
  causal attention per packed sequence (``cu_seqlens_q_padded``), with NeMo RL's per-sequence zigzag CP layout and
  K/V gathered over CP by megatron-core's ``gather_from_sequence_parallel_region`` (its backward is a
  reduce-scatter). TE's ring attention is therefore not exercised. Unpacked layouts use megatron-core's own
  ``DotProductAttention``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import sys
import types
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# ---------------------------------------------------------------------------------------------------------------
# The patches (call apply_cpu_patches() once per process, before building anything)
# ---------------------------------------------------------------------------------------------------------------


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return False


class CudaLiteralsOnCpu(TorchFunctionMode):
    """``device="cuda"`` / ``.to("cuda")`` -> CPU for every torch call made while the mode is active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_cuda(kwargs.get("device")):
            kwargs = {**kwargs, "device": "cpu"}
        if kwargs.get("pin_memory"):
            kwargs = {k: v for k, v in kwargs.items() if k != "pin_memory"}
        if func is torch.Tensor.to and any(_is_cuda(a) for a in args[1:]):
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        return func(*args, **kwargs)


class _CpuStream:
    """Stand-in for ``torch.cuda.Stream``: CPU work is already in program order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, other: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> _CpuEvent:
        return event or _CpuEvent()

    def synchronize(self) -> None:
        pass


class _CpuEvent:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, stream: Any = None) -> None:
        pass

    def wait(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


_APPLIED = False


def apply_cpu_patches() -> None:
    """Apply every replacement listed in the module docstring (idempotent). Needs megatron-core importable."""
    global _APPLIED
    if _APPLIED:
        return
    _APPLIED = True

    # cuda_rng
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    torch.cuda.manual_seed = lambda seed: None
    torch.cuda.manual_seed_all = lambda seed: None
    from megatron.core.tensor_parallel import random as mcore_random

    mcore_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    mcore_random._set_cuda_rng_state = lambda new_state, *args, **kwargs: torch.set_rng_state(new_state)

    # current_device, streams, synchronize / empty_cache
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.Stream = _CpuStream
    torch.cuda.Event = _CpuEvent
    torch.cuda.current_stream = lambda device=None: _CpuStream()
    torch.cuda.default_stream = lambda device=None: _CpuStream()
    torch.cuda.stream = lambda stream=None: contextlib.nullcontext()
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.empty_cache = lambda: None

    # cuda_literals (the mode is entered by the caller for the rank's run: cuda_literals_on_cpu())
    torch.Tensor.cuda = lambda self, *args, **kwargs: self

    # pin_memory (global: also inside autograd backward)
    original_tensor = torch.tensor

    def tensor(*args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.pop("pin_memory", None)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return original_tensor(*args, **kwargs)

    torch.tensor = tensor

    install_megatron_bridge_type_stand_in()


def cuda_literals_on_cpu() -> contextlib.AbstractContextManager:
    """The ``TorchFunctionMode`` for literal CUDA devices; enter it for the whole rank's run."""
    return CudaLiteralsOnCpu()


def install_megatron_bridge_type_stand_in() -> bool:
    """The two Megatron-Bridge type names NeMo RL's ``models/megatron/config.py`` imports, where Bridge is absent.

    Returns True if the stand-in was installed (False where a real Megatron-Bridge is importable).
    """
    try:
        if importlib.util.find_spec("megatron.bridge") is not None:
            return False
    except (ImportError, ValueError):
        pass
    names = {"megatron.bridge.training.config": "ConfigContainer", "megatron.bridge.training.state": "GlobalState"}
    for package in ("megatron.bridge", "megatron.bridge.training"):
        module = types.ModuleType(package)
        module.__path__ = []
        sys.modules[package] = module
    for module_name, type_name in names.items():
        module = types.ModuleType(module_name)
        setattr(module, type_name, type(type_name, (), {"__doc__": "Megatron-Bridge stand-in (annotation only)"}))
        sys.modules[module_name] = module
    return True


# ---------------------------------------------------------------------------------------------------------------
# Modules the tiny model needs on CPU
# ---------------------------------------------------------------------------------------------------------------


class SequenceParallelTorchNorm:
    """torch's RMSNorm / LayerNorm (megatron-core's ``WrappedTorchNorm``) usable under sequence parallelism.

    Built with sequence parallelism off (``WrappedTorchNorm`` asserts it is off) and its parameters marked
    ``sequence_parallel`` like Transformer Engine's norms, so their gradients are all-reduced over TP by
    ``finalize_model_grads``.
    """

    def __new__(cls, config: Any, hidden_size: int, eps: float = 1e-5, **kwargs: Any) -> torch.nn.Module:
        import copy

        from megatron.core.transformer.torch_norm import WrappedTorchNorm

        built_without_sp = copy.copy(config)
        built_without_sp.sequence_parallel = False
        norm = WrappedTorchNorm(built_without_sp, hidden_size, eps, **kwargs)
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm


def _zigzag_positions(length: int, cp_size: int, cp_rank: int) -> torch.Tensor:
    """Positions of one (padded) sequence of ``length`` tokens held by ``cp_rank``: chunks r and 2 CP - 1 - r."""
    chunk = length // (2 * cp_size)
    first = torch.arange(cp_rank * chunk, (cp_rank + 1) * chunk)
    second = torch.arange((2 * cp_size - 1 - cp_rank) * chunk, (2 * cp_size - cp_rank) * chunk)
    return torch.cat([first, second])


class PackedCausalAttention(torch.nn.Module):
    """Causal softmax attention over packed (THD) sequences, context-parallel in NeMo RL's zigzag layout.

    Inputs (megatron-core's core-attention contract for ``qkv_format="thd"``): query [t, np, hn], key / value
    [t, ng, hn] for this rank's t = T / CP tokens (T the packed length, every sequence padded to a multiple of
    2 x CP), and ``packed_seq_params.cu_seqlens_q_padded`` over the full packed sequence. Output [t, np * hn].
    Each sequence attends causally within itself; padding only follows a sequence's real tokens, so it never
    reaches them. Keys and values of the whole CP group are gathered with megatron-core's
    ``gather_from_sequence_parallel_region`` (backward: reduce-scatter).
    """

    def __init__(
        self,
        config: Any,
        layer_number: int,
        attn_mask_type: Any,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: Any = None,
    ) -> None:
        super().__init__()
        from megatron.core.process_groups_config import ProcessGroupCollection

        self.config = config
        self.pg_collection = pg_collection or ProcessGroupCollection.use_mpu_process_groups()
        self.scale = softmax_scale if softmax_scale is not None else config.kv_channels**-0.5

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Any,
        attn_mask_type: Any = None,
        attention_bias: Any = None,
        packed_seq_params: Any = None,
    ) -> torch.Tensor:
        from megatron.core.tensor_parallel.mappings import gather_from_sequence_parallel_region

        if packed_seq_params is None or packed_seq_params.qkv_format != "thd":
            raise ValueError("PackedCausalAttention serves packed (THD) sequences only")
        cp_group = self.pg_collection.cp
        cp_size, cp_rank = cp_group.size(), cp_group.rank()
        cu = packed_seq_params.cu_seqlens_q_padded
        if cu is None:
            cu = packed_seq_params.cu_seqlens_q
        cu = [int(x) for x in cu.tolist()]
        if cp_size > 1:  # [t, ng, hn] per rank -> [CP * t, ng, hn], rank-major
            key = gather_from_sequence_parallel_region(key, group=cp_group)
            value = gather_from_sequence_parallel_region(value, group=cp_group)
        local_tokens = query.shape[0]
        groups = query.shape[1] // key.shape[1]
        outputs = []
        local_start = 0
        for start, end in itertools.pairwise(cu):
            length = end - start
            if length == 0:
                continue
            shard = length // cp_size
            q = query[local_start : local_start + shard]
            q_pos = _zigzag_positions(length, cp_size, cp_rank)
            # this sequence's keys in order: rank r holds chunks r and 2 CP - 1 - r at local offset start / CP
            k_parts, v_parts, k_pos = [], [], []
            for r in range(cp_size):
                offset = r * local_tokens + start // cp_size
                k_parts.append(key[offset : offset + shard])
                v_parts.append(value[offset : offset + shard])
                k_pos.append(_zigzag_positions(length, cp_size, r))
            k = torch.cat(k_parts).repeat_interleave(groups, dim=1)
            v = torch.cat(v_parts).repeat_interleave(groups, dim=1)
            k_positions = torch.cat(k_pos)
            scores = torch.einsum("qhd,khd->hqk", q, k) * self.scale
            allowed = k_positions[None, :] <= q_pos[:, None]
            scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            outputs.append(torch.einsum("hqk,khd->qhd", probs, v))
            local_start += shard
        if local_start != local_tokens:
            raise ValueError(f"cu_seqlens cover {local_start} local tokens, the shard has {local_tokens}")
        out = torch.cat(outputs)
        return out.reshape(out.shape[0], -1)
