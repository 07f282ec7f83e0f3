"""Time limits for grading steps that can run long (sympy simplification, math-verify parsing).

Python can only interrupt a computation with a signal, and only the main thread may install one (``holderpo eval``
grades on its main thread, and so does a Ray actor's default executor). Elsewhere the limits are off: the grading
then runs to completion. A limit that fires is a wrong answer, as in the authors' grader.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class GradingTimeout(BaseException):
    """A grading step ran past its limit. A BaseException so that the libraries' ``except Exception`` blocks do
    not swallow it half-way."""


def signals_available() -> bool:
    """True on the main thread, where ``signal.setitimer`` and math-verify's own alarms work."""
    return threading.current_thread() is threading.main_thread()


def main_thread_seconds(seconds: int) -> int | None:
    """``seconds`` where alarms work, else None (math-verify's ``timeout_seconds`` / ``parsing_timeout`` convention)."""
    return seconds if signals_available() else None


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`GradingTimeout` in the body after ``seconds`` of wall time (no limit off the main thread)."""
    if seconds is None or not signals_available():
        yield
        return

    def _expire(signum: int, frame: object) -> None:
        raise GradingTimeout(f"grading step exceeded {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
