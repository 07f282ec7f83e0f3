"""One NeMo RL v0.7.0 Megatron training step of a tiny ``GPTModel`` with a NeMo RL loss, on this process's ranks.

Used by tests/nemo_rl_megatron/megatron_ranks.py (the spawned gloo ranks) and benchmarks/bench_megatron_step.py.

What is NeMo RL's or megatron-core's own code, and what is this file's:

* The policy config is our recipe ``recipes/holderpo_qwen2.5-math-7b.yaml`` (its ``megatron_cfg``, optimizer,
  scheduler, DDP keys, packing, loss), with the model shrunk and the CPU changes named in ``CPU_OVERRIDES``.
* The model: megatron-core's ``GPTModel`` built from a ``TransformerConfig`` set from the recipe keys the way NeMo
  RL's ``models/megatron/setup.py`` sets it (``_apply_parallelism_config``, ``_apply_precision_config``,
  ``_apply_performance_config``, ``_validate_training_config``: ``calculate_per_token_loss=True``,
  ``perform_initialization=True``); those functions live in a module that imports Megatron-Bridge, so their
  assignments are repeated in ``transformer_config``.
* DDP, optimizer, scheduler: what ``setup_model_and_optimizer`` gets from Megatron-Bridge, rebuilt from megatron-core
  (Bridge itself does not import on CPU; see megatron_cpu.py): Bridge's ``get_model`` -> megatron-core's
  ``megatron.training.models.dist_utils._ddp_wrap`` (the function Bridge calls) with NeMo RL's
  ``DistributedDataParallelConfig`` keys (``_create_megatron_config``); Bridge's ``setup_optimizer`` ->
  megatron-core's ``get_megatron_optimizer`` with ``get_standard_config_overrides`` (Bridge's default override
  provider) and gloo process groups (Bridge's default ``dist.use_gloo_process_groups=True``); Bridge's
  ``_get_scheduler`` -> megatron-core's ``OptimizerParamScheduler`` with Bridge's step arithmetic; Bridge's
  ``_update_model_config_funcs`` (``no_sync_func``, ``grad_sync_func``, ``param_sync_func``,
  ``finalize_model_grads_func = partial(finalize_model_grads, pg_collection=...)``, ``grad_scale_func``).
* The step: ``MegatronPolicyWorkerImpl.train`` (its module imports Megatron-Bridge) repeated call for call in
  ``worker_train``: ``process_global_batch``, ``get_microbatch_iterator``, ``LossPostProcessor``,
  ``zero_grad_buffer`` / ``zero_grad``, ``megatron_forward_backward`` (megatron-core's ``get_forward_backward_func``
  schedule), ``optimizer.step()``, ``broadcast_loss_metrics_from_last_stage``, ``scheduler.step``,
  ``aggregate_training_statistics``: all NeMo RL's and megatron-core's own functions. The batch is sharded over
  data-parallel ranks with ``BatchedDataDict.shard_by_batch_size`` as ``Policy._shard_for_train`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "holderpo_qwen2.5-math-7b.yaml"

# The tiny model (Qwen2-like: RMSNorm, SwiGLU, RoPE, grouped-query attention with a QKV bias, untied output layer).
MODEL = {
    "num_layers": 4,
    "hidden_size": 64,
    "ffn_hidden_size": 96,
    "num_attention_heads": 4,
    "num_query_groups": 2,
    "vocab_size": 128,
    "max_sequence_length": 48,
    "rotary_base": 1_000_000,
}
BATCH_ROWS = 8
LENGTHS = (48, 37, 29, 44, 18, 33, 25, 41)  # tokens per row; the first PROMPT are the prompt
PROMPT = 6
MASKED_ROW = 5  # sample_mask 0

# Changes to the recipe for a CPU run, each with its reason (the rest of the recipe is used as is).
CPU_OVERRIDES = {
    # fp32 throughout: bf16 matmuls on CPU are slow and the comparison is at float32 round-off
    "policy.precision": "float32",
    "policy.megatron_cfg.optimizer.bf16": False,
    # megatron-core's precision-aware optimizer is Transformer Engine's FusedAdam (not installable on CPU)
    "policy.megatron_cfg.optimizer.use_precision_aware_optimizer": False,
    # fused kernels (TE / Apex / CUDA)
    "policy.megatron_cfg.apply_rope_fusion": False,
    "policy.megatron_cfg.bias_activation_fusion": False,
    # the tiny model and batch
    "policy.max_total_sequence_length": MODEL["max_sequence_length"],
    "policy.train_global_batch_size": BATCH_ROWS,
    "policy.train_micro_batch_size": 2,
    "policy.logprob_batch_size": 2,
    # every packed layout pads each sequence to 8 tokens (the minimum for TP 2 x CP 2 is 2 x CP x TP = 8), so the
    # single-rank reference packs exactly as every layout does
    "policy.make_sequence_length_divisible_by": 8,
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A parallel layout of the policy: sizes, sequence parallelism, packing."""

    name: str
    tp: int = 1
    cp: int = 1
    pp: int = 1
    sp: bool = False
    packing: bool = False

    @property
    def model_parallel(self) -> int:
        return self.tp * self.cp * self.pp


