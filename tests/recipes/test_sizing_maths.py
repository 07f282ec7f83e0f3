"""Sizing maths (holder_nemo/recipe_check/sizing.py) against hand-computed numbers and the published formulas.

* the ZeRO paper's 7.5B example (Rajbhandari et al. 2020, §5 / Figure 1): 120 GB of model states, 31.4 / 16.6 /
  1.9 GB per GPU over 64 data-parallel ranks with stages 1 / 2 / 3;
* Megatron-LM's theoretical memory report: 18 bytes per parameter, 6 + 12/d with the distributed optimizer, and
  its per-layer activation count ``sbh (18 + 4 ffn / h)`` (selective recompute, SP);
* Korthikanti et al. 2022, Eq. 1-2 and Table 2: ``sbh (34 + 5as/h)``, with TP ``sbh (10 + 24/t + 5as/(ht))``,
  with TP + SP ``sbh (34/t + 5as/(ht))``, full recompute ``2sbh/t`` per layer (less the score terms and the two
  dropout masks, which fused attention without dropout does not store);
* the tiny Qwen2 of the CPU reference run, every figure computed by hand below (and its parameter count against the
  real transformers model);
* every architecture of the table against the transformers module built from the same config (meta device);
* FLOPs: exactly 6N + 6 L q s per token, and equal to NeMo RL v0.7.0's own qwen3 formula (its source file, loaded
  from ``HOLDERPO_TEST_NEMO_RL_HOME``; skipped without it).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest

from holder_nemo.recipe_check import sizing as sz
from holder_nemo.recipe_check.architectures import KNOWN, Architecture, tiny_qwen2


def test_zero_paper_7_5b_model_states():
    params, gpus = 7.5e9, 64
    states = {stage: sz.model_state_bytes(params, shards=gpus, stage=stage).total for stage in (0, 1, 2, 3)}
    assert states[0] == 120e9  # (2 + 2 + 12) x 7.5e9: "120 GB"
    assert states[1] == 2 * params + 2 * params + 12 * params / gpus == 31.40625e9  # "31.4 GB"
    assert states[2] == 2 * params + 14 * params / gpus == 16.640625e9  # "16.6 GB"
    assert states[3] == 16 * params / gpus == 1.875e9  # "1.9 GB"
    assert [round(states[s] / 1e9, 1) for s in (1, 2, 3)] == [31.4, 16.6, 1.9]


def test_megatron_bytes_per_parameter():
    """Megatron-LM: 18 B/param (bf16 weights, fp32 main grads, fp32 master + Adam), 6 + 12/d distributed."""
    for d in (1, 2, 8, 64):
        plain = sz.model_state_bytes(1, param_bytes=2, grad_bytes=4, shards=d, stage=0)
        distributed = sz.model_state_bytes(1, param_bytes=2, grad_bytes=4, shards=d, stage=1)
        assert plain.total == 18 and distributed.total == pytest.approx(6 + 12 / d)


def _matmul_params(arch: Architecture) -> int:
    """Weights that multiply every token (2 FLOPs each per token forward): the layers' GEMMs and the output layer
    (the input embedding is a lookup; norms and biases are not GEMMs: Megatron's and NeMo RL's FLOPs formulas count
    the same terms)."""
    return arch.layers * arch.layer_matmul_params() + arch.embedding_params()


def _gpt(h: int, a: int, ffn: int | None = None, layers: int = 1, vocab: int = 1000) -> Architecture:
    """Korthikanti's model: MHA, GELU FFN (4h), no gating."""
    return Architecture("gpt", h, layers, a, a, h // a, ffn or 4 * h, vocab, True, "test", gated_mlp=False)


@pytest.mark.parametrize(("h", "a", "s", "t"), [(12288, 96, 2048, 8), (4096, 32, 4096, 4), (1024, 16, 512, 2)])
def test_korthikanti_per_layer_activations(h, a, s, t):
    """The paper counts unfused attention's score terms (``5 a s`` per token) and two dropout masks (``2 h``); the
    sized models train with fused attention and no dropout, so each equation is checked less those terms."""
    arch = _gpt(h, a)
    per_token = functools.partial(sz.layer_activation_bytes, arch)
    assert per_token(1, False) == pytest.approx(h * (34 + 5 * a * s / h) - 5 * a * s - 2 * h)  # Eq. 1
    assert per_token(t, False) == pytest.approx(
        h * (10 + 24 / t + 5 * a * s / (h * t)) - 5 * a * s / t - 2 * h
    )  # Eq. 2
    assert per_token(t, True) == pytest.approx(h * (34 / t + 5 * a * s / (h * t)) - (5 * a * s + 2 * h) / t)  # TP + SP
    # Megatron-LM compute_activation_memory (SP + selective): sbh (18 + 4 ffn / h) / t, its two masks included
    assert per_token(t, True) == pytest.approx(h * (18 + 4 * arch.ffn / h) / t - 2 * h / t)
    # full recompute keeps only each layer's input: 2sbh / t (plus 8 B of token ids, one layer being rebuilt, and
    # the output layer: final-norm and output-GEMM inputs, fp32 logits)
    full = sz.activation_bytes(arch, s, tp=t, sequence_parallel=True, recompute="full")
    output = (2 * 2 * h / t + 4 * arch.vocab / t) * s
    assert full == pytest.approx(arch.layers * 2 * h / t * s + 8 * s + per_token(t, True) * s + output)


TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}


