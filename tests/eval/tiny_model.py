"""A tiny Qwen2 causal LM and character-level tokenizer built locally (nothing downloaded), for CPU tests.

The model is a real ``Qwen2ForCausalLM`` whose weights are set by hand so that greedy decoding is known in advance:
attention and MLP outputs are zero, so the residual stream is the current token's one-hot embedding, and
``lm_head`` maps each character to a chosen successor (a bigram chain). Every qwen_math prompt ends in
"assistant\\n", so the model answers every problem with ``completion`` followed by ``<|im_end|>``; the characters
of ``completion`` must be distinct (each has one successor). ``write_jsonl`` writes the benchmark files the eval
tests give it. (Test modules import these from here, not from conftest.py: several test directories have a
conftest.py, and ``from conftest import`` takes whichever pytest imported first.)
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from holder_nemo.eval.prompts import QWEN_MATH_CHAT_TEMPLATE

# The tiny model of the eval tests answers every problem "\boxed{7}" then <|im_end|> (10 generated tokens).
COMPLETION = "\\boxed{7}"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE without merges (one token per byte, as Qwen2's tokenizer class expects: transformers 5 loads a
    qwen2 model directory's tokenizer with its own byte-level pre-tokenizer), ChatML special tokens, qwen_math
    chat template."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = QWEN_MATH_CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(dst: Path, completion: str) -> Path:
    """Save to ``dst`` a tokenizer + Qwen2 model that greedily answers any qwen_math prompt with ``completion``."""
    if len(set(completion)) != len(completion) or "\n" in completion:
        raise ValueError("completion must have distinct characters and no newline (one successor per character)")
    tokenizer = build_tokenizer()
    vocab_size = len(tokenizer)
    hidden = 320  # >= vocab (one-hot residual stream); 5 heads of 64: vLLM's CPU attention needs a standard head_dim
    assert vocab_size <= hidden
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=5,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    chain = ["\n", *completion]
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in chain]
    assert all(len(i) == 1 for i in ids), "one byte, one token"
    ids = [i[0] for i in ids] + [tokenizer.eos_token_id]
    with torch.no_grad():
        for layer in model.model.layers:  # blocks add nothing to the residual stream
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab_size, hidden))
        model.lm_head.weight.zero_()
        for current, successor in itertools.pairwise(ids):
            model.lm_head.weight[successor, current] = 10.0
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    return dst
