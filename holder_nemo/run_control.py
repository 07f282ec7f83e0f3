"""Stop and resume control, shared by every run: ``holderpo train``, ``holderpo study``, the NeMo RL entry point
(``holder_nemo.nemo_rl.run_grpo``), ALFWorld's per-step loop and the Slurm entries (``slurm/lib/common.sh`` keeps
``HP_EXIT_STOPPED`` equal to ``EXIT_STOPPED``; tests/nemo_rl_plugin/test_plugin_stop.py checks it). This module owns the
contract's constants: the exit codes (``EXIT_COMPLETED`` 0, ``EXIT_FAILED`` 1, ``EXIT_STOPPED`` 75; 2 is
``config.errors.EXIT_BAD_INPUT``), the ``COMPLETED`` marker and the stop file's variable. Imports no torch (the
driver venv of a container without torch imports it: docs/containers.md).

**Stop.** When the file named by ``$HOLDERPO_STOP_FILE`` exists at a step boundary, or the process got
SIGUSR1/SIGTERM (and Ctrl-C for ``holderpo train``), finish the current step, write a checkpoint, exit 75. In
NeMo RL (no NeMo RL source change): after every step ``grpo_train`` asks ``timeout.check_save()`` of a
``TimeoutChecker`` built from ``checkpointing.checkpoint_must_save_by``; when that returns True it saves a checkpoint
(if ``checkpointing.enabled``) and returns after the step's logging. While ``grpo_train`` runs,
``patched_timeout_checker`` points the name ``TimeoutChecker`` in ``nemo_rl.algorithms.grpo`` at a subclass whose
``check_save`` is also True when a stop was requested, or when the next step would end within the margin of the
Slurm allocation's end (absolute clock, unlike ``checkpoint_must_save_by``, which NeMo RL v0.7.0 counts from the
start of ``grpo_train``, after Ray, model and vLLM setup: NeMo RL issue #3596).

**The allocation's end**: ``$SLURM_JOB_END_TIME`` (Unix seconds; exported to batch jobs by recent Slurm), else
``squeue -h -j $SLURM_JOB_ID -o %e`` (``YYYY-MM-DDTHH:MM:SS`` in the local time zone; ``N/A``/``Unknown``/``NONE``
when unlimited). For launch scripts that prefer the plain NeMo RL override::

    python -m holder_nemo.run_control --margin 900
    # prints e.g. 00:03:44:10, or nothing (exit 1) when no end time is known

**Resume guard.** A restarted job (a Slurm requeue, a user rerunning the command) resumes from the newest checkpoint
of its run directory; NeMo RL's ``grpo.setup`` does so with the *current* recipe (it stores ``config.yaml`` per
checkpoint but never compares). If the recipe or the overrides changed in between (the p schedule, the number of
steps, the optimizer, the batch, the model, the loss, the parallel layout, the data), the resumed run would quietly
become a different run than the one its checkpoints and logs describe. ``check_resume_config`` compares the resolved
recipe with the stored one key by key and refuses any difference outside a short list of operational keys
(logging, checkpoint retention and cadence, worker counts), printing each key with both values, unless the user
accepts the change explicitly (``--accept-config-change``); an accepted change is recorded in the run directory's
change log. The NeMo RL entry point keeps the recipe in ``checkpoint_dir/holderpo_recipe.json`` (``guard_resume``).
A run is what it computes, not where it is kept: the run directory's own location (``checkpointing.checkpoint_dir``:
the run was moved, or named ``relrun`` once and ``/abs/relrun`` or ``relrun/`` the next time) is not compared, and
every other path (data files, a local model, ...) is compared after resolving it, so one file spelt two ways is the
same value.

**A killed driver.** A driver can die at any moment (``kill -9``, a lost node). The next one resumes from the newest
``step_N``, which NeMo RL names only once a save is complete; before that, ``repair_checkpoint_dir`` removes what
NeMo RL's ``CheckpointManager`` leaves when killed in a save or in its retention (it never cleans that up itself) and
finishes that retention, and ``run_complete`` notices a final checkpoint whose driver died before writing
``COMPLETED``.

**Outcome** (``exit_code_after_training``): 75 after a stop with a checkpoint, 0 with ``COMPLETED`` when the loop
ended by itself, or when the stop came during its final step (``final_step``), which is saved all the same.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from holder_nemo.config.errors import ConfigError
from holder_nemo.files import atomic_write

EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 75
COMPLETED_FILE = "COMPLETED"  # in the run (checkpoint) directory once every step is trained and saved
STOP_FILE_ENV = "HOLDERPO_STOP_FILE"
SAVE_MARGIN_ENV = "HOLDERPO_SLURM_SAVE_MARGIN_S"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

ACCEPT_FLAG = "--accept-config-change"
CHANGE_LOG = "holderpo_config_changes.jsonl"
# Where the run lives: never part of what makes the run (a resume may find it elsewhere).
RUN_LOCATION_KEYS = ("checkpointing.checkpoint_dir",)
# Keys whose string values are paths (the last key component), compared after resolving. model_name and a
# tokenizer's name may be Hugging Face ids ("Qwen/Qwen2.5-Math-7B"); resolved the same way on both sides, two ids
# compare equal only when their text is (as before), and an id equals a local path only when that path is where a
# loader would look first (the directory of that name under the working directory).
_PATH_KEY = re.compile(r"(^|_)(dir|path|file|root|home|model_name)$|^name$")
_ABSENT = "<absent>"
RECIPE_RECORD = "holderpo_recipe.json"
# Keys that do not change the trajectory of a run: logging, checkpoint cadence and retention, worker counts and
# vLLM's memory share. Everything else (schedule, steps, optimizer, batch, model, loss, layout, data) must match.
NEMO_RL_OPERATIONAL_KEYS = (
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
STEP_DIR = re.compile(r"^step_(\d+)$")  # a complete checkpoint of either driver (NeMo RL and holderpo train)
_TMP_STEP_DIR = re.compile(r"^tmp_step_\d+$")
TRAINING_INFO = "training_info.json"  # CheckpointManager writes it first into tmp_step_N, before any weights


# ---------------------------------------------------------------------------------------------------- stop requests


class StopRequest:
    """Collects the reasons to stop at the next step boundary (signals, stop file, Slurm deadline).

    Args:
        stop_file: path whose existence requests a stop (``$HOLDERPO_STOP_FILE``), or None.
        deadline: Unix time by which the last checkpoint must be written (allocation end minus margin), or None.
    """

    def __init__(self, stop_file: str | os.PathLike | None = None, deadline: float | None = None) -> None:
        self.stop_file = Path(stop_file) if stop_file else None
        self.deadline = deadline
        self.signal_name: str | None = None
        self.fired: str | None = None  # why check_save returned True (set once)

    @classmethod
    def from_env(cls) -> StopRequest:
        return cls(stop_file=os.environ.get(STOP_FILE_ENV) or None)

    def install_signal_handlers(self, *, interrupt: bool = False) -> None:
        """Route SIGUSR1 and SIGTERM to ``request``; call again after libraries that install their own (Ray).

        ``interrupt``: Ctrl-C (SIGINT) too, for a run in a terminal (``holderpo train``): the first one stops like
        SIGTERM, a second one raises ``KeyboardInterrupt`` at once (no checkpoint).
        """
        for signum in (*STOP_SIGNALS, *((signal.SIGINT,) if interrupt else ())):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and self.signal_name is not None:
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)

    def request(self, reason: str) -> None:
        if self.signal_name is None:
            self.signal_name = reason
            again = " (Ctrl-C again: stop now, without a checkpoint)" if reason == "SIGINT" else ""
            print(
                f"holder_nemo: {reason} received; will checkpoint and exit 75 after the current step{again}", flush=True
            )

    def reason(self, mean_iteration_s: float = 0.0) -> str | None:
        """Why the run should stop now, or None. ``mean_iteration_s`` is the expected length of the next step."""
        if self.signal_name is not None:
            return self.signal_name
        if self.stop_file is not None and self.stop_file.exists():
            return f"stop file {self.stop_file}"
        if self.deadline is not None and time.time() + mean_iteration_s >= self.deadline:
            return "Slurm allocation ends before the next step would finish"
        return None


@contextlib.contextmanager
def patched_timeout_checker(trainer_module: ModuleType, stop: StopRequest) -> Iterator[type]:
    """Within the block, ``trainer_module.TimeoutChecker`` (NeMo RL's) is a subclass whose ``check_save`` also
    honours ``stop``; the original is restored afterwards."""
    original = trainer_module.TimeoutChecker

    class StopAwareTimeoutChecker(original):  # type: ignore[misc, valid-type]
        def check_save(self) -> bool:
            if super().check_save():
                stop.fired = stop.fired or "checkpointing.checkpoint_must_save_by"
                return True
            if self.last_saved:
                return False
            times = self.iteration_times  # seconds of each step so far (NeMo RL v0.7's TimeoutChecker)
            why = stop.reason(sum(times) / len(times) if times else 0.0)
            if why is None:
                return False
            self.last_saved = True
            stop.fired = why
            print(f"holder_nemo: stopping at this step boundary ({why}); saving a checkpoint", flush=True)
            return True

    trainer_module.TimeoutChecker = StopAwareTimeoutChecker
    try:
        yield StopAwareTimeoutChecker
    finally:
        trainer_module.TimeoutChecker = original


def slurm_deadline() -> float | None:
    """Allocation end minus ``$HOLDERPO_SLURM_SAVE_MARGIN_S`` (seconds) when that variable is set, else None."""
    raw = os.environ.get(SAVE_MARGIN_ENV, "").strip()
    if not raw:
        return None
    try:
        margin = float(raw)
    except ValueError:
        margin = -1.0
    if not margin >= 0:
        raise ConfigError(SAVE_MARGIN_ENV, f"must be a number of seconds >= 0, got {raw!r}")
    end = slurm_job_end_time()
    if end is None:
        print(f"holder_nemo: {SAVE_MARGIN_ENV} is set but no Slurm job end time was found", file=sys.stderr)
        return None
    return end - margin


# --------------------------------------------------------------------------------------- the Slurm allocation's end


_UNKNOWN = {"", "N/A", "UNKNOWN", "NONE", "INVALID", "UNLIMITED"}  # squeue's %e of a job without a time limit


def slurm_job_end_time() -> float | None:
    """Unix time at which the current Slurm job's allocation ends, or None (not in Slurm / no time limit):
    ``$SLURM_JOB_END_TIME``, else ``squeue -h -j $SLURM_JOB_ID -o %e`` (local ``YYYY-MM-DDTHH:MM:SS``)."""
    raw = os.environ.get("SLURM_JOB_END_TIME", "").strip()
    if raw:
        try:
            end = float(raw)
        except ValueError as exc:
            raise ValueError(f"SLURM_JOB_END_TIME must be Unix seconds, got {raw!r}") from exc
        return end if end > 0 else None
    job_id = os.environ.get("SLURM_JOB_ID", "").strip()
    if not job_id:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):  # no squeue here, or it failed: no end time known
        return None
    text = next((line.strip() for line in out.splitlines() if line.strip()), "")
    if text.upper() in _UNKNOWN:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError as exc:
        raise ValueError(f"unexpected squeue end time {text!r} (expected YYYY-MM-DDTHH:MM:SS)") from exc


# ----------------------------------------------------------------------------------------------------- resume guard


@dataclass(frozen=True)
class ConfigChange:
    """One differing key: dotted ``key``, the ``stored`` value (the run's) and the ``current`` one (this launch's)."""

    key: str
    stored: Any
    current: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.stored!r} (stored) -> {self.current!r} (now)"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of nested mappings (lists and scalars are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _is_operational(key: str, patterns: Iterable[str]) -> bool:
    """``key`` matches a pattern (``fnmatch``, ``*`` = one key component) or lies under one."""
    parts = key.split(".")
    for pattern in patterns:
        depth = pattern.count(".") + 1
        if len(parts) >= depth and fnmatch.fnmatchcase(".".join(parts[:depth]), pattern):
            return True
    return False


def _same_path(key: str, before: Any, after: Any) -> bool:
    """Under a path key, two strings naming the same path once resolved (``~`` expanded, relative to the working
    directory, symlinks followed): ``relrun``, ``./relrun/`` and ``$PWD/relrun`` are one path."""
    *parents, leaf = key.split(".")
    if not (_PATH_KEY.search(leaf) and (leaf != "name" or "tokenizer" in parents)):
        return False
    if not (isinstance(before, str) and isinstance(after, str) and before and after):
        return False
    return os.path.realpath(os.path.expanduser(before)) == os.path.realpath(os.path.expanduser(after))


def config_changes(
    stored: Mapping[str, Any], current: Mapping[str, Any], operational: Iterable[str] = ()
) -> list[ConfigChange]:
    """Keys whose values differ between ``stored`` and ``current`` (absent on one side counts; paths compared after
    resolving), sorted, except the ``operational`` ones and the run's own location (``RUN_LOCATION_KEYS``)."""
    ignored = (*operational, *RUN_LOCATION_KEYS)
    old, new = flatten(stored), flatten(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before != after and not _same_path(key, before, after) and not _is_operational(key, ignored):
            changes.append(ConfigChange(key, before, after))
    return changes


def check_resume_config(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    operational: Iterable[str],
    accept: bool,
    where: str,
) -> list[ConfigChange]:
    """The run-changing differences between the stored and the current recipe.

    Raises ``ConfigError`` (a line saying what differs, one problem per key with both values, a line saying how to
    proceed) when there are any and ``accept`` is false; returns them (possibly empty) otherwise. ``where`` names
    the stored recipe in messages.
    """
    changes = config_changes(stored, current, operational)
    if changes and not accept:
        raise ConfigError(
            [
                ("", f"the recipe differs from the one this run was started with ({where}) in {len(changes)} key(s):"),
                *((c.key, f"{c.stored!r} (stored) -> {c.current!r} (now)") for c in changes),
                (
                    "",
                    "resuming would silently turn it into a different run: restore the original values, use a new "
                    f"checkpoint directory, or pass {ACCEPT_FLAG} to resume with the new values (recorded in the run "
                    "directory)",
                ),
            ]
        )
    return changes


def record_accepted_changes(run_dir: Path, changes: list[ConfigChange], resumed_from: str) -> None:
    """Append accepted changes to ``run_dir/holderpo_config_changes.jsonl`` (one JSON object per launch)."""
    if not changes:
        return
    entry = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "resumed_from": resumed_from,
        "changes": [{"key": c.key, "stored": c.stored, "current": c.current} for c in changes],
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / CHANGE_LOG).open("a") as f:
        f.write(json.dumps(entry, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------- the run directory: completion, repair after a killed driver, the outcome


def latest_complete_step(checkpoint_dir: Path) -> int | None:
    """Highest N with a ``step_N`` directory (NeMo RL renames ``tmp_step_N`` only once a save is complete)."""
    if not checkpoint_dir.is_dir():
        return None
    steps = [int(m.group(1)) for p in checkpoint_dir.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
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
        if (m := STEP_DIR.match(p.name)) and (p / TRAINING_INFO).is_file()
    ]
    newest = max(complete, default=None)
    removed = []
    for path in sorted(checkpoint_dir.iterdir()):
        if not path.is_dir():
            continue
        step_match = STEP_DIR.match(path.name)
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

    Raises ``ConfigError`` on a run-changing difference unless ``accept``; with ``write``, stores ``config``
    as the run's record (atomically) and logs accepted changes. Returns the accepted changes.
    """
    record = checkpoint_dir / RECIPE_RECORD
    step = latest_complete_step(checkpoint_dir)
    changes: list[ConfigChange] = []
    if step is not None and record.is_file():
        stored = json.loads(record.read_text())
        changes = check_resume_config(
            stored, config, operational=NEMO_RL_OPERATIONAL_KEYS, accept=accept, where=str(record)
        )
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
        with atomic_write(record) as fh:
            fh.write(json.dumps(config, indent=1, sort_keys=True, default=str) + "\n")
    return changes


def write_completed_marker(checkpoint_dir: Path) -> None:
    """Atomically write ``checkpoint_dir/COMPLETED`` (lets a requeued job see the run is done)."""
    with atomic_write(checkpoint_dir / COMPLETED_FILE) as fh:
        fh.write(json.dumps({"completed": True}) + "\n")


def final_step(config: Any, dataloader: Any, own_loop: bool) -> int:
    """The global step at which the training loop ends by itself.

    ``grpo.max_num_steps``; for ``grpo_train`` with one dataloader and no dynamic sampling, the end of the last of
    ``grpo.max_num_epochs`` epochs when that comes first (NeMo RL's ``is_last_step``: each epoch is one step per
    batch then). A component's own loop (``own_loop``) runs ``grpo.max_num_steps`` steps.
    """
    grpo, data = config.grpo, config.data
    last = int(grpo["max_num_steps"])
    if own_loop or not hasattr(dataloader, "__len__") or data.get("use_multiple_dataloader"):
        return last
    return last if grpo.get("use_dynamic_sampling") else min(last, int(grpo["max_num_epochs"]) * len(dataloader))


def exit_code_after_training(stop_reason: str | None, checkpointing: dict[str, Any], *, finished: bool = False) -> int:
    """0 (complete, ``COMPLETED`` written), 75 (stopped with a checkpoint) or 1 (stopped without one).

    ``finished``: the loop trained its final step. A stop requested during it changes nothing that step does (NeMo
    RL saves the final step anyway), so the run is complete, not stopped: exit 75 would pay one more attempt, with
    its whole set-up, only to write ``COMPLETED``.
    """
    enabled = bool(checkpointing.get("enabled"))
    if stop_reason is not None and finished:
        print(f"holder_nemo: stop requested ({stop_reason}) during the final step: the run is complete", flush=True)
    elif stop_reason is not None:
        if not enabled:
            print(f"holder_nemo: stopped ({stop_reason}) but checkpointing.enabled is false: nothing saved", flush=True)
            return EXIT_FAILED
        print(f"holder_nemo: checkpointed and stopped ({stop_reason}); exit {EXIT_STOPPED}", flush=True)
        return EXIT_STOPPED
    if enabled and checkpointing.get("checkpoint_dir"):
        write_completed_marker(Path(checkpointing["checkpoint_dir"]))
    return EXIT_COMPLETED


def main(argv: Sequence[str] | None = None) -> int:
    """Print ``checkpointing.checkpoint_must_save_by`` for the current allocation: NeMo RL starts that clock when
    ``grpo_train`` starts, so a value computed before setup is late by the setup time; ``--margin`` includes it."""
    parser = argparse.ArgumentParser(
        prog="python -m holder_nemo.run_control",
        description="Print checkpointing.checkpoint_must_save_by (DD:HH:MM:SS) for the current Slurm allocation.",
    )
    parser.add_argument("--margin", type=float, default=900.0, help="seconds to keep before the end (default 900)")
    args = parser.parse_args(argv)
    if args.margin < 0:
        parser.error(f"--margin must be >= 0 seconds, got {args.margin:g}")
    end = slurm_job_end_time()
    if end is None:
        print("no Slurm job end time (not in a Slurm job, or no time limit)", file=sys.stderr)
        return 1
    # NeMo RL's DD:HH:MM:SS, from now until margin seconds before the end (rounded down, never negative)
    minutes, secs = divmod(max(0, int(end - args.margin - time.time())), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    print(f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
