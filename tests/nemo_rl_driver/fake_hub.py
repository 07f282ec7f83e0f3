"""An offline Hugging Face cache that answers for the recipes' model names (faked: the Hub, i.e. the network).

NeMo RL's driver reads two things of the model before any GPU work: the tokenizer (``get_tokenizer``, then the
chat template, pad/eos ids for ``configure_generation_config``) and ``config.json`` (``Policy.__init__`` builds its
FLOP tracker from it). There is no network here, so ``populate_hub_cache`` writes, under ``HF_HUB_CACHE``, the
snapshot layout ``huggingface_hub`` resolves in offline mode: a byte-level ChatML tokenizer (the one the eval tests
use) and a small ``config.json`` of the model's architecture family. Nothing reads weights on the driver.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from tiny_model import build_tokenizer

_REVISION = "0" * 40


def _architecture(model_name: str) -> dict:
    family = "qwen3" if "qwen3" in model_name.lower() else "qwen2"
    return {
        "architectures": ["Qwen3ForCausalLM" if family == "qwen3" else "Qwen2ForCausalLM"],
        "model_type": family,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 32768,
        "vocab_size": 512,
        "torch_dtype": "bfloat16",
    }


def populate_hub_cache(cache_dir: Path, model_names: list[str]) -> Path:
    """Write an offline snapshot (tokenizer + config.json) for every model name; returns ``cache_dir``."""
    tokenizer = build_tokenizer()
    for name in model_names:
        repo = cache_dir / f"models--{name.replace('/', '--')}"
        snapshot = repo / "snapshots" / _REVISION
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(_REVISION)
        tokenizer.save_pretrained(snapshot)
        (snapshot / "config.json").write_text(json.dumps(_architecture(name), indent=1))
    return cache_dir
