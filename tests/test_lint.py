"""The repository is ruff-clean (lint and format), so style drift fails CI rather than review."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (it is in the [test] extra)")
    return [found]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(args):
    result = subprocess.run([*_ruff(), *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# The directories the README's main command and the documented commands write at the repository root (.gitignore).
OUTPUT_DIRS = ["runs", "outputs", "results", "models", "data"]


def test_ruff_stays_clean_after_the_main_command_wrote_its_outputs(tmp_path):
    """ruff treats any top-level directory as a first-party package when sorting imports: a test helper module named
    like an output directory (``runs``) would turn the README's second command red after its first (I001)."""
    tree = tmp_path / "repo"
    for package in ("holder_nemo", "tests"):
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    for name in OUTPUT_DIRS:
        (tree / name).mkdir(exist_ok=True)
    result = subprocess.run([*_ruff(), "check", "--no-cache", "."], cwd=tree, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
