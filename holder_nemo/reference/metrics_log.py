"""Per-step metrics: ``RUN_DIR/metrics.jsonl`` (one JSON object per step, flushed every step) and TensorBoard.

On resume from step k the log is first cut back to steps <= k (atomically), so a run that died after logging a step
it had not checkpointed does not leave duplicate or diverging lines behind.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from holder_nemo.core import Reduce
from holder_nemo.files import atomic_write

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of ``run_dir/metrics.jsonl`` in order ([] if absent)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


class MetricsLog:
    def __init__(self, run_dir: str | Path, *, upto_step: int, tensorboard: bool) -> None:
        self.run_dir = Path(run_dir)  # created by holderpo train's make_run_dir before anything runs
        self.path = self.run_dir / METRICS_FILE
        kept = [r for r in read_metrics(self.run_dir) if r["step"] <= upto_step]
        with atomic_write(self.path) as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in kept))
        self._fh = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: say so once, the run goes on
                print(
                    "holderpo train: logger.tensorboard_enabled is true but the tensorboard package is not installed "
                    f"(pip install tensorboard): metrics go to {self.path} only",
                    file=sys.stderr,
                )
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=upto_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, record["step"])

    def read(self) -> list[dict[str, Any]]:
        self._fh.flush()
        return read_metrics(self.run_dir)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def combine_metrics(acc: dict[str, float], metrics: Mapping[str, float], reductions: Mapping[str, Reduce]) -> None:
    """Fold one micro-batch's (or update's) metrics into ``acc`` as each declares (NeMo RL's reductions: the
    metrics are normalised by the global counts, so shares add; extremes take min / max; undeclared keys add)."""
    for key, value in metrics.items():
        how = reductions.get(key, Reduce.SUM)
        acc[key] = how.combine(acc[key], float(value)) if key in acc else float(value)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Reward over the first and last 10% of steps (at least one step each), steps, peak RSS."""
    rewards = [r["reward_mean"] for r in records]
    n = max(1, len(rewards) // 10)
    first, last = float(np.mean(rewards[:n])), float(np.mean(rewards[-n:]))
    return {
        "steps": len(records),
        "reward_first_10pct": first,
        "reward_last_10pct": last,
        "reward_gain": last - first,
        "peak_rss_mib": max((r.get("perf/peak_rss_mib", 0.0) for r in records), default=0.0),
    }
