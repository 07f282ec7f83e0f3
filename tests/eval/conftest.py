"""Fixtures for the eval tests: a tiny hand-wired Qwen2 model (see tiny_model.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import COMPLETION, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"), COMPLETION)
