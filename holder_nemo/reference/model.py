"""Policy model and tokenizer: a tiny Qwen2 built from config with a local character tokenizer, or a local HF dir.

Nothing is downloaded: the built-in tokenizer is a word-level ``tokenizers`` model over single characters, wrapped in
``PreTrainedTokenizerFast`` so generation, padding and ``save_pretrained`` behave as for any HF tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerBase:
    """One token per character of ``alphabet`` plus <pad> (id 0), <eos> (id 1), <bos> (id 2)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, BOS, *dict.fromkeys(alphabet)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # decode "1","2" as "12", not "1 2"
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, bos_token=BOS)
    tok.padding_side = "left"  # prompts are left-padded for batched generation
    return tok


def build_tiny_qwen2(
    vocab_size: int,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    pad_token_id: int,
    eos_token_id: int,
    bos_token_id: int,
) -> torch.nn.Module:
    """A randomly initialised Qwen2ForCausalLM (float32); initialised from the global torch RNG."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
    )
    config._attn_implementation = "eager"  # deterministic and fast at this size
    return Qwen2ForCausalLM(config)


def load_hf_policy(model_dir: str | Path) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load a local Hugging Face causal LM directory (float32 on CPU; its existence is checked with the recipe, by
    ``schema.missing_paths``); never touches the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, tokenizer
