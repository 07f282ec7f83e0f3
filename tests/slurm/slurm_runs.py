"""What the Slurm tests read back from a run directory and from the cluster (shared by the test modules)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from local_slurm import LocalSlurm, wait_until

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
CPU_DRIVER = Path(__file__).with_name("cpu_driver.py")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")

# Tiny but real: 8 prompts x 4 samples, 2 optimizer updates per step, one thread. Each attempt spends most of its
# time importing torch/transformers; the steps themselves take well under a second each.
TINY = [
    "grpo.num_prompts_per_step=8",
    "grpo.num_generations_per_prompt=4",
    "policy.train_global_batch_size=16",
    "policy.train_micro_batch_size=16",
    "logger.plot=false",
    "logger.tensorboard_enabled=false",
    "reference.num_threads=1",
]


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]  # the driver may be half-way through writing the last line
    return [json.loads(line) for line in complete if line.strip()]


def reproducible(records: list[dict]) -> list[dict]:
    """Per-step metrics without the timing / memory keys (``perf/``), which legitimately differ between runs."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def attempt_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "logs").iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1]))


def newest_step(checkpoint_dir: Path) -> int:
    steps = [int(m.group(1)) for p in checkpoint_dir.glob("step_*") if (m := re.fullmatch(r"step_(\d+)", p.name))]
    return max(steps, default=-1)


def resumed_step(driver_log: Path) -> int | None:
    """The step `holderpo train` resumed from, per its log; None if it has not (yet) resumed."""
    text = driver_log.read_text() if driver_log.exists() else ""
    found = re.search(r"resumed from \S*step_(\d+) \(step \d+\)", text)
    return int(found.group(1)) if found else None


def wait_requeued(cluster: LocalSlurm, job_id: str, restarts: int, timeout: float = 240) -> None:
    """Wait for requeue number ``restarts`` (the cluster's cred_expire=5 lets it start again soon after)."""
    cluster.wait_job(job_id, lambda i: int(i.get("Restarts", 0)) >= restarts, timeout, f"requeue #{restarts}")


def wait_final(cluster: LocalSlurm, job_id: str, timeout: float = 300) -> dict[str, str]:
    return cluster.wait_job(job_id, lambda i: i["JobState"] in FINAL, timeout, f"job {job_id} to finish")


def wait_for(path_predicate, timeout: float, what: str) -> None:
    wait_until(path_predicate, timeout, what, interval=0.3)


def uninterrupted_metrics(tmp: Path, steps: int, overrides: list[str]) -> list[dict]:
    """Per-step metrics of the same run done in one go, with `holderpo train` directly (no Slurm): the reference
    every interrupted-and-resumed run must reproduce exactly."""
    run_dir = tmp / "uninterrupted"
    holderpo = Path(sys.executable).with_name("holderpo")
    proc = subprocess.run(
        [str(holderpo), "train", str(REPO / "recipes" / "smoke_cpu.yaml"), f"grpo.max_num_steps={steps}",
         *overrides, f"checkpointing.checkpoint_dir={run_dir}", "logger.progress_bar=false"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = reproducible(read_metrics(run_dir))
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    return records
