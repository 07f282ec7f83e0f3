"""What the NeMo RL entry point decides about a run directory before Ray starts: resume guard and completion.

NeMo RL's ``grpo.setup`` always resumes from the newest ``step_N`` of ``checkpointing.checkpoint_dir`` with the
*current* recipe (it stores ``config.yaml`` per checkpoint but never compares). The entry point therefore keeps the
resolved recipe of the run in ``checkpoint_dir/holderpo_recipe.json`` and, when a complete checkpoint exists,
refuses a recipe that differs in anything that changes the run (``holder_nemo.config.resume_guard``).

A driver can die at any moment (``kill -9``, a lost node). The next one resumes from the newest ``step_N``, which NeMo
RL names only once a save is complete; before that, ``repair_checkpoint_dir`` removes what NeMo RL's
``CheckpointManager`` leaves when killed in a save or in its retention (it never cleans that up itself) and finishes
that retention, and ``run_complete`` notices a final checkpoint whose driver died before writing ``COMPLETED``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
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
    "checkpointing.is_async",
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
_TMP_STEP_DIR = re.compile(r"^tmp_step_\d+$")
TRAINING_INFO = "training_info.json"  # CheckpointManager writes it first into tmp_step_N, before any weights


def latest_complete_step(checkpoint_dir: Path) -> int | None:
    """Highest N with a ``step_N`` directory (NeMo RL renames ``tmp_step_N`` only once a save is complete)."""
    if not checkpoint_dir.is_dir():
        return None
    steps = [int(m.group(1)) for p in checkpoint_dir.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return max(steps, default=None)


def tidy_checkpoint_dir(checkpoint_dir: Path) -> list[Path]:
    """Remove what a killed NeMo RL save or checkpoint retention left in ``checkpoint_dir``; returns what went.

    * ``tmp_step_N``: a save that never reached ``finalize_checkpoint``'s rename. NeMo RL would write the next save
      of step N into it (``mkdir(exist_ok=True)``), among the killed save's files, and never removes it when step N
      is not saved again (a stop-requested save at a step between two ``save_period`` saves).
    * ``step_N`` without ``training_info.json``, older than the newest complete checkpoint: a deletion by NeMo RL's
      retention (``remove_old_checkpoints``, ``shutil.rmtree``) cut short. NeMo RL finds checkpoints to delete by
      that file, so it would never delete the rest. (A complete ``step_N`` always has it: the rename comes last.)

    Only the run's single writer may call this (the batch shell's owner check; a driver about to resume): a live
    save of another driver would look the same.
    """
    if not checkpoint_dir.is_dir():
        return []
    complete = [
        int(m.group(1))
        for p in checkpoint_dir.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / TRAINING_INFO).is_file()
    ]
    newest = max(complete, default=None)
    removed = []
    for path in sorted(checkpoint_dir.iterdir()):
        if not path.is_dir():
            continue
        step_match = _STEP_DIR.match(path.name)
        interrupted_delete = (
            step_match is not None
            and not (path / TRAINING_INFO).is_file()
            and newest is not None
            and int(step_match.group(1)) < newest
        )
        if _TMP_STEP_DIR.match(path.name) or interrupted_delete:
            shutil.rmtree(path)
            removed.append(path)
    return removed


def repair_checkpoint_dir(checkpoint_dir: Path, checkpointing: Mapping[str, Any]) -> None:
    """``tidy_checkpoint_dir``, then NeMo RL's own retention (``keep_top_k``), as ``finalize_checkpoint`` runs it after
    every rename: a driver killed between a rename and the end of that pass left checkpoints an uninterrupted run
    would have deleted, which nothing deletes when no save follows (the final step)."""
    for path in tidy_checkpoint_dir(checkpoint_dir):
        print(f"holder_nemo: removed {path} (left by a save or a checkpoint deletion that was cut short)", flush=True)
    if checkpointing.get("enabled") and checkpointing.get("keep_top_k") is not None and checkpoint_dir.is_dir():
        from nemo_rl.utils.checkpoint import CheckpointManager

        CheckpointManager(checkpointing).remove_old_checkpoints()


def run_complete(checkpointing: Mapping[str, Any], max_num_steps: int) -> bool:
    """Whether the run's ``COMPLETED`` marker exists; written first when the newest ``step_N`` is the final step (its
    driver died between the final save and the marker), so that no whole attempt runs only to write it."""
    if not checkpointing.get("checkpoint_dir"):
        return False
    checkpoint_dir = Path(checkpointing["checkpoint_dir"])
    if (checkpoint_dir / COMPLETED_FILE).exists():
        return True
    newest = latest_complete_step(checkpoint_dir)
    if not checkpointing.get("enabled") or newest is None or newest < max_num_steps:
        return False
    print(
        f"holder_nemo: step_{newest} is the final step (grpo.max_num_steps {max_num_steps}): run complete", flush=True
    )
    write_completed_marker(checkpoint_dir)
    return True


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
