"""Configuration errors that stay structured until they are printed: ``(key, message)`` pairs.

The model is torchtune's ``ConfigError`` (one exception carrying every problem found): here each problem is a pair of
a *key* (a dotted recipe key such as ``loss_fn.holder.clip_mode``, a place in a file such as ``recipes/x.yaml:12``,
or a command-line option) and a *message* saying what is allowed or what to do. Nothing re-parses a formatted string:
validators raise ``ConfigError``, the schemas convert pydantic's errors with ``problems_from_pydantic``, the recipe
rules collect ``Finding``s in a ``Report``, and the command line prints each pair as one line.

Exit codes of every ``holderpo`` command and of the NeMo RL entry point: 0 done, 1 a failure while running (a crash,
a download that failed), 2 bad input (a recipe, an override, an argument, a path: ``EXIT_BAD_INPUT``), 75 stopped on
request with a checkpoint (rerun to resume); ``run_grpo`` also 3 (no usable NeMo RL).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class ConfigError(ValueError):
    """Invalid configuration: ``problems`` holds ``(key, message)`` pairs, one per problem.

    ``ConfigError("grpo.seed", "must be >= 0, got -1")`` for one problem, ``ConfigError([(key, message), ...])``
    for several. Raised inside a pydantic validator it keeps its keys (``problems_from_pydantic`` prefixes them with
    the validator's location).
    """

    def __init__(self, key_or_problems: str | Iterable[tuple[str, str]], message: str = "") -> None:
        if isinstance(key_or_problems, str):
            problems = [(key_or_problems, message)]
        else:
            problems = [(str(key), str(text)) for key, text in key_or_problems]
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{key}: {message}" if key else message for key, message in self.problems)


def print_problems(prog: str, exc: ConfigError) -> int:
    """Print each problem of ``exc`` as one line ``prog: key: message`` on stderr; returns ``EXIT_BAD_INPUT``."""
    for key, message in exc.problems:
        print(f"{prog}: {key}: {message}" if key else f"{prog}: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def make_run_dir(key: str, path: str | os.PathLike) -> Path:
    """Create the run directory a recipe names (``checkpointing.checkpoint_dir``) before any work, or raise a
    ``ConfigError`` naming ``key`` when it cannot be created or written (``/proc/...``, a path under a file)."""
    run_dir = Path(path)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            key, f"cannot create {str(run_dir)!r} ({exc.strerror}): choose a writable directory"
        ) from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(key, f"{str(run_dir)!r} is not writable: choose a writable directory")
    return run_dir


def output_file(option: str, path: str | os.PathLike) -> Path:
    """An output file named on the command line (``-o``): its directory must exist (a typo there should not end in
    a plotting library's traceback after the work is done); ``ConfigError`` naming ``option`` otherwise."""
    out = Path(path)
    if not out.parent.is_dir():
        raise ConfigError(option, f"directory {str(out.parent)!r} does not exist: create it or choose another path")
    if out.is_dir():
        raise ConfigError(option, f"{str(out)!r} is a directory: give a file name such as {str(out / 'figure.png')!r}")
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def problems_from_pydantic(exc: Any, prefix: str = "", unknown_hint: str = "") -> list[tuple[str, str]]:
    """The errors of a pydantic ``ValidationError`` as ``(dotted key, message)`` pairs under ``prefix``.

    A ``ConfigError`` raised by a validator keeps its own keys (relative to where it was raised); a missing key says
    so; an unknown key says so (plus ``unknown_hint``); any other error quotes the offending value, shortened, and
    never a whole section (a cross-field validator's input is the section itself).
    """
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        key = ".".join(part for part in (prefix, *loc) if part)
        raised = (err.get("ctx") or {}).get("error")
        if isinstance(raised, ConfigError):
            problems += [(".".join(p for p in (key, k) if p), m) for k, m in raised.problems]
        elif err.get("type") == "missing":
            problems.append((key, "required key is missing"))
        elif err.get("type") == "extra_forbidden":
            problems.append((key, "unknown key" + (f" ({unknown_hint})" if unknown_hint else "")))
        else:
            message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            value = err.get("input")
            scalar = value is None or isinstance(value, bool | int | float | str)
            problems.append((key, f"{message} (got {_short(value)})" if scalar else message))
    return problems


@dataclass(frozen=True)
class Finding:
    """One problem of a recipe rule: ``level`` "error" or "warning", the dotted ``key`` and the ``message``."""

    level: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.key}: {self.message}"


@dataclass
class Report:
    """What the recipe rules found (``holderpo recipe check`` and the NeMo RL entry point's pre-flight)."""

    findings: list[Finding] = field(default_factory=list)

    def error(self, key: str, message: str) -> None:
        self.findings.append(Finding("error", key, message))

    def warn(self, key: str, message: str) -> None:
        self.findings.append(Finding("warning", key, message))

    def add(self, problems: Iterable[tuple[str, str]], level: str = "error") -> None:
        self.findings += [Finding(level, key, message) for key, message in problems]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_errors(self) -> None:
        """Raise the errors as one ``ConfigError`` (nothing when there are none)."""
        if self.errors:
            raise ConfigError([(f.key, f.message) for f in self.errors])
