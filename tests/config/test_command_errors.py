"""A user's first hour: every bad input to every ``holderpo`` command is exit 2 and one short line on stderr naming
the file (and line) or the key and the fix, never a traceback (holder_nemo/config/errors.py: the exit codes).

The commands run in-process (an uncaught exception, i.e. a traceback, fails the test), and once each in a real
process, where ``Traceback`` must not appear in what the user sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from holder_nemo.cli import main as holderpo

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "recipes" / "smoke_cpu.yaml"

# name -> (bytes, where the problem is: "" for the file, ":N" for line N, what the line must say)
BAD_RECIPES = {
    "syntax": (b"grpo:\n  max_num_steps: 3\n  x: [1\n", ":4", "YAML syntax error"),
    "duplicate": (b"grpo:\n  seed: 1\ngrpo:\n  max_num_steps: 3\n", ":3", "duplicate key 'grpo' (first at line 1)"),
    "latin1": (b"grpo: {seed: 1}\n# caf\xe9\n", ":2", "not UTF-8"),
    "empty": (b"", "", "the file is empty"),
}
COMMANDS = {  # how each command takes a recipe
    "train": lambda recipe: ["train", str(recipe)],
    "recipe check": lambda recipe: ["recipe", "check", str(recipe)],
    "schedule": lambda recipe: ["schedule", str(recipe)],
}


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", BAD_RECIPES)
def test_a_broken_recipe_file_is_one_line_exit_2(tmp_path, capsys, command, name):
    content, where, says = BAD_RECIPES[name]
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_bytes(content)
    assert holderpo(COMMANDS[command](recipe)) == 2
    line = one_line(capsys)
    assert f"{recipe}{where}: " in line and says in line, line


@pytest.mark.parametrize("command", COMMANDS)
def test_not_a_recipe_file_is_one_line_exit_2(tmp_path, capsys, command):
    (tmp_path / "a.yaml").write_text("a: 1\n")
    cases = {
        tmp_path: "is a directory, not a recipe",
        REPO / "README.md": "not a YAML recipe (a '.md' file)",
        tmp_path / "missing.yaml": "no such recipe file",
    }
    for path, says in cases.items():
        assert holderpo(COMMANDS[command](path)) == 2
        line = one_line(capsys)
        assert f"{path}: " in line and says in line, line


def test_train_given_a_nemo_rl_recipe_says_how_to_run_it(capsys):
    recipe = "recipes/holderpo_qwen2.5-math-7b.yaml"
    assert holderpo(["train", str(REPO / recipe)]) == 2
    line = one_line(capsys)
    assert "is a NeMo RL recipe" in line
    assert "python -m holder_nemo.nemo_rl.run_grpo --config" in line and "sbatch slurm/holderpo_7b.sh" in line


def test_train_refuses_an_uncreatable_checkpoint_dir_before_building_anything(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for run_dir in (blocker / "run", Path("/proc/holderpo_test/run")):
        assert holderpo(["train", str(SMOKE), f"checkpointing.checkpoint_dir={run_dir}"]) == 2
        line = one_line(capsys)
        assert line.startswith("holderpo train: checkpointing.checkpoint_dir: cannot create") and str(run_dir) in line


def test_schedule_to_a_missing_directory_is_one_line(tmp_path, capsys):
    out = tmp_path / "missing_dir" / "p.png"
    assert holderpo(["schedule", str(SMOKE), "-o", str(out)]) == 2
    line = one_line(capsys)
    assert (
        line == f"holderpo schedule: -o: directory {str(out.parent)!r} does not exist: create it or choose another path"
    )
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "missing.yaml"], "no such recipe file"),
        (["study", "missing.yaml", "--out-dir", "{tmp}/study"], "no such recipe file"),
        (["plot", "{tmp}"], "no metrics.jsonl records to plot"),
        (["schedule", str(SMOKE), "-o", "{tmp}/nodir/p.png"], "does not exist"),
        (["recipe", "check", str(SMOKE), "grpo.num_generations_per_prompt=1", "--no-config"], "FAILED"),
        (["recipe", "check", str(SMOKE), "grpo.typo=1"], "unknown key"),
        (["convert-smollm2", "{tmp}/out", "--gguf", "{tmp}/missing.gguf"], "no GGUF file"),
        (["eval", "{tmp}", "--set", "no_such_field=1"], "no_such_field: unknown key"),
        (["eval", "{tmp}", "--set", "prompt_template=r1"], "prompt_template"),
        (["eval", "{tmp}", "--config", "{tmp}/settings.yaml"], "duplicate key 'backend'"),
        (["eval-alfworld", "--data-root", "{tmp}", "--policy", "expert"], "no games found"),
        (["data", "prepare", "no_such_set", "{tmp}"], "invalid choice"),
        (["no-such-command"], "unknown command"),
    ],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else None,
)
def test_every_command_answers_bad_input_with_exit_2(tmp_path, capsys, monkeypatch, argv, says):
    """One exit code for bad input across holderpo (argparse's own usage errors are 2 as well)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.yaml").write_text("backend: hf\nbackend: vllm\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "eval-alfworld":
        pytest.importorskip(
            "alfworld.agents", reason="holderpo eval-alfworld needs the optional extra holder_nemo[alfworld]"
        )
    try:
        code = holderpo(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert says in err and "Traceback" not in err + out, err


def test_a_real_process_shows_no_traceback(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("grpo:\n  seed: 1\n seed: 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "holder_nemo.cli", "train", str(broken)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"{broken}:3: YAML syntax error" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
