"""Fixtures of the container tier (marker ``container``): a Docker daemon, the images (``images.py``), and local
Slurm clusters running the real pyxis SPANK plugin (``tests/slurm/local_slurm.py`` with ``PyxisSettings``).

Everything skips with its reason where a piece is missing: Docker/debootstrap (Debian packages, installed by
``.ci/run``), enroot and pyxis (built from fetched sources, so never on CI), Slurm/munge, root.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slurm"))  # local_slurm, slurm_runs

import images
from local_slurm import LocalSlurm, PyxisSettings, local_slurm, missing_binaries, missing_pyxis

NEMO_RL_HOME_ENV = "HOLDERPO_TEST_NEMO_RL_HOME"


@pytest.fixture(scope="session")
def docker() -> Iterator[images.Docker]:
    problem = images.missing_tools()
    if problem:
        pytest.skip(problem)
    with images.docker_daemon() as daemon:
        yield daemon
    daemon.timings.save(images.CACHE / "timings-last-session.json")


@pytest.fixture(scope="session")
def nemo_rl_tree() -> Path | None:
    """The fetched NeMo RL v0.7.0 tree the stand-in image carries in /opt/nemo-rl (None: no ray.sub in the image)."""
    home = os.environ.get(NEMO_RL_HOME_ENV)
    return Path(home) if home and (Path(home) / "ray.sub").is_file() else None


@pytest.fixture(scope="session")
def standin_image(docker: images.Docker, nemo_rl_tree: Path | None) -> str:
    return images.standin_image(docker, nemo_rl_tree)


@pytest.fixture(scope="session")
def holder_nemo_image(docker: images.Docker, standin_image: str) -> tuple[str, Path]:
    """containers/Dockerfile built FROM the stand-in: (tag, build log)."""
    return images.holder_nemo_image(docker, standin_image)


@pytest.fixture(scope="session")
def holder_nemo_sqsh(docker: images.Docker, holder_nemo_image: tuple[str, Path]) -> Path:
    problem = missing_pyxis()
    if problem:
        pytest.skip(problem)
    return images.enroot_import(docker, holder_nemo_image[0])


def _cluster_problem() -> str | None:
    missing = missing_binaries()
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)})"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root; run the tests as root"
    return missing_pyxis()


@pytest.fixture(scope="session")
def pyxis_clusters(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., AbstractContextManager[LocalSlurm]]:
    """``pyxis_clusters(scope="job", gpu_nodes=2)``: a context manager starting a private cluster with pyxis (each
    node its own pyxis/enroot state; two at once must use different ``gpu_nodes`` names: ``pyxis_cluster`` holds
    ``hpx-gpu1..3``, so another cluster during the session takes ``hpx-gpu4``)."""
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)

    def start(scope: str = "job", gpu_nodes: int | tuple[str, ...] = 2) -> AbstractContextManager[LocalSlurm]:
        return local_slurm(tmp_path_factory.mktemp(f"pyxis-{scope}"), PyxisSettings(scope), gpu_nodes)

    return start


@pytest.fixture(scope="session")
def pyxis_cluster(pyxis_clusters: Callable[..., AbstractContextManager[LocalSlurm]]) -> Iterator[LocalSlurm]:
    """The tier's cluster: 3 nodes (hpx-gpu1..3), pyxis with container_scope=job. Its jobs take 2 nodes, so a job
    that loses one has a spare to be requeued onto with the lost node excluded."""
    with pyxis_clusters("job", 3) as cluster:
        yield cluster
