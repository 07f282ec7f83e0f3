"""Importing the verl adapter must not import verl; the first access to one of its names does (and registers)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
import holder_nemo.verl
assert "verl" not in sys.modules, "importing holder_nemo.verl imported verl"
print("lazy")
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
assert "holder" not in POLICY_LOSS_REGISTRY
holder_nemo.verl.HolderPolicyLossConfig  # what Hydra's _target_ resolves
assert POLICY_LOSS_REGISTRY["holder"] is holder_nemo.verl.compute_policy_loss_holder
assert POLICY_LOSS_REGISTRY["holder_token"] is holder_nemo.verl.compute_policy_loss_holder_token
print("registered")
"""


def test_verl_adapter_imports_lazily_and_registers_on_first_access() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert out.stdout.splitlines()[:1] == ["lazy"], out.stderr
    if "No module named 'verl'" in out.stderr:  # the first access needs verl itself
        pytest.skip("the registration half needs the verl extra (pip install -e '.[verl]')")
    assert out.returncode == 0 and out.stdout.split() == ["lazy", "registered"], out.stderr