def test_tiny_qwen2_by_hand():
    """recipes/smoke_cpu.yaml's model: hidden 64, 2 layers, 4 heads of 16, 2 KV heads, FFN 256, vocabulary 15."""
    arch = tiny_qwen2(TINY)
    assert (arch.vocab, arch.head_dim, arch.q_width, arch.kv_width) == (15, 16, 64, 32)
    # per layer: q 64x64 + 64, k 64x32 + 32, v 64x32 + 32, o 64x64, gate/up/down 3 x 64x256, 2 norms of 64
    gemms = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 256
    assert arch.layer_matmul_params() == gemms == 61_440
    assert arch.layer_small_params() == 64 + 32 + 32 + 2 * 64 == 256
    assert arch.parameters() == 2 * (61_440 + 256) + 64 + 15 * 64 == 124_416  # + final norm + tied embedding
    assert _matmul_params(arch) == 2 * 61_440 + 15 * 64

    # Megatron TP 2: GEMM weights, biases and the embedding split, norms replicated
    per_gpu = sz.megatron_params_per_gpu(arch, tp=2, pp=1)
    assert per_gpu == (2 * (61_440 + 128) + 960) / 2 + (2 * 128 + 64) == 62_368
    states = sz.model_state_bytes(per_gpu, shards=2, stage=1)  # bf16, distributed optimizer over DP 2
    assert (states.weights, states.grads, states.optimizer) == (124_736, 124_736, 374_208)

    # activations of an 8-token micro-batch, TP 2 + SP, bf16, per layer and token:
    # split by TP: 2 B x (Q 64 + K 32 + V 32 + attention out 64 + FC1 2 x 256 + FC2 in 256) / 2 = 960
    # sharded by SP: 2 B x (2 norm inputs + QKV input + FC1 input) x 64 / 2 = 256
    assert sz.layer_activation_bytes(arch, 2, True) == 960 + 256
    acts = sz.activation_bytes(arch, 8, tp=2, sequence_parallel=True)
    output = (2 * 2 * 64 / 2 + 4 * 15 / 2) * 8  # final-norm and output-GEMM inputs, fp32 logits
    assert output == 1264
    assert acts == 2 * 1216 * 8 + 8 * 8 + output == 19_520 + 1264  # every layer's set (+ token ids), output layer
    full = sz.activation_bytes(arch, 8, tp=2, sequence_parallel=True, recompute="full")
    assert full == 2 * (2 * 64 / 2) * 8 + 64 + 1216 * 8 + output  # layer inputs (+ token ids), one layer rebuilt

    # one forward over 8 tokens: 2 x GEMM weights x 8 + 2 x layers x q_width x 8^2 + 2 x 960 x 8
    assert sz.forward_flops(arch, 8) == 2 * 2 * 61_440 * 8 + 2 * 2 * 64 * 64 + 2 * 960 * 8 == 1_997_824
    assert sz.forward_flops(arch, 8, logit_tokens=3) == 1_997_824 - 2 * 960 * 5
    assert sz.kv_cache_bytes_per_token(arch) == 2 * 2 * 2 * 16 * 2 == 256  # K and V, 2 layers, 2 heads of 16, bf16
    assert sz.kv_cache_bytes_per_token(arch, tp=4) == 2 * 2 * 1 * 16 * 2  # 2 KV heads on 4 GPUs: one each


