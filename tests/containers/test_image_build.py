"""containers/Dockerfile built for real, FROM the local stand-in of the NGC NeMo RL v0.7.0 image (``images.py``).

Real: Docker (Debian's docker.io, our own daemon), the Debian base (debootstrap), the stand-in's NGC layout,
``containers/Dockerfile`` and ``containers/install_holder_nemo.sh`` run by the build (install, then the import checks
of the driver venv and of every Ray worker venv), ``holderpo`` inside the image. Stand-in, and why: the NGC image
itself (no registry here); its driver venv has no torch (PyPI has no CPU torch for Python 3.13), so the install
script's driver check is told so by the base (``HOLDER_NEMO_CHECK_DRIVER_MODULES``); the torch code runs in the
worker venv (Python 3.11, CPU torch).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import images
import pytest

pytestmark = [pytest.mark.container, pytest.mark.slow]
WORKER_VENV = "/opt/ray_venvs/nemo_rl.models.policy.workers.dtensor_policy_worker_v2.DTensorPolicyWorkerV2"


def run_in(docker: images.Docker, tag: str, *command: str) -> str:
    proc = docker.run("run", "--rm", "--network=none", tag, *command, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_standin_has_the_ngc_layout(docker: images.Docker, standin_image: str, nemo_rl_tree: Path | None) -> None:
    script = (
        "python --version; command -v python ray uv; ls /opt/ray_venvs; "
        f"{WORKER_VENV}/bin/python -c 'import sys, torch; print(sys.version.split()[0], torch.__version__)'; "
        "grep -E '^(MAJOR|MINOR|PATCH)' /opt/nemo-rl/nemo_rl/package_info.py; echo $NEMO_RL_VENV_DIR"
    )
    out = run_in(docker, standin_image, "bash", "-c", script)
    lines = out.splitlines()
    assert lines[0].startswith("Python 3.13."), out
    venv, test_bin = "/opt/nemo_rl_venv/bin", "/usr/local/holderpo-test/bin"
    assert lines[1:4] == [f"{venv}/python", f"{test_bin}/ray", f"{venv}/uv"]
    assert Path(WORKER_VENV).name in lines[4] and lines[5].startswith("3.11.") and lines[5].endswith("2.13.0+cpu")
    assert lines[6:9] == ["MAJOR = 0", "MINOR = 7", "PATCH = 0"] and lines[9] == "/opt/ray_venvs"
    if nemo_rl_tree is not None:
        ray_sub = run_in(docker, standin_image, "sha256sum", "/opt/nemo-rl/ray.sub").split()[0]
        assert ray_sub == hashlib.sha256((nemo_rl_tree / "ray.sub").read_bytes()).hexdigest()


def test_dockerfile_builds_and_its_install_script_checks_every_venv(
    docker: images.Docker, holder_nemo_image: tuple[str, Path]
) -> None:
    tag, log = holder_nemo_image
    text = log.read_text()
    assert "/opt/nemo_rl_venv/bin/python imports holder_nemo.cli holder_nemo.run_control ray" in text
    assert f"{WORKER_VENV}/bin/python imports holder_nemo.nemo_rl.loss" in text
    labels = json.loads(docker.run("image", "inspect", "-f", "{{json .Config.Labels}}", tag).stdout)
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.base.name"].startswith("holderpo-test/nemo-rl-standin:v0.7.0")
    assert len(labels["org.opencontainers.image.revision"]) == 40
    # The driver venv (Python 3.13) has holder_nemo installed (editable, no deps) and its `holderpo` command.
    probe = "holderpo --version; python -c 'import holder_nemo; print(holder_nemo.__file__)'"
    out = run_in(docker, tag, "bash", "-c", probe)
    assert out.split() == ["0.1.0", "/opt/holder_nemo/holder_nemo/__init__.py"], out


def test_recipe_check_inside_the_image(docker: images.Docker, holder_nemo_image: tuple[str, Path]) -> None:
    """`holderpo recipe check` of the 7B recipe in the image, with the image's holder_nemo (PYTHONPATH) in the
    torch-carrying worker venv (nemo_rl is not importable in the stand-in: NeMo RL's MasterConfig is skipped)."""
    tag, _ = holder_nemo_image
    out = run_in(docker, tag, f"{WORKER_VENV}/bin/python", "-m", "holder_nemo.cli", "recipe", "check",
                 "/opt/holder_nemo/recipes/holderpo_qwen2.5-math-7b.yaml")  # fmt: skip
    assert "Qwen/Qwen2.5-Math-7B" in out and "skipped (nemo_rl is not importable here)" in out, out