def policy_config(layout: Layout) -> dict[str, Any]:
    """The recipe's ``policy`` section for ``layout`` (plain dict, as NeMo RL's workers receive it)."""
    from omegaconf import OmegaConf

    from holder_nemo.config.loading import load_recipe

    overrides = [f"{k}={_hydra(v)}" for k, v in CPU_OVERRIDES.items()]
    overrides += [
        f"policy.megatron_cfg.tensor_model_parallel_size={layout.tp}",
        f"policy.megatron_cfg.context_parallel_size={layout.cp}",
        f"policy.megatron_cfg.pipeline_model_parallel_size={layout.pp}",
        f"policy.megatron_cfg.sequence_parallel={_hydra(layout.sp)}",
        f"policy.sequence_packing.enabled={_hydra(layout.packing)}",
    ]
    cfg = load_recipe(RECIPE, overrides)
    return OmegaConf.to_container(cfg.policy, resolve=True)


def loss_config(holder: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``loss_fn`` section with ``holder`` overriding its ``holder`` block."""
    from omegaconf import OmegaConf

    from holder_nemo.config.loading import load_recipe

    cfg = OmegaConf.to_container(load_recipe(RECIPE).loss_fn, resolve=True)
    cfg["holder"] = {**cfg["holder"], **holder}
    return cfg


def _hydra(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# ---------------------------------------------------------------------------------------------------------------
# Parallel state, model, DDP, optimizer
# ---------------------------------------------------------------------------------------------------------------


def initialize_model_parallel(policy: dict[str, Any], seed: int = 1234) -> None:
    """megatron-core's process groups and RNG as Bridge's ``initialize_megatron`` sets them (gloo groups on)."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    mcfg = policy["megatron_cfg"]
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=mcfg["tensor_model_parallel_size"],
        pipeline_model_parallel_size=mcfg["pipeline_model_parallel_size"],
        context_parallel_size=mcfg["context_parallel_size"],
        create_gloo_process_groups=True,
    )
    # Bridge's _set_random_seed: a different seed per pipeline stage, then megatron-core's tracker
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    torch.manual_seed(stage_seed)
    model_parallel_cuda_manual_seed(stage_seed)


