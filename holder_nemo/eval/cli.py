"""``holderpo eval MODEL_OR_CHECKPOINT [options]``: the paper's evaluation protocol on one model.

Settings are layered: EvalConfig defaults (the paper's Pass@1 protocol) < ``--preset`` < ``--config FILE.yaml``
< explicit flags < ``--set key=value`` (any EvalConfig field; the value is parsed as YAML).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from holder_nemo.config.errors import EXIT_BAD_INPUT, ConfigError, print_problems, problems_from_pydantic
from holder_nemo.config.loading import read_yaml
from holder_nemo.eval.benchmarks import BenchmarkError
from holder_nemo.eval.model_source import ModelSourceError
from holder_nemo.eval.settings import BENCHMARKS, PRESETS, EvalConfig

PROG = "holderpo eval"


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate a model with the HölderPO paper's protocol (qwen_math prompt, greedy, 4096 new "
        "tokens, Pass@1; the authors' grader on the last \\boxed{}). Writes results.md, results.json, "
        "generations.jsonl.",
    )
    parser.add_argument("model", help="Hugging Face model dir (or hub id), or a NeMo RL checkpoint step_N dir")
    parser.add_argument("--benchmarks", type=_csv, help=f"comma-separated, from {','.join(BENCHMARKS)}")
    parser.add_argument("--backend", choices=get_args(EvalConfig.model_fields["backend"].annotation))
    parser.add_argument(
        "--data-dir", type=Path, help="directory of <benchmark>.jsonl (default $HOLDERPO_DATA_DIR or ./data)"
    )
    parser.add_argument("--output-dir", type=Path, help="default: <model>/eval")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="paper: Table 2 columns; qwen3: Tables 6-7")
    parser.add_argument("--config", type=Path, help="YAML file of EvalConfig fields")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--n-samples", type=int)
    parser.add_argument("--pass-k-benchmarks", type=_csv, help="benchmarks scored Pass@k (e.g. aime25)")
    parser.add_argument("--pass-k", type=int)
    parser.add_argument("--tensor-parallel-size", "--tp", type=int, dest="tensor_parallel_size")
    parser.add_argument("--dtype", choices=get_args(EvalConfig.model_fields["dtype"].annotation))
    parser.add_argument("--limit", type=int, help="only the first N problems of each benchmark (smoke tests)")
    parser.add_argument("--base-model", help="base model of a NeMo RL checkpoint (default: its config.yaml)")
    parser.add_argument(
        "--hf-export-dir", type=Path, help="where a NeMo RL checkpoint is converted (default <step>/hf)"
    )
    parser.add_argument("--label", help="row label in the table (default: model directory name)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any EvalConfig field")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    return parser


def resolve_config(args: argparse.Namespace) -> EvalConfig:
    """Layer preset, config file, flags and --set over the defaults; raises ValidationError / ConfigError."""
    values: dict[str, Any] = {}
    if args.preset:
        values.update(PRESETS[args.preset])
    if args.config:
        values.update(read_yaml(Path(args.config)))  # the recipe loader's checks: one line naming file and line
    flag_fields = [
        "benchmarks", "backend", "data_dir", "output_dir", "max_new_tokens", "temperature", "n_samples",
        "pass_k_benchmarks", "pass_k", "tensor_parallel_size", "dtype", "limit", "base_model", "hf_export_dir",
    ]  # fmt: skip
    values.update({f: getattr(args, f) for f in flag_fields if getattr(args, f) is not None})
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expects KEY=VALUE, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError("--set", f"{item!r}: the value is not YAML ({str(exc).splitlines()[0]})") from None
    values["model"] = args.model
    return EvalConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        try:
            cfg = resolve_config(args)
        except ValidationError as exc:
            raise ConfigError(problems_from_pydantic(exc, unknown_hint="see `holderpo eval --help`")) from None
    except ConfigError as exc:
        return print_problems(PROG, exc)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    from holder_nemo.eval.runner import run_eval

    try:
        table, output_dir = run_eval(cfg, label=args.label)
    except (BenchmarkError, ModelSourceError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(table, end="")
    print(f"[eval] wrote {output_dir}/results.md, results.json, generations.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
