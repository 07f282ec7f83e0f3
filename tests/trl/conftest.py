"""Fixtures of the TRL tests: tiny random Qwen2 models saved locally (nothing downloaded)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from trl_helpers import build_tiny_model, build_tiny_moe


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits, '+' and '=' only: a third of the vocabulary is even digits, so the toy reward is learnable fast."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_digits"), "0123456789+=")


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Printable ASCII, for prompts in natural language (the docs example)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_text"), string.printable)


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Mixture-of-Experts model (Qwen2-MoE) over the digits alphabet: TRL adds its router load-balancing loss."""
    return build_tiny_moe(tmp_path_factory.mktemp("tiny_qwen2_moe"), "0123456789+=")