def transformer_config(policy: dict[str, Any]) -> Any:
    """The ``TransformerConfig`` NeMo RL's setup would hand the model provider, for the tiny model."""
    from megatron.core.transformer import TransformerConfig

    mcfg = policy["megatron_cfg"]
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    kwargs: dict[str, Any] = dict(
        num_layers=MODEL["num_layers"],
        hidden_size=MODEL["hidden_size"],
        ffn_hidden_size=MODEL["ffn_hidden_size"],
        num_attention_heads=MODEL["num_attention_heads"],
        num_query_groups=MODEL["num_query_groups"],
        normalization="RMSNorm",
        layernorm_epsilon=1e-6,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=0.02,
        use_cpu_initialization=True,  # no GPU to initialise on
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        # _apply_parallelism_config
        tensor_model_parallel_size=mcfg["tensor_model_parallel_size"],
        pipeline_model_parallel_size=mcfg["pipeline_model_parallel_size"],
        context_parallel_size=mcfg["context_parallel_size"],
        sequence_parallel=mcfg["sequence_parallel"],
        num_layers_in_first_pipeline_stage=mcfg["num_layers_in_first_pipeline_stage"],
        num_layers_in_last_pipeline_stage=mcfg["num_layers_in_last_pipeline_stage"],
        # _apply_precision_config
        bf16=policy["precision"] == "bfloat16",
        fp16=policy["precision"] == "float16",
        params_dtype=dtype[policy["precision"]],
        pipeline_dtype=dtype[mcfg["pipeline_dtype"]],
        # _apply_performance_config
        apply_rope_fusion=mcfg["apply_rope_fusion"],
        bias_activation_fusion=mcfg["bias_activation_fusion"],
        gradient_accumulation_fusion=mcfg["gradient_accumulation_fusion"],
        # _validate_training_config
        calculate_per_token_loss=True,
        perform_initialization=True,
    )
    if mcfg["activation_checkpointing"]:
        granularity = mcfg.get("recompute_granularity", "full")
        kwargs["recompute_granularity"] = granularity
        if granularity == "full":
            kwargs["recompute_method"] = "uniform"
            kwargs["recompute_num_layers"] = 1
    return TransformerConfig(**kwargs)


def layer_spec(config: Any, packed: bool) -> Any:
    """megatron-core's local GPT layer spec with the SP-capable torch norm and, for packed layouts, the packed CP
    attention (megatron_cpu.py); one block spec per pipeline stage."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import (
        TransformerBlock,
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )
    from megatron_cpu import PackedCausalAttention, SequenceParallelTorchNorm

    layer = get_gpt_layer_local_spec(normalization="RMSNorm")
    sub = layer.submodules
    sub.input_layernorm = SequenceParallelTorchNorm
    sub.pre_mlp_layernorm = SequenceParallelTorchNorm
    if packed:
        sub.self_attention.submodules.core_attention = PackedCausalAttention
    layers = [layer] * get_num_layers_to_build(config)
    return ModuleSpec(
        module=TransformerBlock,
        submodules=TransformerBlockSubmodules(layer_specs=layers, layer_norm=SequenceParallelTorchNorm),
    )


def build_gpt(config: Any, packed: bool) -> Any:
    """This pipeline stage's ``GPTModel`` (what Bridge's ``GPTModelProvider.provide`` builds)."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    return GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(config, packed),
        vocab_size=MODEL["vocab_size"],
        max_sequence_length=MODEL["max_sequence_length"],
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True,  # _apply_performance_config
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=MODEL["rotary_base"],
    )


def global_names(gpt: Any) -> dict[str, torch.nn.Parameter]:
    """Parameters by their single-stage name (pipeline stages renumber their layers from 0)."""
    named = {}
    for name, param in gpt.named_parameters():
        if name.startswith("decoder.layers."):
            parts = name.split(".")
            parts[2] = str(gpt.decoder.layers[int(parts[2])].layer_number - 1)
            name = ".".join(parts)
        named[name] = param
    return named


def partition_dims(gpt: Any) -> dict[str, int | None]:
    """Each parameter's TP partition dimension by single-rank name (None: replicated over TP)."""
    return {
        name: (param.partition_dim if getattr(param, "tensor_model_parallel", False) else None)
        for name, param in global_names(gpt).items()
    }


def tp_shard(name: str, full: torch.Tensor, partition_dim: int | None, gated_linear_unit: bool) -> torch.Tensor:
    """This TP rank's piece of the single-rank tensor ``full`` (megatron-core's partition attributes)."""
    from megatron.core import parallel_state

    if partition_dim is None:
        return full
    tp, rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    if name.endswith("mlp.linear_fc1.weight") and gated_linear_unit:  # [gate; up], each split over TP
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp, dim=0)[rank], up.chunk(tp, dim=0)[rank]])
    return full.chunk(tp, dim=partition_dim)[rank]


@dataclasses.dataclass
class TrainingState:
    model: Any  # the DDP-wrapped GPTModel (NeMo RL keeps model[0])
    gpt: Any
    config: Any
    optimizer: Any
    scheduler: Any
    policy: dict[str, Any]


