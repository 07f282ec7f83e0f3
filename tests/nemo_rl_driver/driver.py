"""``python driver.py TRACE.json -- <run_grpo arguments>``: our real entry point on NeMo RL's real driver code.

Installs the fake actors (``fake_actors.py``: the only stand-ins), then calls
``holder_nemo.nemo_rl.run_grpo.main`` exactly as the container would, connecting to the local Ray cluster named by
``RAY_ADDRESS`` (started by the test on 127.0.0.1 with fake GPU resources, as ``ray.sub`` starts one with real
ones). Writes the stand-ins' trace as JSON and exits with ``main``'s exit code.

``HOLDERPO_TEST_SKIP_RECIPE_CHECK=1`` disables the entry point's pre-flight copy of NeMo RL's start-up rules
(``holderpo recipe check``), so a test can show NeMo RL's own code rejecting what the copy rejects.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from holder_nemo.nemo_rl import master_config, run_grpo

master_config.typed_dict_for_old_python()  # before NeMo RL's config TypedDicts are imported (Python < 3.12)
import fake_actors  # noqa: E402


def main() -> int:
    trace_path, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: driver.py TRACE.json -- <run_grpo arguments>"
    fake_actors.install()
    if os.environ.get("HOLDERPO_TEST_SKIP_RECIPE_CHECK") == "1":
        # To show that NeMo RL's own code enforces a rule our pre-flight mirrors: run without the mirror.
        from holder_nemo.nemo_rl import recipe_checks as checks

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
