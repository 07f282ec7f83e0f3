"""TP / CP / packing safety through NeMo RL v0.7.0's own parallel log-prob path (spawned gloo ranks).

``nemo_rl_parallel_ranks.py`` runs 4 ranks: vocab-parallel TP 2, CP 2 (NeMo RL's load-balanced 2 x CP layout) and
TP 2 x CP 2, each unpacked, packed (``SequencePackingLossWrapper``, one sequence per loss call) and packed-fused
(``SequencePackingFusionLossWrapper``), for sequence / token / token_log clipping with dual clip, KL and IS
correction. Loss, metrics and the gradient of every rank's logit shard must equal the single-rank run through the
same NeMo RL functions to float32 round-off, backward included (``AllGatherCPTensor`` all-reduces over CP).
Only CUDA-only calls are patched (``Tensor.cuda``, ``pin_memory``); see the script.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.nemo_rl, pytest.mark.distributed]


@pytest.mark.skipif(importlib.util.find_spec("nemo_rl") is None, reason="nemo_rl is not importable (NeMo RL v0.7.0)")
def test_holder_loss_is_exact_under_nemo_rl_tensor_context_parallel_and_packing():
    script = Path(__file__).with_name("nemo_rl_parallel_ranks.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "OK 36 cases" in result.stdout, result.stdout
