"""Sizing maths: bytes per GPU (model states, activations) and FLOPs of a training job. Pure Python, no torch.

Every formula follows a published method (docs/recipes.md, "Sizing a run", cites each):

* model states: the ZeRO byte counts (Rajbhandari et al. 2020, §3 and §5): mixed-precision Adam keeps 2 (16-bit
  weights) + 2 (16-bit gradients) + 12 (fp32 master weights, momentum, variance) bytes per parameter; stage 1 shards
  the 12 over the data-parallel ranks (Megatron's distributed optimizer, over DP x CP), stage 3 everything (FSDP);
* parameters on the most loaded GPU: Megatron-LM's theoretical memory report (first pipeline stage, embedding and,
  untied with PP = 1, the output layer, GEMM weights split over TP, norms replicated);
* activations: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", §4), per
  tensor, with this architecture's widths (GQA's narrower K/V, SwiGLU's two FC1 outputs); sequence parallelism
  shards the norm and GEMM inputs over TP; full recomputation keeps each layer's input plus one layer's working set;
  the output layer and its fp32 logits as in Megatron-LM's report;
* FLOPs: 2 per GEMM weight per token plus causal attention, 2 x q_width x s per token and layer (Kaplan et al. 2020;
  Megatron-LM's ``num_floating_point_operations``); backward = 2 x forward, so training is 3 x forward ("6N").
"""

from __future__ import annotations

from dataclasses import dataclass

from holder_nemo.recipe_check.architectures import Architecture

GIB = 1024**3
GB = 1e9
MASTER_ADAM_BYTES = 12  # fp32 master weights + fp32 Adam momentum + fp32 Adam variance


@dataclass(frozen=True)
class ModelStates:
    """Bytes on one GPU for the weights, their gradients and the optimizer state."""

    weights: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer


def model_state_bytes(
    params: float,
    *,
    param_bytes: float = 2,
    grad_bytes: float = 2,
    optimizer_bytes: float = MASTER_ADAM_BYTES,
    shards: int = 1,
    stage: int = 0,
) -> ModelStates:
    """ZeRO's model-state bytes for ``params`` parameters on one GPU.

    Args:
        params: parameters this GPU holds before data-parallel sharding (e.g. after TP/PP).
        param_bytes, grad_bytes, optimizer_bytes: bytes per parameter (mixed-precision Adam: 2, 2, 12).
        shards: data-parallel ranks the states are sharded over.
        stage: 0 none, 1 optimizer state sharded, 2 also gradients, 3 also weights.
    """
    return ModelStates(
        weights=params * param_bytes / (shards if stage >= 3 else 1),
        grads=params * grad_bytes / (shards if stage >= 2 else 1),
        optimizer=params * optimizer_bytes / (shards if stage >= 1 else 1),
    )


def megatron_params_per_gpu(arch: Architecture, tp: int, pp: int) -> float:
    """Parameters on Megatron's most loaded GPU: the first pipeline stage (its layers, the input embedding, and the
    untied output layer too when PP = 1), GEMM weights, biases and embeddings split over TP, norms replicated."""
    small = arch.layer_small_params()
    norms = 2 * arch.hidden + (2 * arch.head_dim if arch.model_type == "qwen3" else 0)
    split = arch.layers / pp * (arch.layer_matmul_params() + small - norms) + arch.embedding_params()
    if pp == 1 and not arch.tied_embeddings:
        split += arch.embedding_params()
    replicated = arch.layers / pp * norms + (arch.hidden if pp == 1 else 0)
    return split / tp + replicated


def layer_activation_bytes(
    arch: Architecture, tp: int = 1, sequence_parallel: bool = False, *, act_bytes: float = 2
) -> float:
    """Bytes one transformer layer keeps for its backward pass, per token of the micro-batch on this GPU.

    Korthikanti et al. §4.1, tensor by tensor (``act_bytes`` per element), for fused attention (no ``heads x s^2``
    score terms) and no dropout, as the sized models train: split over TP (heads / FFN columns): Q and K for the
    scores, V, the attention output, FC1's output(s) and the activation's output; sequence-sharded only under SP: both
    norm inputs, the QKV and FC1 GEMM inputs. MHA, GELU 4h: ``32 h`` bytes, the paper's Eq. 1 less its score terms
    (``5 a s``) and its two dropout masks (``2 h``).
    """
    h, f, b = arch.hidden, arch.ffn, act_bytes
    fc1_outputs = 2 if arch.gated_mlp else 1
    split = b * (2 * arch.q_width + 2 * arch.kv_width + fc1_outputs * f + f)
    return split / tp + 4 * b * h / (tp if sequence_parallel else 1)


def activation_bytes(
    arch: Architecture,
    tokens: float,
    *,
    tp: int = 1,
    pp: int = 1,
    sequence_parallel: bool = False,
    recompute: str = "none",
    act_bytes: float = 2,
    microbatches: int = 1,
) -> float:
    """Activation bytes on the most loaded GPU (the first pipeline stage) for a micro-batch of ``tokens`` tokens
    (after CP splits the sequence): what the layers keep across the forward pass, one layer's full set while full
    recomputation rebuilds it, and the output layer.

    ``recompute``: "none" and "selective" (core attention, whose score terms fused attention never stores) keep
    every layer's tensors; "full" keeps each layer's input (``act_bytes x h`` per token, sharded by SP) and rebuilds
    one layer at a time. The first of PP stages holds ``layers / PP`` layers for ``min(PP, microbatches)``
    micro-batches in flight (1F1B), plus 8 bytes of token ids per token; with PP = 1 it also holds the output layer:
    ``2 x act_bytes x h`` (final norm and output GEMM inputs, sharded by SP) + ``4 x vocab / TP`` (fp32 logits).
    """
    in_flight = min(pp, microbatches) if pp > 1 else 1
    full_layer = layer_activation_bytes(arch, tp, sequence_parallel, act_bytes=act_bytes) * tokens
    if recompute == "full":
        kept = act_bytes * arch.hidden / (tp if sequence_parallel else 1) * tokens
        working = full_layer
    else:
        kept, working = full_layer, 0.0
    layers = arch.layers / pp * in_flight * kept + 8 * tokens * in_flight
    output = 0.0
    if pp == 1:
        output = (2 * act_bytes * arch.hidden / (tp if sequence_parallel else 1) + 4 * arch.vocab / tp) * tokens
    return layers + working + output


def forward_flops(arch: Architecture, seq_len: float, logit_tokens: float | None = None) -> float:
    """FLOPs of one forward pass over one sequence of ``seq_len`` tokens with causal attention.

    ``2 x matmul weights`` per token for the layers' GEMMs, ``2 x q_width x seq_len`` per token and layer for the
    scores and their product with V (half the square: causal), ``2 x hidden x vocab`` per token that gets logits
    (all by default; generation computes them only for the generated tokens).
    """
    logits = seq_len if logit_tokens is None else logit_tokens
    gemms = 2 * arch.layers * arch.layer_matmul_params() * seq_len
    attention = 2 * arch.layers * arch.q_width * seq_len**2
    return gemms + attention + 2 * arch.embedding_params() * logits


def kv_cache_bytes_per_token(arch: Architecture, tp: int = 1, dtype_bytes: float = 2) -> float:
    """KV-cache bytes per token on one GPU of a vLLM engine with TP ``tp`` (K and V of every layer; KV heads
    split over TP, replicated when TP exceeds them)."""
    kv_heads_per_gpu = -(-arch.kv_heads // tp)
    return 2 * arch.layers * kv_heads_per_gpu * arch.head_dim * dtype_bytes
