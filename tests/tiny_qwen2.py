"""The tests' tiny random Qwen2: ``holder_nemo.reference.model.build_tiny_qwen2`` sized for a test, with the
vocabulary and special tokens of its tokenizer (also the ``tiny_qwen2`` fixture of tests/conftest.py)."""

from __future__ import annotations

from typing import Any


def tiny_qwen2(
    tokenizer: Any,
    *,
    hidden_size: int = 16,
    num_layers: int = 1,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 32,
    max_position_embeddings: int = 2048,
) -> Any:
    """A random float32 Qwen2ForCausalLM over ``tokenizer`` (initialised from the global torch RNG)."""
    from holder_nemo.reference.model import build_tiny_qwen2

    return build_tiny_qwen2(
        len(tokenizer),
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
