"""The container tier's images, built for real on this machine (docs/containers.md, "The container tier").

1. A Docker daemon of our own (Debian's ``docker.io``: ``dockerd --iptables=false --bridge=none``, its own socket
   and data root under ``CACHE``), started here and stopped afterwards; a daemon of ours already running (an earlier
   session's, same data root) is reused and left running.
2. A Debian bookworm base: ``debootstrap --variant=minbase`` from the Debian mirror, then ``docker import`` (no image
   registry is reachable).
3. The stand-in of the NGC NeMo RL v0.7.0 image, ``nemo_rl_standin/Dockerfile`` FROM that base: the NGC layout
   (``/opt/nemo-rl``, the driver venv ``/opt/nemo_rl_venv`` on Python 3.13, ``/opt/ray_venvs/*``), with wheels
   downloaded here by pip (PyPI and this machine's wheel indexes) and installed offline in the build.
4. ``containers/Dockerfile`` built FROM the stand-in (``--build-arg NEMO_RL_IMAGE``), its install/check script run in
   the build, exactly as for the NGC image.
5. ``enroot import dockerd://...`` of that image to a ``.sqsh``, which the tier gives pyxis as
   ``HOLDERPO_CONTAINER_IMAGE``.

Every product is cached under ``CACHE`` (``HOLDERPO_TEST_CONTAINER_CACHE``, default
``/var/tmp/holderpo-test-containers``) by a digest of its inputs, so a rerun with unchanged inputs reuses it and a
changed input (a holder_nemo file, the Dockerfile, the NeMo RL tree) rebuilds what depends on it. ``Timings``
records how long each step took when it ran, for docs/performance.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STANDIN_DIR = Path(__file__).with_name("nemo_rl_standin")
RAY_STAND_IN = REPO / "tests" / "slurm" / "stand_ins" / "ray"
CACHE = Path(os.environ.get("HOLDERPO_TEST_CONTAINER_CACHE", "/var/tmp/holderpo-test-containers"))
DEBIAN_MIRROR = os.environ.get("HOLDERPO_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PYTHON313 = Path(os.environ.get("HOLDERPO_TEST_PYTHON313", Path.home() / ".pyenv/versions/3.13.0/bin/python3.13"))
# What ray.sub and the entries run inside a container (bash, coreutils, grep/sed/awk and getent are in minbase),
# Debian's Python 3.11 for the worker venv, and the shared libraries of the copied CPython 3.13.
DEBIAN_PACKAGES = (
    "python3", "python3-venv", "procps", "hostname", "ca-certificates", "libssl3", "libffi8", "libsqlite3-0",
    "libbz2-1.0", "liblzma5", "zlib1g", "libreadline8", "libncursesw6", "libuuid1", "libgdbm6", "libexpat1",
)  # fmt: skip
# The driver venv (Python 3.13): Ray as NeMo RL v0.7.0 pins it, holder_nemo's torch-free dependencies, uv for the
# install script, and the editable build's backend (setuptools, wheel: uv installs offline from this wheelhouse).
DRIVER_REQUIREMENTS = (
    "ray[default]>=2.55.1", "numpy", "pyyaml>=6", "omegaconf>=2.3", "hydra-core>=1.3", "pydantic>=2.5", "uv",
    "setuptools>=68", "wheel",
)  # fmt: skip
# The worker venv (Debian's Python 3.11): the CPU torch and the rest of holder_nemo's dependencies, enough for
# `holderpo train`, the tests' CPU stand-in of the GPU training.
WORKER_REQUIREMENTS = (
    "torch==2.13.0", "numpy", "pyyaml>=6", "omegaconf>=2.3", "hydra-core>=1.3", "pydantic>=2.5", "transformers>=4.48",
    "math-verify>=0.7", "pylatexenc>=2.10,<3", "sympy>=1.12", "matplotlib>=3.7", "tqdm>=4.66",
)  # fmt: skip
# The files of this repository containers/Dockerfile copies into the image (containers/Dockerfile.dockerignore).
IMAGE_SOURCES = ("pyproject.toml", "README.md", "holder_nemo", "recipes", "containers")


def digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode() if not isinstance(part, bytes) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def tree_digest(paths: Iterable[Path], root: Path) -> str:
    """Digest of every file's relative path and content under ``paths`` (``__pycache__`` skipped)."""
    h = hashlib.sha256()
    for path in sorted(paths):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            h.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def missing_tools() -> str | None:
    """Why the Docker part cannot run here, or None."""
    if os.geteuid() != 0:
        return "the container tier runs dockerd, debootstrap and enroot as root; run the tests as root"
    missing = [name for name in ("dockerd", "debootstrap") if shutil.which(name) is None]
    if not docker_client():
        missing.append("docker")
    if missing:
        return f"{', '.join(missing)} not installed (`apt-get install docker.io debootstrap`)"
    if not PYTHON313.exists():
        return f"no CPython 3.13 at {PYTHON313} (HOLDERPO_TEST_PYTHON313): the stand-in's driver venv copies it"
    return None


