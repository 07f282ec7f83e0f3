"""``holderpo data prepare NAME OUT_DIR``: training / evaluation sets as local JSONL.

NAME is one of math_lvl3to5 (training), aime24, amc, math500, minerva, olympiadbench, aime25, or ``all``;
``alfworld`` is handed to ``holder_nemo.alfworld.data`` (the ALFWorld text games).

Evaluation sets come by default from the HölderPO authors' evaluation suite (``--source suite``: the Arrow files of
understand-r1-zero's ``datasets/evaluation_suite`` at a pinned commit, downloaded from GitHub or read from a local
copy with ``--from-dir``; rows kept as stored, including Minerva's alternative answers). ``--source hub`` takes the
public Hugging Face copies instead (``datasets`` package, or ``--from-file`` with a local export), normalised to
``{"problem", "answer"}``; aime25 and the training set exist only there. Row counts must match the paper unless
--allow-count-mismatch (Hub only). Exit status: 0 ok, 1 data error, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from holder_nemo.data.normalize import DataError
from holder_nemo.data.sources import ALL_NAMES, SPECS
from holder_nemo.data.suite import SUITE, SUITE_COMMIT, SUITE_REPO


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="holderpo data", description="Prepare training and evaluation data.")
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser(
        "prepare",
        help="write OUT_DIR/<name>.jsonl ({problem, answer} per line); alfworld: the ALFWorld games",
        epilog="alfworld: the ALFWorld text games (paper Table 3) under OUT_DIR, for the ALFWorld recipe; its own "
        "options: holderpo data prepare alfworld --help",
    )
    # main() hands `alfworld` to its own preparer before this parser runs; it is listed so --help shows it
    prep.add_argument("name", choices=[*ALL_NAMES, "alfworld", "all"], help="dataset to prepare, or all of them")
    prep.add_argument("out_dir", help="output directory (the recipes read $HOLDERPO_DATA_DIR, default ./data)")
    prep.add_argument(
        "--source",
        choices=("suite", "hub"),
        help="suite: the authors' evaluation suite (default for the five paper benchmarks); hub: Hugging Face copies",
    )
    prep.add_argument("--from-dir", help="suite: a local copy of understand-r1-zero's datasets/evaluation_suite")
    prep.add_argument("--from-file", help="hub: normalise a local export of the upstream split (.jsonl/.json/.parquet)")
    prep.add_argument("--allow-count-mismatch", action="store_true", help="hub: write even if the row count differs")
    sub.add_parser("list", help="print the sources, splits and expected row counts")
    return parser


def _print_sources() -> None:
    """``holderpo data list``: every dataset, where it comes from and its expected row count."""
    for split in SUITE.values():
        where = f"{SUITE_REPO}@{SUITE_COMMIT[:8]} datasets/evaluation_suite/{split.split}"
        print(f"{split.name:<14} eval  {SPECS[split.name].expected_rows:>5} rows  {where} (default source)")
    for spec in SPECS.values():
        where = spec.repo_id + (f" [{', '.join(c for c in spec.configs if c)}]" if spec.configs != (None,) else "")
        where += f" {spec.data_files}" if spec.data_files else ""
        source = "--source hub" if spec.name in SUITE else "only source"
        print(f"{spec.name:<14} {spec.role:<5} {spec.expected_rows:>5} rows  {where} split={spec.split} ({source})")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["prepare", "alfworld"]:  # the ALFWorld games have their own preparer (holder_nemo.alfworld)
        from holder_nemo.alfworld.data import main as prepare_alfworld

        return int(prepare_alfworld(argv[2:]) or 0)
    args = _parser().parse_args(argv)
    if args.action == "list":
        _print_sources()
        return 0

    from holder_nemo.data.prepare import prepare, prepare_suite, read_local_rows

    if args.name == "alfworld":  # reached only with options before the name, which the ALFWorld preparer lacks
        print("error: alfworld takes OUT_DIR and --force only: holderpo data prepare alfworld OUT_DIR", file=sys.stderr)
        return 2

    if args.from_file and args.name == "all":
        print("error: --from-file needs one dataset NAME, not 'all'", file=sys.stderr)
        return 2
    if args.source == "suite" and args.from_file:
        print("error: --from-file is a Hugging Face export (--source hub); the suite reads --from-dir", file=sys.stderr)
        return 2
    if args.source == "suite" and args.name not in (*SUITE, "all"):
        print(
            f"error: {args.name} is not in the authors' suite ({', '.join(SUITE)}); use --source hub", file=sys.stderr
        )
        return 2
    if args.from_dir and (args.source == "hub" or args.from_file):
        print("error: --from-dir is a copy of the authors' suite (--source suite)", file=sys.stderr)
        return 2
    default_source = "hub" if args.from_file else "suite"
    names = ALL_NAMES if args.name == "all" else (args.name,)
    failures = 0
    for name in names:
        try:
            if name in SUITE and (args.source or default_source) == "suite":
                entry = prepare_suite(name, args.out_dir, from_dir=args.from_dir)
            elif args.from_file:
                rows = read_local_rows(args.from_file)
                entry = prepare(
                    name,
                    args.out_dir,
                    rows=rows,
                    source=f"file:{args.from_file}",
                    check_count=not args.allow_count_mismatch,
                )
            else:
                entry = prepare(name, args.out_dir, check_count=not args.allow_count_mismatch)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        extra = f", {entry['empty_answers']} without an answer" if entry["empty_answers"] else ""
        status = "" if entry["rows"] == entry["expected_rows"] else f" (expected {entry['expected_rows']})"
        print(f"{name}: {entry['rows']} rows{status}{extra} -> {args.out_dir}/{entry['file']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
