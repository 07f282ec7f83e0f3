"""Shapes of the models the shipped recipes train, for sizing: hidden size, layers, heads, FFN, vocabulary.

Each entry of ``KNOWN`` holds the keys of the model's Hugging Face ``config.json`` that sizing reads, as in the file
at ``https://huggingface.co/<name>/blob/main/config.json`` (nothing is downloaded here). A recipe whose
``policy.model_name`` is a local directory with a ``config.json`` is sized from that file instead; the CPU reference
run's built-in tiny Qwen2 from its ``policy.tiny_model`` keys. Parameter counts follow the Hugging Face modules
(``tests/recipes/test_sizing_maths.py`` builds each entry with transformers and compares): Qwen2 has q/k/v biases,
Qwen3 per-head RMSNorm on q and k, Llama neither.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HF = "https://huggingface.co/{}/blob/main/config.json"

# model name -> the config.json keys sizing reads (values as in the file at _HF.format(name))
KNOWN: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-Math-7B": {
        "model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False,
    },
    "Qwen/Qwen2.5-Math-1.5B": {
        "model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": True,
    },
    "Qwen/Qwen2.5-1.5B-Instruct": {
        "model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": True,
    },
    "Qwen/Qwen2.5-32B": {
        "model_type": "qwen2", "hidden_size": 5120, "num_hidden_layers": 64, "num_attention_heads": 40,
        "num_key_value_heads": 8, "intermediate_size": 27648, "vocab_size": 152064, "tie_word_embeddings": False,
    },
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": {
        "model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False,
    },
    "Qwen/Qwen3-4B-Base": {
        "model_type": "qwen3", "hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728, "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "Qwen/Qwen3-8B-Base": {
        "model_type": "qwen3", "hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 12288, "vocab_size": 151936,
        "tie_word_embeddings": False,
    },
    "HuggingFaceTB/SmolLM2-135M-Instruct": {
        "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
    },
}  # fmt: skip

SUPPORTED_TYPES = ("qwen2", "qwen3", "llama")


@dataclass(frozen=True)
class Architecture:
    """A dense decoder-only transformer with a gated (SwiGLU) MLP and RMSNorm, as Qwen2/Qwen3/Llama."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied_embeddings: bool
    source: str
    gated_mlp: bool = True  # SwiGLU: gate and up projections (all supported types); False: one FC1, as GPT/BERT

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], source: str) -> Architecture:
        """From the keys of a Hugging Face ``config.json``; ValueError for a model type sizing does not know."""
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_TYPES:
            raise ValueError(f"model_type {model_type!r} (sizing knows {', '.join(SUPPORTED_TYPES)})")
        heads = int(config["num_attention_heads"])
        return cls(
            model_type=model_type,
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            ffn=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            source=source,
        )

    @property
    def q_width(self) -> int:
        """Width of the query projection (heads x head_dim; Qwen3 differs from hidden)."""
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_matmul_params(self) -> int:
        """Weights of one layer's GEMMs: q, k, v, o projections and the gated MLP's gate, up, down."""
        h = self.hidden
        return h * (self.q_width + 2 * self.kv_width) + self.q_width * h + (3 if self.gated_mlp else 2) * h * self.ffn

    def layer_small_params(self) -> int:
        """Per-layer parameters outside the GEMMs: the two RMSNorms, Qwen2's q/k/v biases, Qwen3's q/k RMSNorms."""
        small = 2 * self.hidden
        if self.model_type == "qwen2":
            small += self.q_width + 2 * self.kv_width
        if self.model_type == "qwen3":
            small += 2 * self.head_dim
        return small

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def parameters(self) -> int:
        """Total parameters: layers, final norm, input embedding and (untied) output layer."""
        per_layer = self.layer_matmul_params() + self.layer_small_params()
        return self.layers * per_layer + self.hidden + self.embedding_params() * (1 if self.tied_embeddings else 2)

    def describe(self) -> str:
        attention = f"heads {self.heads}/{self.kv_heads} kv" + (
            f" x {self.head_dim}" if self.q_width != self.hidden else ""
        )
        return (
            f"{self.model_type}: {self.layers} layers, hidden {self.hidden}, {attention}, ffn {self.ffn}, "
            f"vocab {self.vocab}, {'tied' if self.tied_embeddings else 'untied'}"
        )


def tiny_qwen2(tiny_model: Mapping[str, Any]) -> Architecture:
    """The reference run's built-in tiny Qwen2 (``holder_nemo.reference.model.build_tiny_qwen2``): tied embeddings,
    vocabulary = the digits tokenizer (3 special tokens + the task alphabet)."""
    from holder_nemo.reference.tasks import DigitsTask

    config = {
        "model_type": "qwen2",
        "hidden_size": tiny_model.get("hidden_size", 64),
        "num_hidden_layers": tiny_model.get("num_layers", 2),
        "num_attention_heads": tiny_model.get("num_heads", 4),
        "num_key_value_heads": tiny_model.get("num_kv_heads", 2),
        "intermediate_size": tiny_model.get("intermediate_size", 256),
        "vocab_size": 3 + len(DigitsTask.alphabet),
        "tie_word_embeddings": True,
    }
    return Architecture.from_hf_config(config, "policy.tiny_model (holder_nemo/reference/model.py)")


def resolve(model_name: Any, tiny_model: Any) -> tuple[Architecture | None, str]:
    """The architecture of ``policy.model_name`` and where it came from, or (None, why not).

    Order: a local directory's ``config.json``; the ``KNOWN`` table by name, then by the last path component (a
    local copy such as ``models/SmolLM2-135M-Instruct``); the built-in tiny model when the name is null (only a
    reference recipe that passed its schema gets here with a null name, and its schema always fills
    ``policy.tiny_model``; a NeMo RL recipe's ``policy.model_name`` is a required string).
    """
    if model_name is None:
        return tiny_qwen2(tiny_model), "built-in"
    name = str(model_name)
    config_file = Path(name) / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
            return Architecture.from_hf_config(config, str(config_file)), "local config.json"
        except (ValueError, KeyError, TypeError) as exc:
            return None, f"{config_file}: {exc}"
    for key, config in KNOWN.items():
        if name == key or name.rstrip("/").rsplit("/", 1)[-1] == key.rsplit("/", 1)[-1]:
            return Architecture.from_hf_config(config, _HF.format(key)), "table"
    return None, (
        f"{name!r} is neither a local directory with config.json nor in holder_nemo/recipe_check/architectures.py"
    )
