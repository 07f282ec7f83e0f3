"""The driver's progress record, for the batch shell's progress watchdog: a hang is noticed, not waited out.

Contract (driver side; docs/slurm.md, "Progress watchdog"). When ``$HOLDERPO_PROGRESS_FILE`` names a file, the NeMo
RL entry point rewrites it atomically (a temporary file in the same directory, then ``os.replace``) when it starts
and each time it completes

* a training step (``policy.train`` returned: the policy update of step N is done),
* a validation (NeMo RL's ``validate``, or a component loop's own),
* a checkpoint (NeMo RL's ``finalize_checkpoint`` renamed ``tmp_step_N`` to ``step_N``).

The file is JSON (``version`` 1)::

    started             Unix time this driver process started (one attempt)
    pid, host           the driver process
    training_started    Unix time the training loop began (after Ray, model load, vLLM), or null
    last                {"kind": "step" | "validation" | "checkpoint", "step": N, "time": Unix time} or null
    steps_completed     training steps this driver completed
    counts              {"step": n, "validation": n, "checkpoint": n} completed by this driver
    first_step_s        training_started -> first completed step (warm-up included), or null
    longest_gap_s       the longest time between two consecutive progress events after the first step, or null
    previous_longest_s  the longest such time an earlier driver of this run measured (kept from its file), or null
    timeout_s           the default timeout (``default_timeout``) for these measurements, or null before step 1

The watchdog (the shell, every poll): ``python -m holder_nemo.nemo_rl.progress check FILE --since ATTEMPT_START``
exits 0 while the run progresses, 1 when no step, validation or checkpoint completed for longer than the timeout
(its message names the last one and the timeout: stop, requeue, log it), 3 while the watchdog is not armed: no file,
a file from an earlier driver (``started`` before ``--since``), or no completed step yet, so that Ray, the model
load and the warm-up of the first step never count.

Default timeout: ``max(floor, factor x the longest interval measured)``, where the interval is ``longest_gap_s``
(and ``previous_longest_s``) once one interval after the first step is measured, else ``first_step_s``, which
includes warm-up and so errs long. The recipe's own step time sets it; the floor covers what no attempt has measured
yet (the first checkpoint of a run, its first validation). Why these numbers: docs/slurm.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PROGRESS_FILE_ENV = "HOLDERPO_PROGRESS_FILE"
KINDS = ("step", "validation", "checkpoint")
DEFAULT_FLOOR_S = 1800.0
DEFAULT_FACTOR = 3.0
EXIT_PROGRESSING, EXIT_STALLED, EXIT_NOT_ARMED = 0, 1, 3


def default_timeout(
    progress: Mapping[str, Any], *, floor_s: float = DEFAULT_FLOOR_S, factor: float = DEFAULT_FACTOR
) -> float | None:
    """Seconds without progress after which a run counts as hung; None before the first completed step.

    Args:
        progress: a progress record (module docstring): ``first_step_s``, ``longest_gap_s``, ``previous_longest_s``
            (seconds or None), ``steps_completed``.
        floor_s: the least timeout (seconds, > 0).
        factor: multiple of the longest measured interval (>= 1).
    """
    if floor_s <= 0:
        raise ValueError(f"floor_s must be > 0 seconds, got {floor_s}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if not progress.get("steps_completed"):
        return None
    gap, first, previous = (progress.get(k) for k in ("longest_gap_s", "first_step_s", "previous_longest_s"))
    measured = [v for v in ((gap if gap is not None else first), previous) if v is not None]
    return max(floor_s, factor * max(measured, default=0.0))


class ProgressRecorder:
    """Writes the progress record of one driver process (module docstring); a no-op without a path.

    Args:
        path: the progress file (``$HOLDERPO_PROGRESS_FILE``), or None.
        clock: Unix time in seconds (tests pass their own).
    """

    def __init__(self, path: str | os.PathLike | None, clock=time.time) -> None:
        self.path = Path(path) if path else None
        self.clock = clock
        self.record: dict[str, Any] = {}
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProgressRecorder:
        env = os.environ if env is None else env
        return cls(env.get(PROGRESS_FILE_ENV) or None)

    def start(self) -> None:
        """A new driver: a fresh record, keeping the longest interval the previous driver of this run measured."""
        previous = read_progress(self.path) if self.path is not None else None
        carried = [previous.get(k) for k in ("longest_gap_s", "previous_longest_s")] if previous else []
        self.record = {
            "version": 1,
            "started": self.clock(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "training_started": None,
            "last": None,
            "steps_completed": 0,
            "counts": dict.fromkeys(KINDS, 0),
            "first_step_s": None,
            "longest_gap_s": None,
            "previous_longest_s": max((v for v in carried if v is not None), default=None),
            "timeout_s": None,
        }
        self._write()

    def training_started(self) -> None:
        """The training loop begins (setup done); the first step is measured from here."""
        self.record["training_started"] = self.clock()
        self._write()

    def completed(self, kind: str, step: int) -> None:
        """``kind`` (a step, a validation or a checkpoint) of global step ``step`` has completed."""
        if kind not in KINDS:
            raise ValueError(f"progress kind must be one of {KINDS}, got {kind!r}")
        if not self.record:
            self.start()
        rec, now = self.record, self.clock()
        if rec["steps_completed"] >= 1 and rec["last"] is not None:  # an interval of the watched part
            gap = now - rec["last"]["time"]
            rec["longest_gap_s"] = max(gap, rec["longest_gap_s"] or 0.0)
        if kind == "step":
            if rec["steps_completed"] == 0:
                rec["first_step_s"] = now - (rec["training_started"] or rec["started"])
            rec["steps_completed"] += 1
        rec["counts"][kind] += 1
        rec["last"] = {"kind": kind, "step": int(step), "time": now}
        rec["timeout_s"] = default_timeout(rec)
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        # Not holder_nemo.files.atomic_write: the batch shell runs this file as a script (python3 -I, outside the
        # container, no holder_nemo on the path), so it imports the standard library only.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.record, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:  # the watchdog may go blind, training must not stop for it
            if not self._warned:
                print(f"holder_nemo: WARNING cannot write the progress file {self.path}: {exc}", flush=True)
                self._warned = True


def recording_checkpoints(checkpointer: Any, progress: ProgressRecorder) -> None:
    """Record a checkpoint each time ``checkpointer.finalize_checkpoint`` (NeMo RL's ``CheckpointManager``) has
    renamed ``tmp_step_N`` to ``step_N`` (instance attribute; the class is untouched)."""
    finalize: Callable[[Any], None] = checkpointer.finalize_checkpoint

    def finalize_and_record(checkpoint_path: Any) -> None:
        finalize(checkpoint_path)
        progress.completed("checkpoint", int(Path(checkpoint_path).name.rsplit("_", 1)[-1]))

    checkpointer.finalize_checkpoint = finalize_and_record


@contextlib.contextmanager
def recording_validations(trainer_module: ModuleType, progress: ProgressRecorder) -> Iterator[None]:
    """Within the block, ``trainer_module.validate`` (``nemo_rl.algorithms.grpo``, which ``grpo_train`` calls by that
    name with ``step=`` the global step) records a validation when it returns (restored afterwards)."""
    original = trainer_module.validate

    def validate_and_record(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        progress.completed("validation", int(kwargs.get("step") or 0))
        return result

    trainer_module.validate = validate_and_record
    try:
        yield
    finally:
        trainer_module.validate = original


def read_progress(path: Path) -> dict[str, Any] | None:
    """The progress record at ``path``; None when it is missing or not a version-1 record."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("version") == 1 else None


def check(
    path: Path,
    *,
    since: float | None = None,
    timeout_s: float | None = None,
    floor_s: float = DEFAULT_FLOOR_S,
    factor: float = DEFAULT_FACTOR,
    now: float | None = None,
) -> tuple[int, str]:
    """(exit code, one line for the job log): progressing, stalled or not armed (module docstring)."""
    record = read_progress(path)
    if record is None:
        return EXIT_NOT_ARMED, f"not armed: no progress record at {path}"
    if since is not None and float(record.get("started", 0)) < since:
        return EXIT_NOT_ARMED, f"not armed: {path} is from an earlier driver (started before {since:.0f})"
    if not record.get("steps_completed") or record.get("last") is None:
        return EXIT_NOT_ARMED, "not armed: no training step completed yet (start-up and warm-up are not watched)"
    limit = timeout_s if timeout_s is not None else default_timeout(record, floor_s=floor_s, factor=factor)
    last = record["last"]
    age = (time.time() if now is None else now) - float(last["time"])
    driver = f"{record.get('pid')}@{record.get('host')}"
    what = f"last: {last['kind']} of step {last['step']}, {age:.0f} s ago (driver {driver})"
    if age > limit:
        return EXIT_STALLED, f"no step, validation or checkpoint completed for {age:.0f} s > {limit:.0f} s; {what}"
    return EXIT_PROGRESSING, f"progressing; {what}; timeout {limit:.0f} s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m holder_nemo.nemo_rl.progress",
        description="Is the driver still progressing? Exit 0 yes, 1 stalled past the timeout, 3 watchdog not armed.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("check", help="read the progress file the driver writes ($HOLDERPO_PROGRESS_FILE)")
    cmd.add_argument("file", type=Path)
    cmd.add_argument("--since", type=float, help="Unix time this attempt started: older records do not count")
    cmd.add_argument("--timeout", type=float, help="seconds; default: from the run's measured step time")
    cmd.add_argument("--floor", type=float, default=DEFAULT_FLOOR_S, help="least default timeout, seconds")
    cmd.add_argument("--factor", type=float, default=DEFAULT_FACTOR, help="x the longest measured interval")
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    try:
        code, line = check(args.file, since=args.since, timeout_s=args.timeout, floor_s=args.floor, factor=args.factor)
    except ValueError as exc:
        parser.error(str(exc))
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
