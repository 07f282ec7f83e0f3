"""The project's stop contract for the NeMo RL entry point, built on NeMo RL v0.7.0's own save-and-exit path.

Contract (shared with ``holderpo train`` and the Slurm scripts): when the file named by ``$HOLDERPO_STOP_FILE``
exists at a step boundary, or the driver got SIGUSR1/SIGTERM, finish the current step, write a checkpoint, exit 75.

How it hooks into ``grpo_train`` (least invasive, no NeMo RL source change): after every step ``grpo_train`` asks
``timeout.check_save()`` of a ``TimeoutChecker`` built from ``checkpointing.checkpoint_must_save_by``; when that
returns True it saves a checkpoint (if ``checkpointing.enabled``) and returns after the step's logging ("Timeout has
been reached, stopping training early"). While ``grpo_train`` runs, ``patched_timeout_checker`` points the name
``TimeoutChecker`` in ``nemo_rl.algorithms.grpo`` at a subclass whose ``check_save`` is also True when a stop was
requested, or when the next step would end within ``margin`` seconds of the Slurm allocation's end (absolute clock,
unlike ``checkpoint_must_save_by``, which counts from the start of ``grpo_train``).

Outcome (``exit_code_after_training``): 75 after a stop with a checkpoint, 0 with ``COMPLETED`` when the loop ended
by itself, or when the stop came during its final step (``final_step``), which is saved all the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from holder_nemo.config.errors import ConfigError

EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 75
STOP_FILE_ENV = "HOLDERPO_STOP_FILE"
SAVE_MARGIN_ENV = "HOLDERPO_SLURM_SAVE_MARGIN_S"
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


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
    def from_env(cls, env: Mapping[str, str] | None = None) -> StopRequest:
        env = os.environ if env is None else env
        return cls(stop_file=env.get(STOP_FILE_ENV) or None)

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

    def reason(self, mean_iteration_s: float = 0.0, now: float | None = None) -> str | None:
        """Why the run should stop now, or None. ``mean_iteration_s`` is the expected length of the next step."""
        if self.signal_name is not None:
            return self.signal_name
        if self.stop_file is not None and self.stop_file.exists():
            return f"stop file {self.stop_file}"
        if self.deadline is not None:
            now = time.time() if now is None else now
            if now + mean_iteration_s >= self.deadline:
                return "Slurm allocation ends before the next step would finish"
        return None


def stop_aware_timeout_checker(base: type, stop: StopRequest) -> type:
    """A subclass of NeMo RL's ``TimeoutChecker`` whose ``check_save`` also honours ``stop``."""

    class StopAwareTimeoutChecker(base):  # type: ignore[misc, valid-type]
        def check_save(self) -> bool:
            if super().check_save():
                stop.fired = stop.fired or "checkpointing.checkpoint_must_save_by"
                return True
            if self.last_saved:
                return False
            times = list(getattr(self, "iteration_times", []) or [])
            why = stop.reason(sum(times) / len(times) if times else 0.0)
            if why is None:
                return False
            self.last_saved = True
            stop.fired = why
            print(f"holder_nemo: stopping at this step boundary ({why}); saving a checkpoint", flush=True)
            return True

    return StopAwareTimeoutChecker


@contextlib.contextmanager
def patched_timeout_checker(trainer_module: ModuleType, stop: StopRequest) -> Iterator[type]:
    """Within the block, ``trainer_module.TimeoutChecker`` is the stop-aware subclass (restored afterwards)."""
    original = trainer_module.TimeoutChecker
    patched = stop_aware_timeout_checker(original, stop)
    trainer_module.TimeoutChecker = patched
    try:
        yield patched
    finally:
        trainer_module.TimeoutChecker = original


def slurm_deadline(env: Mapping[str, str] | None = None) -> float | None:
    """Allocation end minus ``$HOLDERPO_SLURM_SAVE_MARGIN_S`` (seconds) when that variable is set, else None."""
    env = os.environ if env is None else env
    raw = env.get(SAVE_MARGIN_ENV, "").strip()
    if not raw:
        return None
    try:
        margin = float(raw)
    except ValueError:
        margin = -1.0
    if not margin >= 0:
        raise ConfigError(SAVE_MARGIN_ENV, f"must be a number of seconds >= 0, got {raw!r}")
    from holder_nemo.nemo_rl.slurm_time import slurm_job_end_time

    end = slurm_job_end_time(env)
    if end is None:
        print(f"holder_nemo: {SAVE_MARGIN_ENV} is set but no Slurm job end time was found", file=sys.stderr)
        return None
    return end - margin


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
        from holder_nemo.nemo_rl.resume import write_completed_marker

        write_completed_marker(Path(checkpointing["checkpoint_dir"]))
    return EXIT_COMPLETED
