"""The time budgets of the Slurm entry that runs a recipe, read from ``slurm/*.sh`` and ``slurm/lib/*.sh``.

The entry's ``#SBATCH --time`` and ``--signal=B:USR1@<margin>``, its ``HOLDERPO_CKPT_TIMEOUT_S`` default, and the
libraries' ``HOLDERPO_MAX_RESTARTS`` (common.sh) and ``HOLDERPO_SAVE_MARGIN_S`` (nemo_rl.sh, NeMo RL entries only)
defaults, each overridden by the variable sbatch would pass on from the environment (``SBATCH_TIMELIMIT``,
``SBATCH_SIGNAL``, ``HOLDERPO_*``). Reading the scripts keeps the figures in one place: the scripts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SLURM_DIR = Path(__file__).resolve().parents[2] / "slurm"


@dataclass(frozen=True)
class SlurmBudget:
    """Seconds an entry allows; ``save_margin_s`` is None for the CPU entry (no driver deadline of its own)."""

    entry: str
    time_limit_s: int
    signal_margin_s: int
    ckpt_timeout_s: int
    max_restarts: int
    save_margin_s: int | None
    matched: bool  # the entry runs this very recipe (else: the entry with the same node count)


def parse_slurm_time(text: str) -> int:
    """Slurm's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) to seconds."""
    days, _, rest = text.strip().rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, [*parts, 0][:2]
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def format_slurm_time(seconds: float) -> str:
    """Seconds (rounded up to a minute) as ``D-HH:MM:SS`` (``HH:MM:SS`` under a day)."""
    total = int(-(-max(0.0, seconds) // 60) * 60)
    days, rest = divmod(total, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:00"
    return f"{days}-{clock}" if days else clock


def _default(text: str, variable: str) -> int | None:
    match = re.search(rf"^\s*{variable}=\$\{{{variable}:-(\d+)\}}", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _sbatch(text: str, option: str) -> str | None:
    match = re.search(rf"^#SBATCH\s+--{option}=(\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


def _entry_recipe(text: str) -> str | None:
    """The recipe file name an entry runs: ``hp_run_nemo_rl NAME`` or the smoke entry's ``HOLDERPO_RECIPE`` default."""
    match = re.search(r"^hp_run_nemo_rl\s+(\S+\.yaml)", text, re.MULTILINE) or re.search(
        r"HOLDERPO_RECIPE:-[^}]*/recipes/([^}/]+\.yaml)\}", text
    )
    return match.group(1) if match else None


def find_entry(recipe: str, nodes: int, nemo_rl: bool) -> tuple[Path, bool] | None:
    """The entry that runs ``recipe`` (matched), else the first entry of the same kind (NeMo RL or CPU) whose
    ``#SBATCH --nodes`` equals ``nodes``; None when there is none."""
    entries = sorted(SLURM_DIR.glob("*.sh"))
    name = Path(recipe).name
    for path in entries:
        if _entry_recipe(path.read_text()) == name:
            return path, True
    for path in entries:
        text = path.read_text()
        if ("hp_run_nemo_rl" in text) == nemo_rl and _sbatch(text, "nodes") == str(nodes):
            return path, False
    return None


def slurm_budget(entry: Path, matched: bool = True, env: Mapping[str, str] | None = None) -> SlurmBudget:
    """The budgets of ``entry`` as a job submitted from an environment ``env`` (default ``os.environ``) gets them."""
    env = os.environ if env is None else env
    text = entry.read_text()
    lib = entry.parent / "lib"
    common = (lib / "common.sh").read_text()
    nemo_rl = "hp_run_nemo_rl" in text
    signal = env.get("SBATCH_SIGNAL") or _sbatch(text, "signal") or ""
    margin = re.search(r"@(\d+)$", signal)

    def setting(variable: str, *texts: str) -> int | None:
        raw = env.get(variable, "").strip()
        if raw.isdigit():
            return int(raw)
        return next((v for v in (_default(t, variable) for t in texts) if v is not None), None)

    save_margin = setting("HOLDERPO_SAVE_MARGIN_S", (lib / "nemo_rl.sh").read_text()) if nemo_rl else None
    return SlurmBudget(
        entry=f"slurm/{entry.name}",
        time_limit_s=parse_slurm_time(env.get("SBATCH_TIMELIMIT") or _sbatch(text, "time") or "0"),
        signal_margin_s=int(margin.group(1)) if margin else 0,
        ckpt_timeout_s=setting("HOLDERPO_CKPT_TIMEOUT_S", text, common) or 0,
        max_restarts=setting("HOLDERPO_MAX_RESTARTS", common) or 0,
        save_margin_s=save_margin,
        matched=matched,
    )
