"""Shared pieces of the TRL tests (fixtures in conftest.py): tiny random Qwen2 models saved locally (nothing
downloaded), prompts and a toy reward.

The whole TRL ``GRPOTrainer`` runs for real on CPU (HF ``generate`` for rollouts, accelerate, checkpoints); only the
model is tiny. Each test module skips with ``NEEDS_TRL`` where the ``trl`` extra is not installed.
"""

from __future__ import annotations

from pathlib import Path

NEEDS_TRL = "needs the TRL extra: pip install -e '.[trl]' (trl==1.16.0)"
# A submodule, not the bare name: tests/ is on sys.path (its conftest), so without the package installed a bare
# `import trl` would find this test directory as a namespace package.
TRL_MODULE = "trl.trainer.grpo_trainer"
EVEN = "02468"


def build_tiny_model(dst: Path, alphabet: str) -> Path:
    """Save to ``dst`` a random Qwen2 (hidden 32, 2 layers) with a character tokenizer over ``alphabet``."""
    import torch
    from tiny_qwen2 import tiny_qwen2

    from holder_nemo.reference.model import build_char_tokenizer

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer(alphabet)
    model = tiny_qwen2(tokenizer, hidden_size=32, num_layers=2, intermediate_size=64, max_position_embeddings=1024)
    model.save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    return dst


def build_tiny_moe(dst: Path, alphabet: str) -> Path:
    """Save to ``dst`` a random Qwen2-MoE (hidden 32, 2 layers, 4 experts, top-2, a shared expert) with a character
    tokenizer over ``alphabet``; ``router_aux_loss_coef`` is the config's default (0.001)."""
    import torch
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    from holder_nemo.reference.model import build_char_tokenizer

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer(alphabet)
    config = Qwen2MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    config._attn_implementation = "eager"
    Qwen2MoeForCausalLM(config).save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    return dst


def prompts_dataset(n: int = 16):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"{i}+{i + 1}=" for i in range(n)]})


def even_digit_reward(completions: list[str], **_: object) -> list[float]:
    """Toy verifiable reward: the fraction of the completion's characters that are even digits."""
    return [sum(ch in EVEN for ch in text) / max(1, len(text)) for text in completions]


def base_args(output_dir: Path, **overrides: object) -> dict:
    """Settings shared by the TRL tests: CPU, fp32, no gradient checkpointing, a step every 8 completions."""
    args = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 8,
        "learning_rate": 3e-2,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    return {**args, **overrides}
