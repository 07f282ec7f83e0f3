"""Fixtures for the Slurm tests: one private local cluster per session (see ``local_slurm.py``), a second one
whose preemption is configured as docs/slurm.md asks a cluster admin to (``test_preemption.py``), and a third one
whose nodes a test kills (``test_nemo_rl_entry.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from local_slurm import LocalSlurm, PreemptionSettings, local_slurm, missing_binaries

# The preempting cluster's GraceTime: docs/slurm.md asks for more than HOLDERPO_CKPT_TIMEOUT_S + 60 s, and the
# preemption tests run with HOLDERPO_CKPT_TIMEOUT_S=30 (test_preemption.py).
PREEMPT_GRACE_S = 100
# The node-death cluster's SlurmdTimeout: how long slurmctld waits for a node that stopped answering before it marks
# it DOWN, which also ends the killed attempt's COMPLETING there (a requeued job starts again only then). Slurm's
# default, 300 s, would only make the test wait; a live slurmd answers a ping in well under a second.
NODE_DEATH_SLURMD_TIMEOUT_S = 30


def skip_without_slurm() -> None:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Slurm/munge not installed (missing {', '.join(missing)}); "
            "`apt-get install slurm-wlm munge` (done by .ci/run) to run the real-cluster tests"
        )
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs its daemons as root (SlurmUser=root); run the tests as root")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """Slurm's default preemption (no GraceTime, no SlurmctldParameters, KillWait=5)."""
    skip_without_slurm()
    with local_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def preempting_slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """``SlurmctldParameters=preempt_send_user_signal``, ``GraceTime`` on ``cpu`` and ``gpu``, ``KillWait=30``,
    ``PreemptMode=REQUEUE``: the settings docs/slurm.md gives a cluster admin. The CPU node and 2 GPU nodes."""
    skip_without_slurm()
    settings = PreemptionSettings(grace_time=PREEMPT_GRACE_S, send_user_signal=True, kill_wait=30)
    with local_slurm(tmp_path_factory.mktemp("slurm-preempt"), gpu_nodes=2, preemption=settings) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def node_death_slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """Slurm's defaults but ``SlurmdTimeout`` (``NODE_DEATH_SLURMD_TIMEOUT_S``): a cluster of its own, so that a node
    killed by a test (``LocalSlurm.kill_node``) never touches the session's cluster. The 4 GPU nodes: a 2-node job,
    its lost node excluded, still fits next to the dead one."""
    skip_without_slurm()
    base = tmp_path_factory.mktemp("slurm-node-death")
    with local_slurm(base, slurmd_timeout=NODE_DEATH_SLURMD_TIMEOUT_S) as cluster:
        yield cluster
