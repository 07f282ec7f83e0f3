"""Trace points of the driver-contract tier: a durable event log, and a place to hold the driver for a SIGKILL.

``event(name, **fields)`` appends one JSON line ``{"event": name, "pid": ..., **fields}`` to the file named by
``$HOLDERPO_TEST_EVENTS`` with a single ``O_APPEND`` write, so every event before a ``kill -9`` is on disk (the
driver's JSON trace, written at exit, is lost with the process). When the event matches ``$HOLDERPO_TEST_KILL_AT``
(JSON: an event name and field values), the line is written with ``"held": true`` and the driver sleeps there until
the test, which watches the log, sends it SIGKILL: the kill lands exactly at that moment (mid-step, mid-save,
between save and rename, ...), from outside, as a node failure or ``scancel`` escalation would.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Kill:
    """How a test ends one launch with SIGKILL from outside (``kill -9`` of the driver process):

    * ``at``: a trace point (``{"event": name, field: value, ..., "n": k-th occurrence}``); the driver holds there
      until killed, so the kill lands exactly at that moment;
    * ``after_events``: once the launch has logged that many events, ``delay`` seconds later (between trace points);
    * ``after_s``: that many seconds after the launch (imports, Ray, ``grpo.setup``).
    """

    at: dict | None = None
    after_events: int | None = None
    after_s: float | None = None
    delay: float = 0.0


EVENTS_ENV, KILL_AT_ENV = "HOLDERPO_TEST_EVENTS", "HOLDERPO_TEST_KILL_AT"
_KILL_AT: dict[str, Any] | None = json.loads(os.environ[KILL_AT_ENV]) if os.environ.get(KILL_AT_ENV) else None
_COUNTS: dict[str, int] = {}


def _plain(value: Any) -> Any:
    """Tensors and numpy values as plain numbers or lists (validation metrics hold some)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def kill_target(name: str) -> dict[str, Any] | None:
    """The kill spec when it names this event (callers that must prepare a partial state first ask this)."""
    return _KILL_AT if _KILL_AT is not None and _KILL_AT.get("event") == name else None


def event(name: str, **fields: Any) -> None:
    """Record ``name`` (fields must be JSON-serialisable); hold here for the test's SIGKILL when it is the target.

    A kill spec matches an event of its name whose fields have the spec's values; ``n`` (default 1) picks the n-th
    such event of this driver process.
    """
    path = os.environ.get(EVENTS_ENV)
    target = kill_target(name)
    held = False
    if target is not None and all(fields.get(k) == v for k, v in target.items() if k not in ("event", "n")):
        _COUNTS[name] = _COUNTS.get(name, 0) + 1
        held = _COUNTS[name] == target.get("n", 1)
    if path:
        record = {"event": name, "pid": os.getpid(), "time": time.time(), **fields, **({"held": True} if held else {})}
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record, sort_keys=True, default=_plain) + "\n").encode())
        finally:
            os.close(fd)
    while held:  # the test kills this process; a forgotten hold fails the test by its timeout
        time.sleep(1)
