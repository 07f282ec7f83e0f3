"""What the NeMo RL entry point decides about a run directory before Ray starts: resume guard and completion.

NeMo RL's ``grpo.setup`` always resumes from the newest ``step_N`` of ``checkpointing.checkpoint_dir`` with the
*current* recipe (it stores ``config.yaml`` per checkpoint but never compares). The entry point therefore keeps the
resolved recipe of the run in ``checkpoint_dir/holderpo_recipe.json`` and, when a complete checkpoint exists,
refuses a recipe that differs in anything that changes the run (``holder_nemo.config.resume_guard``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from holder_nemo.config.resume_guard import (
    ConfigChange,
    check_resume_config,
    record_accepted_changes,
)

RECIPE_RECORD = "holderpo_recipe.json"
COMPLETED_FILE = "COMPLETED"
# Keys that do not change the trajectory of a run: logging, checkpoint cadence and retention, worker counts and
# vLLM's memory share. Everything else (schedule, steps, optimizer, batch, model, loss, layout, data) must match.
OPERATIONAL_KEYS = (
    "logger",
    "checkpointing.keep_top_k",
    "checkpointing.save_period",
    "checkpointing.checkpoint_must_save_by",
    "checkpointing.metric_name",
    "checkpointing.higher_is_better",
    "data.num_workers",
    "env.*.num_workers",
    "env.*._component_",  # names the code of an environment, as the installed holder_nemo does (not tracked either)
    "policy.generation.vllm_cfg.gpu_memory_utilization",
    "policy.generation.vllm_cfg.use_tqdm",
    "policy.generation.vllm_cfg.enable_vllm_metrics_logger",
    "policy.generation.vllm_cfg.vllm_metrics_logger_interval",
)
_STEP_DIR = re.compile(r"^step_(\d+)$")


def latest_complete_step(checkpoint_dir: Path) -> int | None:
    """Highest N with a ``step_N`` directory (NeMo RL renames ``tmp_step_N`` only once a save is complete)."""
    if not checkpoint_dir.is_dir():
        return None
    steps = [int(m.group(1)) for p in checkpoint_dir.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return max(steps, default=None)


def guard_resume(config: dict[str, Any], checkpoint_dir: Path, *, accept: bool, write: bool) -> list[ConfigChange]:
    """Compare ``config`` (the resolved recipe) with the run's record when a complete checkpoint exists.

    Raises ``ResumeConfigError`` on a run-changing difference unless ``accept``; with ``write``, stores ``config``
    as the run's record (atomically) and logs accepted changes. Returns the accepted changes.
    """
    record = checkpoint_dir / RECIPE_RECORD
    step = latest_complete_step(checkpoint_dir)
    changes: list[ConfigChange] = []
    if step is not None and record.is_file():
        stored = json.loads(record.read_text())
        changes = check_resume_config(stored, config, operational=OPERATIONAL_KEYS, accept=accept, where=str(record))
        for change in changes:
            print(f"holder_nemo: accepted config change {change}", flush=True)
    elif step is not None:
        print(
            f"holder_nemo: WARNING {checkpoint_dir} has checkpoints (step_{step}) but no {RECIPE_RECORD}: cannot check "
            "that this recipe is the one the run was started with; recording it now",
            flush=True,
        )
    if write:
        record_accepted_changes(checkpoint_dir, changes, f"step_{step}")
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{RECIPE_RECORD}.tmp")
        tmp.write_text(json.dumps(config, indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, record)
    return changes


def write_completed_marker(checkpoint_dir: Path) -> Path:
    """Atomically write ``checkpoint_dir/COMPLETED`` (lets a requeued job see the run is done)."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    marker = checkpoint_dir / COMPLETED_FILE
    tmp = marker.with_name(f".{COMPLETED_FILE}.tmp")
    tmp.write_text(json.dumps({"completed": True}) + "\n")
    os.replace(tmp, marker)
    return marker