def docker_client() -> str | None:
    """Debian's client next to its daemon (a newer client on PATH wants the buildx plugin for BuildKit)."""
    dockerd = shutil.which("dockerd")
    for candidate in ("/usr/bin/docker", dockerd and str(Path(dockerd).with_name("docker")), shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@dataclass
class Timings:
    """Seconds per step that actually ran (cached steps are absent), and sizes in bytes."""

    seconds: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - start, 1)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"seconds": self.seconds, "bytes": self.sizes}, indent=1) + "\n")


@dataclass
class Docker:
    client: str
    host: str
    timings: Timings = field(default_factory=Timings)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, check: bool = True, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.client, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              **kwargs)  # fmt: skip
        if check and proc.returncode:
            raise RuntimeError(f"docker {' '.join(args[:3])} ... -> {proc.returncode}\n{proc.stdout[-4000:]}\n"
                               f"{proc.stderr[-4000:]}")  # fmt: skip
        return proc

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def remove_other_tags(self, tag: str) -> None:
        """Untag earlier builds of ``tag``'s repository (their layers go once nothing else uses them)."""
        repository = tag.rsplit(":", 1)[0]
        tags = self.run("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
        for other in tags:
            if other != tag:
                self.run("rmi", other, check=False)

    def image_size(self, tag: str) -> int:
        return int(self.run("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())

    def build(self, tag: str, context: Path, dockerfile: Path, build_args: dict[str, str], log: Path) -> None:
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        proc = self.run("build", "--network=none", "--progress=plain", "-f", str(dockerfile), "-t", tag, *args,
                        str(context), check=False)  # fmt: skip
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            raise RuntimeError(f"docker build of {tag} failed ({log}):\n{(proc.stdout + proc.stderr)[-6000:]}")


@contextmanager
def docker_daemon(cache: Path = CACHE) -> Iterator[Docker]:
    """Our own dockerd (socket and data root under ``cache``); reused if one of ours already runs there."""
    cache.mkdir(parents=True, exist_ok=True)
    client = docker_client()
    assert client, "no docker client"
    sock, pidfile = cache / "docker.sock", cache / "dockerd.pid"
    docker = Docker(client, f"unix://{sock}")
    if sock.exists() and docker.run("info", check=False, timeout=30).returncode == 0:
        yield docker  # an earlier session's daemon on this data root: reuse it, leave it running
        return
    log = open(cache / "dockerd.log", "ab")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        ["dockerd", "--iptables=false", "--bridge=none", f"--data-root={cache / 'docker'}", f"--host={docker.host}",
         f"--pidfile={pidfile}", f"--exec-root={cache / 'exec'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 60
        while docker.run("info", check=False, timeout=30).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(cache / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield docker
    finally:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------------------------------- images
def debian_base(docker: Docker, cache: Path = CACHE) -> str:
    """``holderpo-test/debian-minbase:bookworm-<digest>``: debootstrap minbase + DEBIAN_PACKAGES, docker-imported."""
    tag = f"holderpo-test/debian-minbase:bookworm-{digest(DEBIAN_PACKAGES, DEBIAN_MIRROR)}"
    if docker.has_image(tag):
        return tag
    rootfs = cache / "work" / "debian-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    with docker.timings.step("debootstrap minbase"):
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", "bookworm", str(rootfs),
             DEBIAN_MIRROR], capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if proc.returncode:
            raise RuntimeError(f"debootstrap failed: {proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    with docker.timings.step("docker import of the base"):
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        docker.run("import", "--change", 'CMD ["/bin/bash"]', "-", tag, stdin=tar.stdout)
        tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    return tag


def wheelhouse(python: Path, requirements: tuple[str, ...], cache: Path, timings: Timings, name: str) -> Path:
    """Wheels for ``requirements`` and all their dependencies, for ``python`` (sdists built into wheels), and a
    requirements.txt naming the top-level ones: the stand-in's build installs from it with no index."""
    version = subprocess.run([str(python), "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    out = cache / "wheels" / f"{name}-{digest(requirements, version)}"
    if (out / "requirements.txt").exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with timings.step(f"pip download ({name})"):
        subprocess.run([str(python), "-m", "pip", "download", "-q", "-d", str(tmp), *requirements], check=True,
                       capture_output=True, timeout=1800)  # fmt: skip
        for sdist in [p for p in tmp.iterdir() if p.name.endswith((".tar.gz", ".zip"))]:
            subprocess.run([str(python), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), str(sdist)],
                           check=True, capture_output=True, timeout=600)  # fmt: skip
            sdist.unlink()
    (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _copy_python313(dest: Path) -> None:
    prefix = PYTHON313.resolve().parents[1]
    skip = shutil.ignore_patterns("__pycache__", "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo")
    shutil.copytree(prefix, dest, symlinks=True, ignore=skip)


def _nemo_rl_tree_copy(tree: Path | None, dest: Path) -> None:
    if tree is not None:
        shutil.copytree(tree, dest, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        return
    (dest / "nemo_rl").mkdir(parents=True)
    (dest / "nemo_rl" / "package_info.py").write_text("MAJOR = 0\nMINOR = 7\nPATCH = 0\n")


def nemo_rl_tree_identity(tree: Path | None) -> str:
    if tree is None:
        return "no tree"
    return tree_digest([tree / "ray.sub", tree / "nemo_rl" / "package_info.py", tree / "pyproject.toml"], tree)


def standin_image(docker: Docker, nemo_rl_tree: Path | None, cache: Path = CACHE) -> str:
    """The NGC NeMo RL v0.7.0 stand-in (``nemo_rl_standin/Dockerfile``), tagged by a digest of its inputs."""
    base = debian_base(docker, cache)
    driver = wheelhouse(PYTHON313, DRIVER_REQUIREMENTS, cache, docker.timings, "py313-driver")
    worker = wheelhouse(Path(sys.executable), WORKER_REQUIREMENTS, cache, docker.timings, "py311-worker")
    # Not RAY_STAND_IN: the image carries the copy made when it was built, and the tier mounts the checkout's
    # current one over it (test_pyxis_entries.py), so a change to it needs no new image.
    key = digest(base, driver.name, worker.name, nemo_rl_tree_identity(nemo_rl_tree), PYTHON313.resolve(),
                 tree_digest([STANDIN_DIR], REPO))  # fmt: skip
    tag = f"holderpo-test/nemo-rl-standin:v0.7.0-{key}"
    if docker.has_image(tag):
        return tag
    context = cache / "work" / "standin-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    with docker.timings.step("stand-in context (copy CPython 3.13, wheels, NeMo RL tree)"):
        _copy_python313(context / "python3.13")
        shutil.copytree(driver, context / "wheels313")
        shutil.copytree(worker, context / "wheels311")
        _nemo_rl_tree_copy(nemo_rl_tree, context / "nemo-rl")
        shutil.copy2(RAY_STAND_IN, context / "ray")
        shutil.copy2(STANDIN_DIR / "Dockerfile", context / "Dockerfile")
    with docker.timings.step("docker build of the NeMo RL stand-in"):
        docker.build(tag, context, context / "Dockerfile", {"BASE_IMAGE": base}, cache / "standin-build.log")
    shutil.rmtree(context, ignore_errors=True)
    docker.remove_other_tags(tag)
    docker.timings.sizes["stand-in image"] = docker.image_size(tag)
    return tag


def holder_nemo_image(docker: Docker, base: str, cache: Path = CACHE) -> tuple[str, Path]:
    """``containers/Dockerfile`` built for real FROM ``base`` (no extras: the ALFWorld one compiles and downloads);
    returns the tag and the build log (the install/check script's output is in it)."""
    sources = tree_digest([REPO / p for p in IMAGE_SOURCES], REPO)
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tag = f"holderpo-test/holder-nemo:0.1.0-{digest(base, sources)}"
    log = cache / f"holder-nemo-build-{tag.rsplit('-', 1)[1]}.log"
    if docker.has_image(tag) and log.exists():
        return tag, log
    with docker.timings.step("docker build of containers/Dockerfile"):
        docker.build(tag, REPO, REPO / "containers" / "Dockerfile",
                     {"NEMO_RL_IMAGE": base, "HOLDER_NEMO_EXTRAS": "", "GIT_SHA": sha or "unknown"}, log)  # fmt: skip
    docker.remove_other_tags(tag)
    docker.timings.sizes["holder_nemo image"] = docker.image_size(tag)
    return tag, log


def enroot_import(docker: Docker, tag: str, cache: Path = CACHE) -> Path:
    """``enroot import -o <cache>/images/<tag>.sqsh dockerd://<tag>`` (cached by tag)."""
    out = cache / "images" / (tag.replace("/", "+").replace(":", "+") + ".sqsh")
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.sqsh")
    tmp.unlink(missing_ok=True)
    # enroot asks the daemon through the docker client on PATH: Debian's, next to its daemon.
    env = {**docker.env, "PATH": f"{Path(docker.client).parent}:{os.environ['PATH']}",
           "ENROOT_TEMP_PATH": str(cache / "work"), "ENROOT_CACHE_PATH": str(cache / "enroot-cache")}  # fmt: skip
    (cache / "work").mkdir(parents=True, exist_ok=True)
    with docker.timings.step("enroot import dockerd://"):
        proc = subprocess.run(["enroot", "import", "-o", str(tmp), f"dockerd://{tag}"], env=env, capture_output=True,
                              text=True, timeout=1800)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"enroot import failed: {proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    tmp.rename(out)
    for stale in out.parent.glob(out.name.rsplit("-", 1)[0] + "-*.sqsh"):  # earlier builds of the same image
        if stale != out:
            stale.unlink()
    docker.timings.sizes["holder_nemo .sqsh"] = out.stat().st_size
    return out
