"""End to end: `holderpo eval` with the HF backend on a tiny local model and generated JSONL benchmarks.

The tiny model (tiny_model.py) answers every problem with "\\boxed{7}", so every number in the table is known:
right and wrong references, an equivalent form (\\frac{14}{2}), prompts so long that max_model_len leaves a 9-token
budget (the whole answer but no end-of-text: truncated, and graded like any other generation, as the authors'
evaluation does) and a 5-token budget (cut inside the box: no answer), and Pass@8 sampling at temperature 0.7.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import write_jsonl

from holder_nemo.cli import main as holderpo
from holder_nemo.eval.prompts import apply_qwen_math_template

MAX_MODEL_LEN = 256


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
    # Problems whose qwen_math prompt leaves only 9 (the answer, no <|im_end|>) or 5 tokens of budget.
    base = len(tokenizer(apply_qwen_math_template(""))["input_ids"])
    long_problems = {budget: "x" * (MAX_MODEL_LEN - budget - base) for budget in (9, 5)}
    for budget, problem in long_problems.items():
        assert len(tokenizer(apply_qwen_math_template(problem))["input_ids"]) == MAX_MODEL_LEN - budget
    write_jsonl(
        root / "amc.jsonl",
        [{"problem": "Seven?", "answer": 7.0}] + [{"problem": p, "answer": "7"} for p in long_problems.values()],
    )
    write_jsonl(
        root / "aime25.jsonl", [{"problem": "What is 9-2?", "answer": "7"}, {"problem": "What is 9?", "answer": "9"}]
    )
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("out")
    rc = holderpo(
        [
            "eval", str(tiny_model_dir), "--backend", "hf", "--benchmarks", "aime24,amc,aime25",
            "--pass-k-benchmarks", "aime25", "--data-dir", str(data_dir), "--output-dir", str(out),
            "--max-new-tokens", "32", "--dtype", "float32", "--set", f"max_model_len={MAX_MODEL_LEN}",
            "--label", "tiny",
        ]
    )  # fmt: skip
    assert rc == 0
    return out


def test_results_json_counts_and_scores(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    aime24, amc, aime25 = (results["benchmarks"][b] for b in ("aime24", "amc", "aime25"))
    assert (aime24["metric"], aime24["num_correct"], aime24["num_problems"]) == ("pass@1", 2, 3)
    assert aime24["score"] == pytest.approx(200 / 3)
    assert (amc["num_correct"], amc["num_truncated"], amc["num_no_box"]) == (2, 2, 1)
    assert amc["score"] == pytest.approx(200 / 3)
    assert (aime25["metric"], aime25["n"], aime25["num_samples"], aime25["num_solved"]) == ("pass@8", 8, 16, 1)
    assert aime25["temperature"] == 0.7 and aime25["score"] == 50.0
    assert results["average"] == pytest.approx((200 / 3 + 200 / 3 + 50.0) / 3)
    assert results["config"]["max_new_tokens"] == 32 and results["config"]["prompt_template"] == "qwen_math"
    assert results["model"]["source"] == "hf_dir"


def test_markdown_table_in_paper_layout(run_dir: Path) -> None:
    table = (run_dir / "results.md").read_text()
    assert "| Model | AIME24 | AMC | AIME25† | Avg. |" in table
    assert "| tiny | 66.7 | 66.7 | 50.0 | 61.1 |" in table
    assert "| (correct / total) | 2/3 | 2/3 | 1/2 | |" in table
    assert "† = Pass@8" in table and "2 of 22 generations hit the token limit (graded as they are" in table


def test_generations_jsonl(run_dir: Path) -> None:
    records = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 3 + 3 + 2 * 8
    by_key = {(r["benchmark"], r["index"], r["sample"]): r for r in records}
    first = by_key[("aime24", 0, 0)]
    assert first["prompt"] == apply_qwen_math_template("What is 3+4?")
    assert (first["response"], first["finish_reason"], first["num_tokens"]) == ("\\boxed{7}", "stop", 10)
    assert (first["extracted"], first["reward"]) == ("7", 1.0)
    assert by_key[("aime24", 1, 0)]["reward"] == 1.0  # \frac{14}{2} == 7
    assert by_key[("aime24", 2, 0)]["reward"] == 0.0
    assert by_key[("amc", 0, 0)]["answer"] == 7.0  # the AMC gold as the suite stores it
    whole = by_key[("amc", 1, 0)]  # truncated before <|im_end|>, the answer complete: graded, correct
    assert (whole["response"], whole["finish_reason"], whole["num_tokens"], whole["reward"]) == (
        "\\boxed{7}",
        "length",
        9,
        1.0,
    )
    cut = by_key[("amc", 2, 0)]
    assert (cut["response"], cut["finish_reason"], cut["extracted"], cut["reward"]) == ("\\boxe", "length", None, 0.0)
    assert {r["sample"] for r in records if r["benchmark"] == "aime25"} == set(range(8))
