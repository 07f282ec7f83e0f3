"""Results table in the paper's layout (benchmarks as columns, unweighted average last) as markdown and JSON."""

from __future__ import annotations

from math import comb
from typing import Any

from holder_nemo.eval.settings import BENCHMARKS


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` >= ``k`` samples (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def markdown_table(label: str, per_benchmark: dict[str, dict[str, Any]], average: float) -> str:
    """Two-row table: scores in percent (1 decimal, as in the paper), then the counts behind them."""
    names = list(per_benchmark)
    titles = [BENCHMARKS[b] + ("†" if per_benchmark[b]["k"] > 1 else "") for b in names]  # †: Pass@k, k > 1
    lines = [
        "| Model | " + " | ".join(titles) + " | Avg. |",
        "|---|" + "---|" * (len(names) + 1),
        f"| {label} | " + " | ".join(f"{per_benchmark[b]['score']:.1f}" for b in names) + f" | {average:.1f} |",
        "| (correct / total) | " + " | ".join(per_benchmark[b]["count"] for b in names) + " | |",
    ]
    notes = [f"Pass@{per_benchmark[b]['k']}" for b in names if per_benchmark[b]["k"] > 1]
    metric_note = "Pass@1" + (f"; † = {notes[0]}" if notes else "")
    truncated = sum(per_benchmark[b]["num_truncated"] for b in names)
    samples = sum(per_benchmark[b]["num_samples"] for b in names)
    lines += [
        "",
        f"{metric_note}. {truncated} of {samples} generations hit the token limit (graded as they are, as in the "
        "authors' evaluation).",
    ]
    return "\n".join(lines) + "\n"
