"""Every run command documented in docs/recipes.md passes `holderpo recipe check` with the same arguments."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from holder_nemo.recipe.cli import main

REPO = Path(__file__).resolve().parents[2]
PREFIX = "python -m holder_nemo.nemo_rl.run_grpo --config "


def _documented_commands() -> list[list[str]]:
    commands = []
    for line in (REPO / "docs" / "recipes.md").read_text().splitlines():
        if line.startswith(PREFIX) and "[overrides]" not in line:
            commands.append(shlex.split(line[len("python -m holder_nemo.nemo_rl.run_grpo ") :]))
    return commands


COMMANDS = _documented_commands()


def test_docs_document_the_baselines():
    joined = [" ".join(c) for c in COMMANDS]
    assert len(COMMANDS) >= 10
    assert any("clip_mode=token " in c and "p_max=1.0" in c for c in joined)  # GRPO
    assert any("ratio_clip_min=3e-4" in c and "p_max=0.0" in c for c in joined)  # GSPO
    assert any("clip_mode=token_log" in c and "ratio_clip_min=0.4" in c for c in joined)  # GMPO


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[2:]) or a[1])
def test_documented_command_passes_recipe_check(argv, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert argv[0] == "--config"
    code = main(["check", argv[1], *argv[2:], "--no-config"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning" not in captured.err


# `holderpo study` and `holderpo train RECIPE` lines in README.md and docs/*.md (fenced bash blocks): every study
# command validates every run's recipe with --dry-run (nothing runs); every train recipe passes `holderpo recipe check`
# with the same overrides. `holderpo convert-smollm2` is run for real by tests/reference/test_smollm2.py.
def _holderpo_commands(sub: str) -> list[list[str]]:
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        in_bash = False
        for line in doc.read_text().replace("\\\n", " ").splitlines():  # join continued lines
            if line.startswith("```"):
                in_bash = line.strip() == "```bash"
                continue
            words = shlex.split(line.split(" #")[0]) if in_bash and f"holderpo {sub}" in line else []
            for i, word in enumerate(words):
                if word.endswith("holderpo") and words[i + 1 : i + 2] == [sub]:
                    found.append(words[i + 2 :])
    return found


STUDY_COMMANDS = _holderpo_commands("study")
TRAIN_RECIPE_COMMANDS = [c for c in _holderpo_commands("train") if c and c[0].startswith("recipes/")]


def test_docs_document_the_study_and_the_smollm2_recipe():
    assert [] in STUDY_COMMANDS  # the default study
    assert any(c[0] == "recipes/smollm2_135m_arith_cpu.yaml" for c in TRAIN_RECIPE_COMMANDS)


@pytest.mark.parametrize("argv", STUDY_COMMANDS, ids=lambda a: " ".join(a) or "default")
def test_documented_study_command_validates(argv, capsys, monkeypatch, tmp_path):
    from holder_nemo.study.cli import main as study_main

    monkeypatch.chdir(REPO)
    out = ["--out-dir", str(tmp_path / "study")] if "--out-dir" not in argv else []
    assert study_main([*argv, *out, "--dry-run"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("argv", TRAIN_RECIPE_COMMANDS, ids=lambda a: " ".join(a))
def test_documented_train_recipe_passes_recipe_check(argv, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["check", *argv, "--no-config"])
    assert code == 0, capsys.readouterr().err
