"""``python driver.py TRACE.json -- <run_grpo arguments>``: our real entry point on NeMo RL's real driver code.

Installs the fake actors (``fake_actors.py``: the only stand-ins), then calls
``holder_nemo.nemo_rl.run_grpo.main`` exactly as the container would, connecting to the local Ray cluster named by
``RAY_ADDRESS`` (started by the test on 127.0.0.1 with fake GPU resources, as ``ray.sub`` starts one with real
ones). Writes the stand-ins' trace as JSON and exits with ``main``'s exit code.

Trace points (``kill_points.event``) mark, besides the actors' own, what only the driver's process sees: the end of
``grpo.setup``, NeMo RL's ``validate``, ``CheckpointManager.finalize_checkpoint`` (saved, not yet renamed), each
``shutil.rmtree`` of its retention, and the completion marker. Wrapping them changes nothing they do; only when a
kill test aims at ``rmtree_partial`` does the rmtree first remove ``training_info.json`` (a state a SIGKILL during
NeMo RL's own rmtree can leave, since it deletes in directory order) before the driver is held for its SIGKILL.

``HOLDERPO_TEST_SKIP_RECIPE_CHECK=1`` disables the entry point's pre-flight copy of NeMo RL's start-up rules
(``holderpo recipe check``), so a test can show NeMo RL's own code rejecting what the copy rejects.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import traceback
import types
from pathlib import Path

from holder_nemo.nemo_rl import master_config, run_grpo

master_config.typed_dict_for_old_python()  # before NeMo RL's config TypedDicts are imported (Python < 3.12)
import fake_actors  # noqa: E402
import kill_points  # noqa: E402


def install_trace_points() -> None:
    """Trace points around NeMo RL's setup, validation, checkpoint rename and retention, and our completion marker."""
    from nemo_rl.algorithms import grpo
    from nemo_rl.utils import checkpoint

    from holder_nemo import run_control

    @functools.wraps(grpo.setup)
    def setup(*args, **kwargs):
        out = original_setup(*args, **kwargs)
        kill_points.event("setup_end")
        return out

    def validate(*args, **kwargs):
        kill_points.event("validate_begin", step=kwargs.get("step"))
        fake_actors.PHASE["name"] = "validation"
        try:
            metrics, timings = original_validate(*args, **kwargs)
        finally:
            fake_actors.PHASE["name"] = "train"
        kill_points.event("validate_end", step=kwargs.get("step"), metrics=metrics)
        return metrics, timings

    def finalize_checkpoint(self, checkpoint_path):
        kill_points.event("finalize_begin", step=int(Path(checkpoint_path).name.split("_")[-1]))
        return original_finalize(self, checkpoint_path)

    def rmtree(path, *args, **kwargs):
        if kill_points.kill_target("rmtree_partial") is not None:
            Path(path, "training_info.json").unlink(missing_ok=True)
        kill_points.event("rmtree_partial", directory=Path(path).name)
        return shutil.rmtree(path, *args, **kwargs)

    def write_completed_marker(checkpoint_dir):
        kill_points.event("completing")
        return original_marker(checkpoint_dir)

    original_validate, grpo.validate = grpo.validate, validate
    original_setup, grpo.setup = grpo.setup, setup
    original_finalize = checkpoint.CheckpointManager.finalize_checkpoint
    checkpoint.CheckpointManager.finalize_checkpoint = finalize_checkpoint
    checkpoint.shutil = types.SimpleNamespace(rmtree=rmtree)
    original_marker, run_control.write_completed_marker = run_control.write_completed_marker, write_completed_marker


def main() -> int:
    trace_path, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: driver.py TRACE.json -- <run_grpo arguments>"
    kill_points.event("driver_start")
    fake_actors.install()
    install_trace_points()
    if os.environ.get("HOLDERPO_TEST_SKIP_RECIPE_CHECK") == "1":
        # To show that NeMo RL's own code enforces a rule our pre-flight mirrors: run without the mirror.
        from holder_nemo.nemo_rl import preflight as checks

        checks.check_nemo_rl_recipe = lambda cfg, strict=False: (checks.Report(), None)
    code = 1
    try:
        code = run_grpo.main(argv)
    except BaseException as exc:  # a crash of NeMo RL or ours: record it, exit non-zero like the real driver
        traceback.print_exc()
        fake_actors.TRACE["exception"] = f"{type(exc).__name__}: {exc}"
        code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
    finally:
        with open(trace_path, "w") as f:
            json.dump({**fake_actors.TRACE, "exit_code": code}, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
