"""Resume never silently changes the run: compare the recipe a restart is given with the one the run was started with.

A restarted job (a Slurm requeue, a user rerunning the command) resumes from the newest checkpoint of its run
directory. If the recipe or the overrides changed in between (the p schedule, the number of steps, the optimizer,
the batch, the model, the loss, the parallel layout, the data), the resumed run would quietly become a different
run than the one its checkpoints and logs describe. ``check_resume_config`` compares the resolved recipe with the
stored one key by key and refuses any difference outside a short list of operational keys (logging, checkpoint
retention and cadence, worker counts), printing each key with both values, unless the user accepts the change
explicitly (``--accept-config-change``); an accepted change is recorded in the run directory's change log.

A run is what it computes, not where it is kept: the run directory's own location
(``checkpointing.checkpoint_dir``: the run was moved, or named ``relrun`` once and ``/abs/relrun`` or ``relrun/``
the next time) is not compared, and every other path (data files, a local model, ...) is compared after resolving
it, so one file spelt two ways is the same value.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holder_nemo.config.errors import ConfigError

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


@dataclass(frozen=True)
class ConfigChange:
    """One differing key: dotted ``key``, the ``stored`` value (the run's) and the ``current`` one (this launch's)."""

    key: str
    stored: Any
    current: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.stored!r} (stored) -> {self.current!r} (now)"


class ResumeConfigError(ConfigError):
    """The recipe differs from the run's stored one in keys that change the run: one problem per key (both values),
    between a line saying what differs and one saying how to proceed."""


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


def _is_path_key(key: str) -> bool:
    parts = key.split(".")
    return bool(_PATH_KEY.search(parts[-1])) and (parts[-1] != "name" or "tokenizer" in parts[:-1])


def resolved_path(value: str) -> str:
    """``value`` as an absolute, normalised path (``~`` expanded, relative to the working directory, symlinks
    followed): ``relrun``, ``./relrun/`` and ``$PWD/relrun`` are one path."""
    return os.path.realpath(os.path.expanduser(value))


def same_value(key: str, before: Any, after: Any) -> bool:
    """Equal values, or, under a path key, two strings naming the same path."""
    if before == after:
        return True
    if isinstance(before, str) and isinstance(after, str) and before and after and _is_path_key(key):
        return resolved_path(before) == resolved_path(after)
    return False


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
        if not same_value(key, before, after) and not _is_operational(key, ignored):
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

    Raises ``ResumeConfigError`` (listing every key with both values and how to proceed) when there are any and
    ``accept`` is false; returns them (possibly empty) otherwise. ``where`` names the stored recipe in messages.
    """
    changes = config_changes(stored, current, operational)
    if changes and not accept:
        raise ResumeConfigError(
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
