"""The driver's progress record (``holder_nemo.nemo_rl.progress``) and the check the batch shell's watchdog runs.

No NeMo RL needed: the recorder is fed the events the entry point's hooks report (a completed ``policy.train``, a
validation, a renamed checkpoint) on a controlled clock; the hooks themselves on NeMo RL's real ``grpo_train`` are in
the driver-contract tier (``tests/nemo_rl_driver``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from holder_nemo.nemo_rl.progress import (
    DEFAULT_FACTOR,
    DEFAULT_FLOOR_S,
    EXIT_NOT_ARMED,
    EXIT_PROGRESSING,
    EXIT_STALLED,
    ProgressRecorder,
    check,
    default_timeout,
    read_progress,
    recording_checkpoints,
    recording_validations,
)
from holder_nemo.nemo_rl.steps import StepScheduledTrain


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_record_of_one_driver_from_start_to_its_watched_intervals(tmp_path):
    clock, path = Clock(), tmp_path / "progress.json"
    rec = ProgressRecorder(path, clock)
    rec.start()
    record = read_progress(path)
    assert record["started"] == clock.t and record["pid"] == os.getpid() and record["last"] is None
    clock.t += 300  # Ray, model load, vLLM
    rec.training_started()
    clock.t += 50
    rec.completed("validation", 0)  # val_at_start: before the first step, not watched
    assert read_progress(path)["timeout_s"] is None and read_progress(path)["longest_gap_s"] is None
    clock.t += 400  # the first step, warm-up included
    rec.completed("step", 1)
    record = read_progress(path)
    assert record["first_step_s"] == 450 and record["steps_completed"] == 1
    assert record["last"] == {"kind": "step", "step": 1, "time": clock.t}
    # Only the first step measured: 3 x 450 s is below the floor.
    assert record["timeout_s"] == DEFAULT_FLOOR_S
    for kind, step, seconds in [("step", 2, 700), ("validation", 2, 100), ("checkpoint", 2, 60), ("step", 3, 650)]:
        clock.t += seconds
        rec.completed(kind, step)
    record = read_progress(path)
    assert record["longest_gap_s"] == 700 and record["steps_completed"] == 3
    assert record["counts"] == {"step": 3, "validation": 2, "checkpoint": 1}
    assert record["timeout_s"] == DEFAULT_FACTOR * 700  # the recipe's own step time now sets it
    assert not list(tmp_path.glob(".*.tmp")), "the record is replaced atomically"


def test_default_timeout_rule():
    assert default_timeout({"steps_completed": 0, "first_step_s": 10.0}) is None  # not armed
    one = {"steps_completed": 1, "first_step_s": 2000.0, "longest_gap_s": None, "previous_longest_s": None}
    assert default_timeout(one) == 6000.0  # only the first step (with warm-up) is known: it errs long
    later = {**one, "steps_completed": 5, "longest_gap_s": 100.0}
    assert default_timeout(later) == DEFAULT_FLOOR_S  # warm-up no longer counts; the floor holds
    assert default_timeout(later, floor_s=60.0) == 300.0
    assert default_timeout({**later, "previous_longest_s": 900.0}, floor_s=60.0) == 2700.0  # a save seen before
    with pytest.raises(ValueError, match="floor_s"):
        default_timeout(later, floor_s=0)
    with pytest.raises(ValueError, match="factor"):
        default_timeout(later, factor=0.5)


def test_a_restarted_driver_keeps_what_the_last_one_measured_and_starts_unarmed(tmp_path):
    clock, path = Clock(), tmp_path / "progress.json"
    first = ProgressRecorder(path, clock)
    first.start()
    first.training_started()
    for kind, step, seconds in [("step", 1, 100), ("step", 2, 100), ("checkpoint", 2, 1500), ("step", 3, 100)]:
        clock.t += seconds
        first.completed(kind, step)
    assert read_progress(path)["longest_gap_s"] == 1500
    clock.t += 60
    second = ProgressRecorder(path, clock)
    second.start()  # the requeued attempt's driver
    record = read_progress(path)
    assert record["previous_longest_s"] == 1500 and record["steps_completed"] == 0 and record["last"] is None
    assert check(path, now=clock.t + 10_000)[0] == EXIT_NOT_ARMED  # model load of the new attempt is not watched
    second.training_started()
    clock.t += 200
    second.completed("step", 4)
    assert read_progress(path)["timeout_s"] == DEFAULT_FACTOR * 1500  # its first save may take as long again


def test_check_progressing_stalled_and_not_armed(tmp_path):
    clock, path = Clock(), tmp_path / "progress.json"
    assert check(path, now=clock.t) == (EXIT_NOT_ARMED, f"not armed: no progress record at {path}")
    rec = ProgressRecorder(path, clock)
    rec.start()
    rec.training_started()
    code, line = check(path, now=clock.t + 99_999)
    assert code == EXIT_NOT_ARMED and "no training step completed yet" in line
    clock.t += 120
    rec.completed("step", 7)
    clock.t += 30
    rec.completed("checkpoint", 7)
    code, line = check(path, now=clock.t + 100)
    assert code == EXIT_PROGRESSING and "checkpoint of step 7" in line and "timeout 1800 s" in line
    code, line = check(path, now=clock.t + DEFAULT_FLOOR_S + 1)
    assert code == EXIT_STALLED
    assert line.startswith("no step, validation or checkpoint completed for 1801 s > 1800 s; last: checkpoint of step")
    assert check(path, timeout_s=50, now=clock.t + 60)[0] == EXIT_STALLED  # an explicit timeout wins
    # A record left by an earlier attempt's driver (this attempt's driver has not started yet) is not progress.
    assert check(path, since=clock.t + 1, now=clock.t + 99_999)[0] == EXIT_NOT_ARMED


def test_command_line_the_shell_calls(tmp_path):
    path = tmp_path / "progress.json"
    rec = ProgressRecorder(path)
    rec.start()
    rec.training_started()
    rec.completed("step", 1)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "holder_nemo.nemo_rl.progress", "check", str(path), *args],
                              capture_output=True, text=True)  # fmt: skip

    ok = run("--since", str(rec.record["started"] - 1))
    assert ok.returncode == EXIT_PROGRESSING and ok.stdout.startswith("progressing; last: step of step 1")
    record = json.loads(path.read_text())
    record["last"]["time"] -= 100
    path.write_text(json.dumps(record))
    stalled = run("--timeout", "60")
    assert stalled.returncode == EXIT_STALLED and "> 60 s" in stalled.stdout
    assert run("--since", str(record["started"] + 5)).returncode == EXIT_NOT_ARMED
    bad = run("--timeout", "0")
    assert bad.returncode == 2 and "--timeout must be > 0" in bad.stderr
    # The batch shell runs outside the container: the file alone, without site-packages (no torch, no holder_nemo).
    import holder_nemo.nemo_rl.progress as progress

    def bare(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-I", "-S", progress.__file__, "check", *args],
                              capture_output=True, text=True)  # fmt: skip

    # The verdict's text too: an ImportError's traceback would also exit 1, which the shell reads as "stalled".
    stalled = bare(str(path), "--timeout", "60")
    assert stalled.returncode == EXIT_STALLED and "> 60 s" in stalled.stdout, stalled.stderr
    assert bare(str(tmp_path / "none.json")).returncode == EXIT_NOT_ARMED


def test_unwritable_progress_file_warns_once_and_never_stops_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rec = ProgressRecorder(blocker / "progress.json")  # its parent is a file
    rec.start()
    rec.completed("step", 1)
    assert capsys.readouterr().out.count("WARNING cannot write the progress file") == 1
    ProgressRecorder(None).completed("step", 1)  # no $HOLDERPO_PROGRESS_FILE: nothing written
    with pytest.raises(ValueError, match="progress kind"):
        rec.completed("rollout", 1)


def test_hooks_record_steps_validations_and_renamed_checkpoints(tmp_path):
    """The three hooks the entry point installs: the step hook on ``policy.train``, NeMo RL's ``validate`` (called by
    name inside ``grpo_train``, with ``step=``) and ``CheckpointManager.finalize_checkpoint`` (stand-ins here)."""
    clock, path = Clock(), tmp_path / "progress.json"
    rec = ProgressRecorder(path, clock)
    rec.start()
    seen = []
    train = StepScheduledTrain(lambda data, loss_fn: seen.append("trained"), 4, on_step_done=lambda k: seen.append(k))
    train({}, object())
    assert seen == ["trained", 5] and train.completed_steps == 5  # recorded after the update, not before

    trainer = types.SimpleNamespace(validate=lambda *a, step=None, **k: ({"accuracy": 0.5}, {}))
    original = trainer.validate
    with recording_validations(trainer, rec):
        assert trainer.validate(None, step=5) == ({"accuracy": 0.5}, {})
    assert trainer.validate is original
    assert read_progress(path)["last"]["kind"] == "validation"

    renamed = []

    class Checkpointer:
        def finalize_checkpoint(self, checkpoint_path):
            renamed.append(Path(checkpoint_path).name)

    checkpointer = Checkpointer()
    recording_checkpoints(checkpointer, rec)
    checkpointer.finalize_checkpoint(tmp_path / "tmp_step_5")
    assert renamed == ["tmp_step_5"]
    assert read_progress(path)["last"] == {"kind": "checkpoint", "step": 5, "time": clock.t}