def build_training_state(policy: dict[str, Any], full_weights: dict[str, torch.Tensor] | None) -> TrainingState:
    """Model + DDP + optimizer + scheduler as ``setup_model_and_optimizer`` / ``finalize_megatron_setup`` build them,
    with the parameters set to this rank's shards of ``full_weights`` (single-rank names) when given."""
    from megatron.core.distributed import DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer, get_standard_config_overrides
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.process_groups_config import ProcessGroupCollection
    from megatron.core.transformer.module import Float16Module
    from megatron.training.models.dist_utils import _ddp_wrap

    mcfg = policy["megatron_cfg"]
    config = transformer_config(policy)
    gpt = build_gpt(config, policy["sequence_packing"]["enabled"])
    if full_weights is not None:
        with torch.no_grad():
            dims = partition_dims(gpt)
            for name, param in global_names(gpt).items():
                param.copy_(tp_shard(name, full_weights[name], dims[name], config.gated_linear_unit))
    pg_collection = ProcessGroupCollection.use_mpu_process_groups()
    model = [gpt]
    for param in gpt.parameters():  # Bridge's get_model
        from megatron.core import tensor_parallel

        tensor_parallel.set_defaults_if_not_set_tensor_model_parallel_attributes(param)
    if config.fp16 or config.bf16:
        model = [Float16Module(config, m) for m in model]

    ddp_keys = mcfg["distributed_data_parallel_config"]
    overlap_param_gather = ddp_keys["overlap_param_gather"]
    ddp_config = DistributedDataParallelConfig(  # NeMo RL's _create_megatron_config
        check_for_nan_in_grad=True,
        grad_reduce_in_fp32=ddp_keys["grad_reduce_in_fp32"],
        overlap_grad_reduce=ddp_keys["overlap_grad_reduce"],
        overlap_param_gather=overlap_param_gather,
        average_in_collective=False,
        use_distributed_optimizer=mcfg["optimizer"]["use_distributed_optimizer"],
        data_parallel_sharding_strategy=ddp_keys["data_parallel_sharding_strategy"],
        reuse_grad_buf_for_mxfp8_param_ag=False,
        fp8_param_gather=False,
    )
    model = _ddp_wrap(  # Bridge's get_model -> megatron-core; rng.data_parallel_random_init and
        model,  # optimizer.overlap_param_gather_with_optimizer_step keep their defaults (False)
        False,
        ddp_config,
        False,
        use_megatron_fsdp=False,
        use_torch_fsdp2=False,
        pg_collection=pg_collection,
    )

    optimizer_keys = {**mcfg["optimizer"], "overlap_param_gather": overlap_param_gather}
    optimizer_keys["reuse_grad_buf_for_mxfp8_param_ag"] = False
    optimizer_keys["params_dtype"] = getattr(torch, optimizer_keys["params_dtype"])
    optimizer_config = OptimizerConfig(**optimizer_keys)
    overrides = get_standard_config_overrides(config=optimizer_config)  # Bridge's OptimizerConfigOverrideProvider
    optimizer = get_megatron_optimizer(
        config=optimizer_config,
        model_chunks=model,
        config_overrides=overrides or None,
        use_gloo_process_groups=True,
    )
    sched = mcfg["scheduler"]  # Bridge's _calculate_scheduler_steps (iteration-based) + _get_scheduler
    gbs = policy["train_global_batch_size"]
    train_iters = mcfg.get("train_iters", 1_000_000)
    decay_iters = sched.get("lr_decay_iters") or train_iters
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=sched["lr_warmup_init"],
        max_lr=optimizer_config.lr,
        min_lr=optimizer_config.min_lr,
        lr_warmup_steps=sched["lr_warmup_iters"] * gbs,
        lr_decay_steps=decay_iters * gbs,
        lr_decay_style=sched["lr_decay_style"],
        start_wd=sched["start_weight_decay"],
        end_wd=sched["end_weight_decay"],
        wd_incr_steps=train_iters * gbs,
        wd_incr_style=sched["weight_decay_incr_style"],
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=False,
    )
    # Bridge's _update_model_config_funcs (align_grad_reduce / align_param_gather: their defaults, True)
    if ddp_config.overlap_grad_reduce:
        config.no_sync_func = model[0].no_sync
        config.grad_sync_func = model[0].start_grad_sync
    if ddp_config.overlap_param_gather and ddp_config.align_param_gather:
        config.param_sync_func = model[0].start_param_sync
    config.finalize_model_grads_func = partial(finalize_model_grads, pg_collection=pg_collection)
    config.grad_scale_func = optimizer.scale_loss
    # MegatronPolicyWorker.__init__: with the distributed optimizer and overlap_param_gather the forward pre-hook is
    # off until the first successful update (_disable_forward_pre_hook_until_next_train_step)
    if mcfg["optimizer"]["use_distributed_optimizer"] and overlap_param_gather:
        model[0].disable_forward_pre_hook(param_sync=False)
        config.param_sync_func = None
    return TrainingState(model[0], gpt, config, optimizer, scheduler, policy)


