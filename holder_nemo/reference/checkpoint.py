"""Atomic, complete checkpoints for the reference run: ``RUN_DIR/step_N/`` written via a temporary directory + rename.

A checkpoint holds everything an exact resume needs: model and optimizer state dicts, the torch / python / numpy RNG
states, the data position, the step, and the resolved recipe. ``step_N`` only ever appears complete (``os.rename``
of a fully written and fsynced directory is atomic on POSIX), so the latest ``step_N`` is always loadable; stray
``.tmp-step_N-*`` directories from a killed writer are ignored and cleaned up by the next save.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from holder_nemo.run_control import STEP_DIR

STATE_FILE, MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE = "state.pt", "model.pt", "optimizer.pt", "config.yaml"


def rng_state() -> dict[str, Any]:
    """Torch, python and numpy global RNG states in a ``torch.load(weights_only=True)``-safe form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        with file.open("rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``run_dir`` as (step, path), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    config_yaml: str,
    keep_last_k: int,
) -> Path:
    """Write ``run_dir/step_{step}`` atomically, then delete all but the newest ``keep_last_k`` checkpoints."""
    run_dir = Path(run_dir)  # created by holderpo train's make_run_dir before anything runs
    for stale in run_dir.glob(".tmp-step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{step}-", dir=run_dir))
    torch.save(model.state_dict(), tmp / MODEL_FILE)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(config_yaml)
    _fsync_tree(tmp)
    # Only ever a new step: the trainer saves each step once, past its newest checkpoint.
    final = run_dir / f"step_{step}"
    os.rename(tmp, final)
    for _, old in list_checkpoints(run_dir)[:-keep_last_k]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG states in place; returns the trainer state (step, data position, ...)."""
    path = Path(path)
    model.load_state_dict(torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True))
    optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    set_rng_state(state.pop("rng"))
    return state
