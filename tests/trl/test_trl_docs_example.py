"""The example in docs/trl.md runs as written, with only the model, data file and sizes swapped for tiny local ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from trl_helpers import NEEDS_TRL, TRL_MODULE

pytest.importorskip(TRL_MODULE, reason=NEEDS_TRL)

DOC = Path(__file__).resolve().parents[2] / "docs" / "trl.md"


def example_code() -> str:
    text = DOC.read_text()
    section = text[text.index("## Example") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/trl.md: no python block under '## Example'"
    return match.group(1)


def test_docs_example_is_short() -> None:
    lines = [line for line in example_code().splitlines() if line.strip()]
    assert len(lines) <= 25, len(lines)


def test_docs_example_runs(text_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "math_lvl3to5.jsonl"
    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    swaps = {
        '"Qwen/Qwen2.5-Math-1.5B"': repr(str(text_model_dir)),
        '"data/math_lvl3to5.jsonl"': repr(str(data)),
        'output_dir="holderpo-qwen2.5-math-1.5b"': f"output_dir={str(tmp_path / 'out')!r}",
        "num_generations=8, per_device_train_batch_size=16, steps_per_generation=4": (
            "num_generations=4, per_device_train_batch_size=4, steps_per_generation=2"
        ),
        "max_completion_length=3072": "max_completion_length=8",
        "max_steps=500, save_steps=50": (
            "max_steps=4, save_steps=2, logging_steps=1, use_cpu=True, bf16=False, report_to=[]"
        ),
    }
    code = example_code()
    for old, new in swaps.items():
        assert old in code, f"docs/trl.md example no longer contains {old!r}; update this test"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, str(DOC), "exec"), namespace)

    trainer = namespace["trainer"]
    assert trainer.state.global_step == 4
    p = [h["holder/p"] for h in trainer.state.log_history if "holder/p" in h]
    assert p == pytest.approx([1.0, 0.0, -1.0, -2.0])  # linear 2 -> -2 over the run's 4 steps
    assert (tmp_path / "out" / "checkpoint-4" / "trainer_state.json").is_file()