# ---------------------------------------------------------------------------------------------------------------
# The batch and the step
# ---------------------------------------------------------------------------------------------------------------


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    """A GRPO training batch without the log-prob fields: input_ids, input_lengths, token_mask, sample_mask,
    advantages (one value per row)."""
    g = torch.Generator().manual_seed(seed)
    rows, width = BATCH_ROWS, MODEL["max_sequence_length"]
    lengths = torch.tensor(LENGTHS)
    input_ids = torch.zeros(rows, width, dtype=torch.long)
    token_mask = torch.zeros(rows, width)
    for i, n in enumerate(LENGTHS):
        input_ids[i, :n] = torch.randint(1, MODEL["vocab_size"], (n,), generator=g)
        token_mask[i, PROMPT:n] = 1
    sample_mask = torch.ones(rows)
    sample_mask[MASKED_ROW] = 0
    advantages = torch.randn(rows, 1, generator=g).expand(rows, width).clone()
    return {
        "input_ids": input_ids,
        "input_lengths": lengths,
        "token_mask": token_mask,
        "sample_mask": sample_mask,
        "advantages": advantages,
    }


def with_logprobs(batch: dict[str, torch.Tensor], curr: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The batch with prev / generation / reference log-probs placed around the model's own ``curr`` [B, S]: a
    per-row shift (-0.45 .. 0.45) plus per-token noise (0.3), so that some sequences' Hölder means and some tokens'
    ratios fall outside the clip range 1 +- 0.2, and most do not."""
    g = torch.Generator().manual_seed(seed)
    rows = curr.shape[0]
    shift = torch.linspace(-0.45, 0.45, rows)[torch.randperm(rows, generator=g)]
    prev = curr + shift[:, None] + 0.3 * torch.randn(curr.shape, generator=g)
    return {
        **batch,
        "prev_logprobs": prev,
        "generation_logprobs": prev + 0.05 * torch.randn(curr.shape, generator=g),
        "reference_policy_logprobs": curr + 0.2 * torch.randn(curr.shape, generator=g),
    }


def shard_for_train(data: dict[str, torch.Tensor], policy: dict[str, Any]) -> Any:
    """This DP rank's shard, as ``Policy._shard_for_train`` cuts it (packing: its sequence-packing arguments)."""
    from megatron.core import parallel_state
    from nemo_rl.distributed.batched_data_dict import BatchedDataDict

    batch = BatchedDataDict(dict(data))
    dp_size = parallel_state.get_data_parallel_world_size()
    gbs = policy["train_global_batch_size"]
    if policy["sequence_packing"]["enabled"]:
        args = {
            "algorithm": policy["sequence_packing"]["algorithm"],
            "input_key": "input_ids",
            "input_lengths_key": "input_lengths",
            "sequence_length_pad_multiple": policy["make_sequence_length_divisible_by"],
            "max_tokens_per_microbatch": policy["sequence_packing"]["train_mb_tokens"],
        }
        shards, _ = batch.shard_by_batch_size(dp_size, batch_size=gbs, sequence_packing_args=args)
    else:
        shards = batch.shard_by_batch_size(dp_size, batch_size=gbs)
    return shards[parallel_state.get_data_parallel_rank()]


def worker_train(
    state: TrainingState,
    data: Any,
    loss_fn: Any,
    *,
    cp_normalize: bool = True,
    before_optimizer: Callable[[TrainingState], None] | None = None,
) -> dict[str, Any]:
    """``MegatronPolicyWorkerImpl.train(data, loss_fn)`` for a dense model in training mode, call for call.

    ``cp_normalize`` is ``LossPostProcessor``'s argument (the worker leaves it True); ``before_optimizer`` observes
    the reduced gradients between ``megatron_forward_backward`` and ``optimizer.step()``. Returns the worker's
    ``global_loss`` (float), ``grad_norm``, ``all_mb_metrics`` and ``update_successful``.
    """
    from megatron.core import parallel_state
    from megatron.core.rerun_state_machine import get_rerun_state_machine
    from megatron.core.utils import StragglerDetector
    from nemo_rl.models.megatron.data import get_microbatch_iterator, process_global_batch
    from nemo_rl.models.megatron.pipeline_parallel import broadcast_loss_metrics_from_last_stage
    from nemo_rl.models.megatron.train import (
        LossPostProcessor,
        aggregate_training_statistics,
        megatron_forward_backward,
    )

    cfg, model, optimizer = state.policy, state.model, state.optimizer
    gbs, mbs = cfg["train_global_batch_size"], cfg["train_micro_batch_size"]
    dp_group = parallel_state.get_data_parallel_group()
    local_gbs = gbs // parallel_state.get_data_parallel_world_size()
    total_dataset_size = torch.tensor(data.size, device="cuda")
    torch.distributed.all_reduce(total_dataset_size, op=torch.distributed.ReduceOp.SUM, group=dp_group)
    num_global_batches = int(total_dataset_size.item()) // gbs
    model.train()
    straggler_timer = StragglerDetector()  # Bridge's GlobalState.straggler_timer default
    all_mb_metrics, losses = [], []
    grad_norm, update_successful = None, None
    for gb_idx in range(num_global_batches):
        gb_result = process_global_batch(data, loss_fn=loss_fn, dp_group=dp_group, batch_idx=gb_idx,
                                         batch_size=local_gbs)  # fmt: skip
        batch = gb_result["batch"]
        global_valid_seqs, global_valid_toks = gb_result["global_valid_seqs"], gb_result["global_valid_toks"]
        data_iterator, num_microbatches, micro_batch_size, _, padded_seq_length = get_microbatch_iterator(
            batch, cfg, mbs, straggler_timer=straggler_timer, delegate_pack_to_model=False
        )
        loss_post_processor = LossPostProcessor(
            loss_fn=loss_fn, cfg=cfg, num_microbatches=num_microbatches, sampling_params=None,
            draft_model=None, cp_normalize=cp_normalize,
        )  # fmt: skip
        rerun_state_machine = get_rerun_state_machine()
        while rerun_state_machine.should_run_forward_backward(data_iterator):
            model.zero_grad_buffer()
            optimizer.zero_grad()
            losses_reduced = megatron_forward_backward(
                model=model,
                data_iterator=data_iterator,
                num_microbatches=num_microbatches,
                seq_length=padded_seq_length,
                mbs=micro_batch_size,
                post_processing_fn=loss_post_processor,
                forward_only=False,
                defer_fp32_logits=cfg["megatron_cfg"]["defer_fp32_logits"],
                global_valid_seqs=global_valid_seqs,
                global_valid_toks=global_valid_toks,
                sampling_params=None,
                straggler_timer=straggler_timer,
                draft_model=None,
                enable_hidden_capture=False,
                use_linear_ce_fusion_loss=cfg["megatron_cfg"].get("use_linear_ce_fusion_loss", False),
                use_router_replay=False,
                router_replay_train=True,
            )
        if before_optimizer is not None:
            before_optimizer(state)
        update_successful, grad_norm, _ = optimizer.step()
        if update_successful and cfg["megatron_cfg"]["optimizer"]["use_distributed_optimizer"]:
            ddp_keys = cfg["megatron_cfg"]["distributed_data_parallel_config"]
            if ddp_keys["overlap_param_gather"] and not model.remove_forward_pre_hook_handles:
                model.enable_forward_pre_hook()  # the worker's first-step re-enable
                state.config.param_sync_func = model.start_param_sync
        if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            gb_loss_metrics, mb_losses = [], []
            for x in losses_reduced:
                loss_metrics = {}
                for k in x:
                    loss_metrics[k] = x[k] if ("_min" in k or "_max" in k) else x[k] / num_global_batches
                gb_loss_metrics.append(loss_metrics)
                mb_losses.append(loss_metrics["loss"])
        else:
            gb_loss_metrics = None
        gb_loss_metrics = broadcast_loss_metrics_from_last_stage(gb_loss_metrics)
        if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            mb_losses = [x["loss"] for x in gb_loss_metrics]
        all_mb_metrics.extend(gb_loss_metrics)
        losses.append(torch.tensor(mb_losses).sum().item())
    state.scheduler.step(increment=gbs)
    mb_metrics, global_loss = aggregate_training_statistics(all_mb_metrics=all_mb_metrics, losses=losses,
                                                            data_parallel_group=dp_group)  # fmt: skip
    return {
        "global_loss": float(global_loss.sum()),
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "all_mb_metrics": mb_metrics,
        "update_successful": bool(update_successful),
    }


def reduced_gradients(state: TrainingState) -> dict[str, torch.Tensor]:
    """Every local parameter's gradient after ``finalize_model_grads``, by single-rank name (a copy).

    With the distributed optimizer each DP x CP rank holds the reduced values only in its shard of each gradient
    bucket; the shards are all-gathered here (a read-only copy) so every element of every gradient is compared.
    """
    from megatron.core import parallel_state

    group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    size, rank = group.size(), group.rank()
    if state.model.ddp_config.use_distributed_optimizer and size > 1:
        saved = []
        for buffer in state.model.buffers + state.model.expert_parallel_buffers:
            for bucket in buffer.buckets:
                saved.append((bucket.grad_data, bucket.grad_data.clone()))
                shard = bucket.grad_data.numel() // size
                local = bucket.grad_data[rank * shard : (rank + 1) * shard].clone()
                torch.distributed.all_gather_into_tensor(bucket.grad_data, local, group=group)
        grads = {name: p.main_grad.detach().clone() for name, p in global_names(state.gpt).items()}
        for grad_data, original in saved:  # the optimizer reads only its own shard; restore the rest anyway
            grad_data.copy_(original)
        return grads
    return {name: p.main_grad.detach().clone() for name, p in global_names(state.gpt).items()}


def synced_parameters(state: TrainingState) -> dict[str, torch.Tensor]:
    """Every local parameter after the optimizer step and the parameter all-gather (with ``overlap_param_gather``
    the all-gather the next forward's pre-hook would start, forced synchronous here)."""
    if state.model.ddp_config.use_distributed_optimizer:
        state.model.start_param_sync(force_sync=True)
    return {name: p.detach().clone() for name, p in global_names(state.gpt).items()}


def logprobs_forward(state: TrainingState, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """The policy's token log-probs [B, S] (0 at position 0) through NeMo RL's ``LogprobsPostProcessor`` forward
    (the worker's ``get_logprobs`` path), on a single rank."""
    from nemo_rl.distributed.batched_data_dict import BatchedDataDict
    from nemo_rl.models.megatron.data import get_microbatch_iterator
    from nemo_rl.models.megatron.train import LogprobsPostProcessor, megatron_forward_backward

    cfg = state.policy
    batch = BatchedDataDict(dict(data))
    mbs = cfg["logprob_batch_size"]
    iterator, num_mb, micro_batch_size, _, padded = get_microbatch_iterator(batch, cfg, mbs, straggler_timer=None)
    state.model.eval()
    with torch.no_grad():
        out = megatron_forward_backward(
            model=state.model, data_iterator=iterator, num_microbatches=num_mb, seq_length=padded,
            mbs=micro_batch_size, post_processing_fn=LogprobsPostProcessor(cfg=cfg), forward_only=True,
        )  # fmt: skip
    return torch.cat([x["logprobs"] for x in out]).float()
