"""Importing the TRL adapter (or holder_nemo.core) must not import TRL: the framework loads on first use only."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import holder_nemo.core
heavy = {"trl", "transformers", "accelerate", "datasets", "verl", "vllm"}
assert not heavy & set(sys.modules), sorted(heavy & set(sys.modules))
import holder_nemo.trl
assert "trl" not in sys.modules, "importing holder_nemo.trl imported trl"
try:
    holder_nemo.trl.NotAName
except AttributeError as exc:
    assert "NotAName" in str(exc)
else:
    raise AssertionError("unknown attribute resolved")
print("ok")
"""


def test_core_and_trl_adapter_import_without_trl() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
