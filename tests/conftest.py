"""Shared pytest configuration: offline Hugging Face, deterministic torch, float64 helpers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_qwen2():
    """``tiny_qwen2(tokenizer, **sizes)``: the tests' tiny random Qwen2 (tests/tiny_qwen2.py)."""
    from tiny_qwen2 import tiny_qwen2 as build

    return build


@pytest.fixture(scope="module")
def local_ray():
    """A Ray cluster of the test module's own (``address="local"``, never one another process started), on loopback;
    yields the ``ray`` module and shuts the cluster down after the module (one this process already joined is used
    and left running). Skips where Ray is not installed."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """GPU-only tests are skipped with a visible reason where CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
