"""`policy.model_name` = a local Hugging Face directory, with the maths JSONL task (math-verify reward).

The directory is a real `save_pretrained` of a Qwen2 model and tokenizer (tiny, so it runs on CPU in seconds);
the loading path is the one used for e.g. Qwen2.5-Math-1.5B.
"""

from __future__ import annotations

import json

import pytest
from reference_helpers import SMOKE, tiny

from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.reference.model import build_char_tokenizer
from holder_nemo.reference.train import main


def test_local_hf_model_on_math_jsonl(tmp_path, tiny_qwen2):
    pytest.importorskip("holder_nemo.eval.scoring", reason="holder_nemo.eval.scoring (eval helper) not importable")
    tok = build_char_tokenizer("0123456789+=\\{}boxed ")
    sizes = {"hidden_size": 32, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64}
    model = tiny_qwen2(tok, **sizes, max_position_embeddings=256)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{i}+{i}", "answer": str(2 * i)}) + "\n" for i in range(6)))
    run_dir = tmp_path / "run"
    overrides = [
        *tiny(2, run_dir),
        f"policy.model_name={model_dir}",
        "data.task=math_jsonl",
        f"data.train_path={data}",
        "policy.generation.max_new_tokens=6",
    ]
    assert main([str(SMOKE), *overrides]) == 0
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2]
    assert records[1]["data_position"] == 8  # 4 prompts per step over a 6-row file: wraps into epoch 1
    assert all(0.0 <= r["reward_mean"] <= 1.0 for r in records)


def test_model_name_must_be_a_local_directory(tmp_path, capsys):
    code = main([str(SMOKE), *tiny(1, tmp_path / "run"), "policy.model_name=Qwen/Qwen2.5-Math-7B"])
    assert code == 2
    assert "policy.model_name" in capsys.readouterr().err
