"""A study's runs on a ``ProcessPoolExecutor`` over ``holderpo train``'s entry; each run resumes and stops by itself.

A run is an ordinary ``holderpo train`` run in its own directory: one with ``COMPLETED`` is skipped, one with a
checkpoint continues from it. Workers are spawned (never forked from a parent holding torch threads) and run one
run after another, so imports are paid once per worker. Every worker's ``$HOLDERPO_STOP_FILE`` is ``OUT/STOP``: the
study creates it on SIGTERM, SIGUSR1 or Ctrl-C (or when the user's own ``$HOLDERPO_STOP_FILE`` appears), running runs
then checkpoint after their step and exit 75, queued runs are dropped, and the study exits 75.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from holder_nemo.run_control import COMPLETED_FILE, EXIT_STOPPED, STOP_FILE_ENV

LOG_FILE = "train.log"
LOCK_FILE = ".lock"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


@dataclass(frozen=True)
class RunSpec:
    task: str
    arm: str
    seed: int
    run_dir: Path
    argv: tuple[str, ...]  # `holderpo train` arguments: recipe, then overrides

    @property
    def name(self) -> str:
        return f"{self.task}/{self.arm}/seed_{self.seed}"

    def completed(self) -> bool:
        return (self.run_dir / COMPLETED_FILE).exists()


def _init_worker(stop_file: str) -> None:
    os.environ[STOP_FILE_ENV] = stop_file
    # Ctrl-C reaches the whole process group: the study turns it into the stop file. A run installs its own handlers
    # while it trains; between runs a signal must not kill the worker half-way.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def execute(spec: RunSpec) -> int:
    """Run (or resume) one run in this worker; its output goes to its train.log. Returns its exit code."""
    from holder_nemo.reference.train import main as train_main

    spec.run_dir.mkdir(parents=True, exist_ok=True)
    with (spec.run_dir / LOCK_FILE).open("w") as lock:
        # A worker of a study killed outright (SIGKILL) finishes its run as an orphan; a rerun waits for it here
        # instead of training the same directory twice (the kernel releases the lock when a process dies).
        fcntl.flock(lock, fcntl.LOCK_EX)
        with (
            (spec.run_dir / LOG_FILE).open("a") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            try:
                code = int(train_main(list(spec.argv)))
            except Exception as exc:  # a failed run must not take the worker (and the other runs) down
                print(f"holderpo study: run failed: {exc!r}", file=sys.stderr)
                code = 1
    return code


def run_all(specs: list[RunSpec], jobs: int, out_dir: Path) -> int:
    """Run every spec that is not complete, ``jobs`` at a time. Returns 0 (all complete), 75 (stopped) or 1."""
    pending = [s for s in specs if not s.completed()]
    done = len(specs) - len(pending)
    print(
        f"holderpo study: {len(specs)} runs, {done} already complete, {len(pending)} to run on {jobs} workers",
        file=sys.stderr,
    )
    if not pending:
        return 0
    stop_file, user_stop_file = out_dir / "STOP", os.environ.get(STOP_FILE_ENV)
    stop_file.unlink(missing_ok=True)  # a request of an earlier invocation; from here on it means "stop requested"

    def request_stop(reason: str) -> None:
        if not stop_file.exists():
            stop_file.touch()
            print(f"holderpo study: {reason}; running runs checkpoint after their current step", file=sys.stderr)

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and stop_file.exists():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting (runs still stop at their step boundary)
        request_stop(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    failed, stopped = [], 0
    try:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(str(stop_file),)) as pool:
            futures = {pool.submit(execute, spec): spec for spec in pending}
            remaining = set(futures)
            while remaining:
                finished, remaining = cf.wait(remaining, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    code, name = future.result(), futures[future].name
                    done, stopped = done + (code == 0), stopped + (code == EXIT_STOPPED)
                    if code not in (0, EXIT_STOPPED):
                        failed.append(name)
                    status = {0: "done", EXIT_STOPPED: "stopped (resumable)"}.get(code, f"FAILED (exit {code})")
                    print(f"holderpo study: [{done}/{len(specs)} complete] {name} {status}", file=sys.stderr)
                if user_stop_file and Path(user_stop_file).exists():
                    request_stop(f"stop file {user_stop_file}")
                if stop_file.exists():  # queued runs never start; running ones stop at their next step boundary
                    remaining = {f for f in remaining if not f.cancel()}
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failed:
        print(f"holderpo study: {len(failed)} run(s) failed; see their train.log: {', '.join(failed)}", file=sys.stderr)
        return 1
    if stop_file.exists() or stopped:
        print("holderpo study: stopped; rerun the same command to continue where it stopped", file=sys.stderr)
        return EXIT_STOPPED
    return 0
