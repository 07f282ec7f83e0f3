"""Run a study's reference runs in parallel worker processes; resumable, with a graceful stop.

Each run is an ordinary ``holderpo train`` run in its own directory, so resuming is the reference run's own:
a run with ``COMPLETED`` is skipped, a run with a checkpoint continues from it. Workers are spawned processes
(never forked from a parent that may hold torch threads) that each execute runs one after another, so imports are
paid once per worker, not once per run.

Stopping: the study points ``$HOLDERPO_STOP_FILE`` of its workers at ``OUT/STOP``. SIGTERM, SIGUSR1 or Ctrl-C to
the study (workers ignore SIGINT; a signal sent to the whole process group reaches the runs too) creates that file:
every running run finishes its step, checkpoints and exits 75, queued runs are dropped, and the study exits 75.
A study killed outright loses at most ``checkpointing.save_period`` steps per running run. A per-run ``flock``
keeps two processes (e.g. an orphaned worker of a killed study and a restarted one) out of the same run directory.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import json
import multiprocessing
import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from holder_nemo.nemo_rl.stop import STOP_FILE_ENV

COMPLETED_FILE = "COMPLETED"  # written by holderpo train when a run finishes
TIMING_FILE = "study_timing.jsonl"  # one line per worker invocation of a run: wall and CPU seconds
LOG_FILE = "train.log"
EXIT_STOPPED = 75


@dataclass(frozen=True)
class RunSpec:
    task: str
    arm: str
    seed: int
    run_dir: Path
    argv: tuple[str, ...]  # the `holderpo train` arguments: recipe then overrides

    @property
    def name(self) -> str:
        return f"{self.task}/{self.arm}/seed_{self.seed}"

    def completed(self) -> bool:
        return (self.run_dir / COMPLETED_FILE).exists()


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the kernel if this process dies
        yield


def _worker_init() -> None:
    # Ctrl-C goes to the study, which asks the runs to stop at a step boundary; SIGTERM/SIGUSR1 are handled by each
    # run's own stop request while it trains and ignored between runs (a worker must not die half-way).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def execute(spec: RunSpec) -> tuple[str, int]:
    """Run (or resume) one reference run in this process; returns (name, exit code). Output goes to its train.log."""
    from holder_nemo.reference.train import main as train_main

    with _run_lock(spec.run_dir):
        if spec.completed():
            return spec.name, 0
        wall0, cpu0 = time.perf_counter(), _cpu_seconds()
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
        timing = {"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu_seconds() - cpu0, "exit": code}
        with (spec.run_dir / TIMING_FILE).open("a") as fh:
            fh.write(json.dumps(timing) + "\n")
    return spec.name, code


def run_timing(run_dir: Path) -> dict[str, float]:
    """Wall and CPU seconds a run took, summed over the invocations that worked on it."""
    path = run_dir / TIMING_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {"wall_s": sum(r["wall_s"] for r in rows), "cpu_s": sum(r["cpu_s"] for r in rows)}


class StudyStop:
    """The study's stop file: created on SIGTERM / SIGUSR1 / SIGINT, or when the user's own stop file appears."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "STOP"
        self.user_file = os.environ.get(STOP_FILE_ENV) or None
        self.path.unlink(missing_ok=True)  # a stale request from a previous invocation
        self.reason: str | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Signal handlers and ``$HOLDERPO_STOP_FILE`` (inherited by spawned workers) for the block's duration."""
        signals = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in signals}
        previous_env = os.environ.get(STOP_FILE_ENV)
        os.environ[STOP_FILE_ENV] = str(self.path)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if previous_env is None:
                os.environ.pop(STOP_FILE_ENV, None)
            else:
                os.environ[STOP_FILE_ENV] = previous_env

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting (runs still stop at their step boundary)
        self.request(signal.Signals(signum).name)

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.path.touch()
            print(f"holderpo study: {reason}; running runs checkpoint after their current step", file=sys.stderr)

    def poll(self) -> bool:
        if self.reason is None and self.user_file and Path(self.user_file).exists():
            self.request(f"stop file {self.user_file}")
        return self.reason is not None


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
    stop = StudyStop(out_dir)
    failed: list[str] = []
    stopped = 0
    ctx = multiprocessing.get_context("spawn")
    with stop.installed(), cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init) as pool:
        futures = {pool.submit(execute, spec): spec for spec in pending}
        remaining = set(futures)
        while remaining:
            finished, remaining = cf.wait(remaining, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                if future.cancelled():
                    continue
                name, code = future.result()
                if code == 0:
                    done += 1
                elif code == EXIT_STOPPED:
                    stopped += 1
                else:
                    failed.append(name)
                status = {0: "done", EXIT_STOPPED: "stopped (resumable)"}.get(code, f"FAILED (exit {code})")
                print(f"holderpo study: [{done}/{len(specs)} complete] {name} {status}", file=sys.stderr, flush=True)
            if stop.poll():
                for future in remaining:
                    future.cancel()  # queued runs never start; running ones stop at their next step boundary
    if failed:
        print(f"holderpo study: {len(failed)} run(s) failed; see their train.log: {', '.join(failed)}", file=sys.stderr)
        return 1
    if stop.reason is not None or stopped:
        print("holderpo study: stopped; rerun the same command to continue where it stopped", file=sys.stderr)
        return EXIT_STOPPED
    return 0