def test_tiny_qwen2_count_is_the_real_models():
    from holder_nemo.reference.model import build_tiny_qwen2

    model = build_tiny_qwen2(15, **TINY, max_position_embeddings=32, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    assert sum(p.numel() for p in model.parameters()) == tiny_qwen2(TINY).parameters()


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_table_parameter_counts_are_the_transformers_modules(name):
    """The formula (q/k/v biases for Qwen2, q/k norms for Qwen3, tied or not) against the real module classes."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**KNOWN[name]))
    arch = Architecture.from_hf_config(KNOWN[name], "test")
    assert sum(p.numel() for p in model.parameters()) == arch.parameters()
    gemms = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    assert gemms + (arch.embedding_params() if arch.tied_embeddings else 0) == _matmul_params(arch)


def test_training_flops_are_6n_plus_attention():
    arch = Architecture.from_hf_config(KNOWN["Qwen/Qwen2.5-Math-7B"], "test")
    for s in (1, 512, 4096):
        per_token = 3 * sz.forward_flops(arch, s) / s
        assert per_token == pytest.approx(6 * _matmul_params(arch) + 6 * arch.layers * arch.q_width * s, rel=1e-12)
    assert 3 * sz.forward_flops(arch, 1) / 6 / _matmul_params(arch) == pytest.approx(1, rel=1e-3)


def _nemo_rl_flops_formulas():
    home = os.environ.get("HOLDERPO_TEST_NEMO_RL_HOME")
    if not home:
        pytest.skip("no NeMo RL source tree: set HOLDERPO_TEST_NEMO_RL_HOME to a NeMo RL checkout at tag v0.7.0")
    path = Path(home) / "nemo_rl" / "utils" / "flops_formulas.py"
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    spec = importlib.util.spec_from_file_location("nemo_rl_flops_formulas", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["Qwen/Qwen3-4B-Base", "Qwen/Qwen3-8B-Base"])
def test_training_flops_equal_nemo_rls_qwen3_formula(name):
    """NeMo RL logs train_fp_utilization from this formula: an MFU read off a run plugs straight into --mfu."""
    formulas = _nemo_rl_flops_formulas()
    arch = Architecture.from_hf_config(KNOWN[name], "test")
    for rows, s in ((1, 4096), (1024, 4096), (3, 777)):
        config = formulas.FLOPSConfig(
            gbs=rows, enc_seq_len=s, hs=arch.hidden, layers=arch.layers, ffn_hs=arch.ffn, vocab_size=arch.vocab,
            query_groups=arch.kv_heads, attention_heads=arch.heads, head_dim=arch.head_dim,
            moe_ffn_hidden_size=arch.ffn, moe_router_topk=1,
        )  # fmt: skip
        assert formulas.qwen3(config) == pytest.approx(rows * 3 * sz.forward_flops(arch, s), rel=1e-12)
