"""Speed and size of the container path (docs/performance.md, "The container path"): image build, enroot import,
bring-up per attempt, bytes unpacked per node.

    python benchmarks/bench_container_path.py [--cold] [--no-import]

Builds (or reuses) the container tier's images with ``tests/containers/images.py`` and prints each step's time and
each product's size; ``--cold`` builds everything from nothing in a fresh cache (its own dockerd), as CI does on a
new machine, and removes that cache afterwards. The per-attempt figures of a Slurm job under pyxis (bring-up, bytes
unpacked per node) are recorded by ``tests/containers/test_pyxis_entries.py`` in ``<cache>/tier.json`` and printed
when present.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "containers"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="build from nothing in a fresh cache (then remove it)")
    parser.add_argument("--no-import", action="store_true", help="stop after the Docker build (what CI runs)")
    args = parser.parse_args(argv)
    cold = Path(tempfile.mkdtemp(prefix="holderpo-cold-", dir="/var/tmp")) if args.cold else None
    if cold:
        os.environ["HOLDERPO_TEST_CONTAINER_CACHE"] = str(cold)
    import images  # reads HOLDERPO_TEST_CONTAINER_CACHE

    problem = images.missing_tools()
    if problem:
        print(f"cannot measure: {problem}")
        return 1
    tree = os.environ.get("HOLDERPO_TEST_NEMO_RL_HOME")
    start = time.monotonic()
    try:
        with images.docker_daemon(images.CACHE) as docker:
            standin = images.standin_image(docker, Path(tree) if tree else None, images.CACHE)
            tag, _ = images.holder_nemo_image(docker, standin, images.CACHE)
            if shutil.which("enroot") and not args.no_import:
                images.enroot_import(docker, tag, images.CACHE)
            total = time.monotonic() - start
            report = {"seconds": docker.timings.seconds, "bytes": docker.timings.sizes, "total_s": round(total, 1)}
            tier = Path("/var/tmp/holderpo-test-containers/tier.json")
            if tier.exists():
                report["tier (last run of test_pyxis_entries.py)"] = json.loads(tier.read_text())
            print(json.dumps(report, indent=1))
    finally:
        if cold:
            shutil.rmtree(cold, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
