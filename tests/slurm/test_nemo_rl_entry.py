"""The NeMo RL entries (``slurm/holderpo_7b.sh``; 32B and ALFWorld share its library) on the local Slurm cluster,
through NeMo RL v0.7.0's real ``ray.sub``.

The ray.sub tests need a NeMo RL source tree (``HOLDERPO_TEST_NEMO_RL_HOME=/path/to/NeMo-RL`` at tag v0.7.0; skipped
with that reason where there is none, as on CI) and Ray with its dashboard (``ray[default]``) in the interpreter
running the tests or in ``HOLDERPO_TEST_RAY_PYTHON``.

Real: Slurm (2 "nodes" of the ``gpu`` partition, 8 fake GPUs each, each with its own loopback address and its own
``/tmp/ray``), the entry and its libraries, ``ray.sub`` itself (copied out of the tree by the entry's first job step,
as it is copied out of the image on a cluster), its head and worker steps, ``ray start``, the 2-node Ray cluster
they form, and ``holderpo train`` with its stop contract as the driver. Faked, and why:

* ``srun`` is ``stand_ins/srun``: parses the options as srun does, applies Slurm 26.05's GPU option rule, drops the
  pyxis (``--container-*``) and PMIx flags this cluster cannot honour and says so in the log, with each step's
  account and container name (no enroot/pyxis here; the real thing is ``tests/containers/test_pyxis_entries.py``);
* ``ray`` is ``stand_ins/ray``: each node's own loopback address for ``ray start``, and a ``ray stop`` of this
  node's Ray processes of the job only (the real one would kill every Ray process on this shared host);
* the GPU job: ``cpu_driver.py`` instead of ``python -m holder_nemo.nemo_rl.run_grpo`` (``HOLDERPO_DRIVER``, same
  arguments): it joins the Ray cluster and runs a task on each node, then runs ``holderpo train`` on CPU.

Every TCP/UDP socket of the job's processes is sampled during the runs: none may leave loopback.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from local_slurm import NODE_IPS, LocalSlurm, ensure_node_names_resolve, job_pids, job_sockets, off_loopback
from slurm_runs import (
    CPU_DRIVER,
    REPO,
    SLURM_DIR,
    TINY,
    attempt_dirs,
    newest_step,
    read_env_file,
    read_metrics,
    reproducible,
    resumed_step,
    uninterrupted_metrics,
    wait_final,
    wait_for,
    wait_requeued,
)

ENTRY = SLURM_DIR / "holderpo_7b.sh"
STAND_INS = Path(__file__).with_name("stand_ins")
NEMO_RL_HOME_ENV = "HOLDERPO_TEST_NEMO_RL_HOME"


def nemo_rl_tree() -> Path:
    home = os.environ.get(NEMO_RL_HOME_ENV)
    if not home:
        pytest.skip(f"no NeMo RL source tree: set {NEMO_RL_HOME_ENV} to a NeMo RL checkout at tag v0.7.0")
    if not (Path(home) / "ray.sub").is_file():
        pytest.skip(f"{NEMO_RL_HOME_ENV}={home} has no ray.sub")
    return Path(home)


def python_with_ray() -> Path:
    python = Path(os.environ.get("HOLDERPO_TEST_RAY_PYTHON", sys.executable))
    probe = subprocess.run([str(python), "-c", "import ray, aiohttp_cors, holder_nemo"], capture_output=True)
    if probe.returncode or not python.with_name("ray").exists():
        pytest.skip(f"{python} lacks ray[default] (ray.sub starts the dashboard) or holder_nemo; "
                    "pip install 'ray[default]' or set HOLDERPO_TEST_RAY_PYTHON")  # fmt: skip
    return python


def free_port_block(count: int) -> int:
    """First port of ``count`` consecutive free TCP ports, below Linux's ephemeral range. The blocks are tried from a
    random one on: Ray binds them only a minute or more after this pick, so two test runs on this shared host that
    both took the first free block would start their Ray heads on the same ports (seen: a driver that joined the
    other run's GCS, "WrongClusterID")."""
    blocks = list(range(20000, 32000 - count, 100))
    first = random.randrange(len(blocks))
    for base in blocks[first:] + blocks[:first]:
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port block")


def ray_sub_ports() -> dict[str, str]:
    """ray.sub's port settings, on a block of free ports (this host is shared; every "node" is on it)."""
    b = free_port_block(80)
    ports = {
        "PORT": b,
        "RAY_CLIENT_SERVER_PORT": b + 1,
        "DASHBOARD_PORT": b + 2,
        "DASHBOARD_AGENT_LISTEN_PORT": b + 3,
        "NODE_MANAGER_PORT": b + 5,
        "OBJECT_MANAGER_PORT": b + 7,
        "RUNTIME_ENV_AGENT_PORT": b + 9,
        "DASHBOARD_AGENT_GRPC_PORT": b + 11,
        "METRICS_EXPORT_PORT": b + 13,
        "MIN_WORKER_PORT": b + 20,
        "MAX_WORKER_PORT": b + 79,
    }  # fmt: skip  (ray.sub gives the head each per-node port + 1)
    return {name: str(port) for name, port in ports.items()}


def entry_env(cluster: LocalSlurm, tmp: Path, run_dir: Path, python: Path, **extra: str) -> dict[str, str]:
    """The submitting shell's environment: stand-ins first on PATH, ray.sub's ports (free ones: this host is shared),
    the CPU driver, and the run's settings."""
    if not cluster.private_ray_tmp:
        pytest.skip("the nodes cannot get their own /tmp/ray (unshare --mount failed): ray.sub would clean the "
                    "host's /tmp/ray")  # fmt: skip
    problem = ensure_node_names_resolve()
    if problem:
        pytest.skip(problem)
    return {
        "PATH": f"{STAND_INS}:{os.environ['PATH']}",
        "HOLDERPO_TEST_REAL_SRUN": shutil.which("srun") or "/usr/bin/srun",
        "HOLDERPO_TEST_REAL_RAY": str(python.with_name("ray")),
        "HOLDERPO_DRIVER": f"{python} {CPU_DRIVER} --ray",
        "HOLDERPO_RECIPE": str(REPO / "recipes" / "smoke_cpu.yaml"),
        "HOLDERPO_CONTAINER_IMAGE": str(tmp / "nemo-rl-v0.7.0.sqsh"),  # never opened: srun drops it
        "HOLDERPO_RUN_DIR": str(run_dir),
        "HOLDERPO_CACHE_DIR": str(tmp / "cache"),
        "HOLDERPO_DATA_DIR": str(tmp),  # the entries refuse a data directory that does not exist
        "RAY_AUTH_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        **ray_sub_ports(),
        **extra,
    }


def submit_entry(cluster: LocalSlurm, tmp: Path, env: dict[str, str], steps: int, *overrides: str) -> str:
    args = [f"grpo.max_num_steps={steps}", *TINY, "logger.progress_bar=false", *overrides]
    opts = ["--partition=gpu", "--nodes=2", "--time=00:45:00", f"--output={tmp}/%x-%j.out"]
    return cluster.sbatch(ENTRY, args, env=env, options=opts, cwd=tmp)


class SocketWatch(threading.Thread):
    """Samples every second the sockets of all processes of a job (found by their environment)."""

    def __init__(self, cluster: LocalSlurm, job: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.job = cluster, job
        self.done = threading.Event()
        self.seen: set[str] = set()
        self.off_loopback: list[str] = []

    def run(self) -> None:
        while not self.done.wait(1.0):
            for line in job_sockets(job_pids(self.cluster, self.job)):
                self.seen.add(line)
                if off_loopback(line):
                    self.off_loopback.append(line)

    def __enter__(self) -> SocketWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


def check_ray_cluster(attempt: Path, nodes: list[str]) -> None:
    """The driver's view of Ray: every node of the allocation, under its own loopback address, running a task."""
    seen = json.loads((attempt / "ray_cluster.json").read_text())
    assert sorted(n["ip"] for n in seen["nodes"]) == sorted(NODE_IPS[n] for n in nodes), seen
    assert all(n["resources"]["worker_units"] == 8 for n in seen["nodes"]), seen  # ray.sub's GPUS_PER_NODE
    assert sorted((t["slurmd_nodename"], t["ip"]) for t in seen["tasks"]) == sorted((n, NODE_IPS[n]) for n in nodes)
    assert seen["driver_ip"] == NODE_IPS[sorted(nodes)[0]]  # the driver runs on ray.sub's head node


def job_nodes(cluster: LocalSlurm, job: str) -> list[str]:
    hostlist = cluster.job(job)["NodeList"]
    return cluster.run(["scontrol", "show", "hostnames", hostlist]).stdout.split()


def worker_step(cluster: LocalSlurm, job: str, node: str) -> str:
    """The id of the job's one step running on ``node`` alone: ray.sub's worker step there."""
    steps = cluster.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %N"]).stdout.split("\n")
    found = [s.split()[0] for s in steps if s.split()[1:] == [node] and ".batch" not in s]
    assert len(found) == 1, steps
    return found[0]


@pytest.mark.slurm
@pytest.mark.slow
def test_every_stop_path_ends_in_an_exact_resume_or_a_failure_naming_the_cause(
    slurm_cluster: LocalSlurm, tmp_path: Path
) -> None:
    """One run of the 7B entry through ray.sub, stopped four different ways, then finished:

    job A, attempt 0: USR1 -> the driver checkpoints at its step boundary -> requeue (and a second job for the same
    run directory, submitted meanwhile, is refused); attempt 1: the Ray worker node's step is killed once training
    runs -> ray.sub marks the cluster ENDED -> stop -> requeue, that node excluded (the partition has 4 nodes, the
    job needs 2); attempt 2: the new worker node's step is killed as soon as the driver has joined Ray, before any
    newer checkpoint -> the job ends FAILED naming that node and the cause, no further requeue (issue 21, defect 3).
    The driver's steps run on every node's Ray actor (``HOLDERPO_TEST_RAY_STEPS``), as NeMo RL's do: after a lost
    node no step completes and nothing is checkpointed. Job B, the resume by hand the failure message gives
    (``HOLDERPO_RUN_DIR=... sbatch`` with the same overrides), attempt 0: USR1, but the checkpoint hangs past
    HOLDERPO_CKPT_TIMEOUT_S -> the job's steps are cancelled -> requeue from the previous complete checkpoint;
    attempt 1: runs to the end. The per-step metrics equal an uninterrupted run's exactly."""
    tree, python = nemo_rl_tree(), python_with_ray()
    steps, period = 40, 4
    run_dir = tmp_path / "run"
    common = {"HOLDERPO_NEMO_RL_IN_IMAGE": str(tree), "HOLDERPO_TEST_STEP_S": "0.5", "HOLDERPO_CKPT_TIMEOUT_S": "20"}
    env = entry_env(slurm_cluster, tmp_path, run_dir, python, HOLDERPO_TEST_RAY_STEPS="1", **common)
    env_b = entry_env(slurm_cluster, tmp_path, run_dir, python, HOLDERPO_TEST_SLOW_SAVE="0", **common)
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    ckpt = run_dir / "checkpoints"
    job = submit_entry(slurm_cluster, tmp_path, env, steps, f"checkpointing.save_period={period}")

    def attempt(n: int, of: str = job) -> Path:
        return run_dir / "logs" / f"{of}-{n}"

    with SocketWatch(slurm_cluster, job) as sockets:
        # 0: USR1 once the driver has joined Ray; a second submission to the same run directory is refused.
        wait_for(lambda: (attempt(0) / "ray_cluster.json").exists(), 420, "attempt 0's driver to join Ray")
        slurm_cluster.run(["scancel", "--signal=USR1", "--batch", job])
        intruder = submit_entry(slurm_cluster, tmp_path, env, steps)
        wait_requeued(slurm_cluster, job, 1)
        # 1: kill the worker node's Ray step once training runs.
        wait_for(lambda: (attempt(1) / "ray_cluster.json").exists(), 420, "attempt 1's driver to join Ray")
        wait_for(lambda: len(read_metrics(ckpt)) > (resumed_step(attempt(1) / "driver.log") or 1e9), 240, "a step")
        nodes = job_nodes(slurm_cluster, job)
        lost = sorted(nodes)[1]  # ray.sub's worker node (the head is the first in sort order)
        slurm_cluster.run(["scancel", "--signal=KILL", worker_step(slurm_cluster, job, lost)])
        wait_requeued(slurm_cluster, job, 2)
        # 2: on other nodes; kill the new worker node's Ray step as soon as the driver has joined Ray.
        wait_for(lambda: (attempt(2) / "ray_cluster.json").exists(), 420, "attempt 2's driver to join Ray")
        nodes2 = job_nodes(slurm_cluster, job)
        lost2 = sorted(nodes2)[1]
        slurm_cluster.run(["scancel", "--signal=KILL", worker_step(slurm_cluster, job, lost2)])
        failed = wait_final(slurm_cluster, job, timeout=300)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    results = [read_env_file(attempt(n) / "result.env") for n in range(3)]
    assert (failed["JobState"], failed["Restarts"]) == ("FAILED", "2"), out[-5000:]
    assert failed["ExitCode"] == f"{results[2]['exit_code']}:0" != "0:0", (failed, results[2])
    assert [p.name for p in attempt_dirs(run_dir)] == [f"{job}-{n}" for n in range(3)]
    assert [r["reason"] for r in results] == ["requeued", "requeued", "lost Ray worker again, no progress"]
    # The lost worker's node (the 2-node job's one worker: its step ended) is named and kept out of attempt 2.
    assert (results[1]["cause"], results[1]["node"]) == ("lost_worker", lost), results[1]
    assert f"the next attempt excludes {lost} (ExcNodeList)" in out
    assert slurm_cluster.job(job)["ExcNodeList"] == lost
    assert nodes2 != nodes and lost not in nodes2 and lost2 != lost, (nodes, nodes2)
    # Attempt 2 lost its worker before any newer checkpoint: the job ends naming that node and the cause.
    assert (results[2]["cause"], results[2]["node"]) == ("lost_worker", lost2), results[2]
    assert results[2]["newest_step"] == results[1]["newest_step"] == str(newest_step(ckpt)), results
    assert f"node {lost2} looks broken" in out and f"NodeName={lost2} State=DRAIN" in out, out[-3000:]
    assert f"requeued for the same fault at checkpoint step {results[1]['newest_step']}" in out, out[-3000:]
    assert f"Resume by hand once fixed: HOLDERPO_RUN_DIR={run_dir}" in out
    assert out.count("requeueing job") == 2, out[-5000:]
    refused = wait_final(slurm_cluster, intruder)
    assert (refused["JobState"], refused["ExitCode"], refused["Restarts"]) == ("FAILED", "2:0", "0"), refused
    assert f"belongs to job {job}" in (tmp_path / f"holderpo-7b-{intruder}.out").read_text()
    assert not job_pids(slurm_cluster, job), "processes of the failed job are still running"

    # Job B: the resume by hand, with the same overrides (a new job id, so no ExcNodeList).
    job_b = submit_entry(slurm_cluster, tmp_path, env_b, steps, f"checkpointing.save_period={period}")
    with SocketWatch(slurm_cluster, job_b) as sockets_b:
        # 0: USR1 after a periodic checkpoint of this attempt; that stop's save hangs (test fault).
        wait_for(lambda: (attempt(0, job_b) / "ray_cluster.json").exists(), 420, "job B's driver to join Ray")
        wait_for(lambda: resumed_step(attempt(0, job_b) / "driver.log") is not None, 240, "job B to resume")
        start = resumed_step(attempt(0, job_b) / "driver.log")
        wait_for(lambda: newest_step(ckpt) > start, 240, "a periodic checkpoint in job B")
        slurm_cluster.run(["scancel", "--signal=USR1", "--batch", job_b])
        wait_requeued(slurm_cluster, job_b, 1)
        info = wait_final(slurm_cluster, job_b, timeout=600)
    out_b = (tmp_path / f"holderpo-7b-{job_b}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out_b[-5000:]
    assert f"taking over run directory from job {job}" in out_b
    results_b = [read_env_file(attempt(n, job_b) / "result.env") for n in range(2)]
    assert [r["reason"] for r in results_b] == ["requeued", "complete"]

    assert results[0]["exit_code"] == "75" and results_b[0]["exit_code"] not in ("0", "75")
    for why in ("stop requested (USR1)", "stop requested (lost Ray worker"):
        assert why in out, why
    assert "(HOLDERPO_CKPT_TIMEOUT_S): cancelling" in out_b
    stop0 = int(re.search(r"checkpointed step (\d+)", (attempt(0) / "driver.log").read_text()).group(1))
    assert resumed_step(attempt(1) / "driver.log") == stop0
    assert resumed_step(attempt(0, job_b) / "driver.log") == int(results[2]["newest_step"])
    hung = int(re.search(r"slow save of step (\d+)", (attempt(0, job_b) / "driver.log").read_text()).group(1))
    before_hang = int(re.findall(r"stop requested \(USR1\); newest checkpoint step (\d+)", out_b)[-1])
    assert resumed_step(attempt(1, job_b) / "driver.log") == before_hang < hung
    assert f"removing {ckpt}/tmp_step_{hung} (a save that never completed)" in out_b
    assert reproducible(read_metrics(ckpt)) == want
    assert (ckpt / "COMPLETED").exists()

    attempts = [(attempt(n), nodes if n < 2 else nodes2) for n in range(3)]
    for n in range(2):
        held = read_env_file(attempt(n, job_b) / "attempt.env")["nodes"]
        attempts.append((attempt(n, job_b), slurm_cluster.run(["scontrol", "show", "hostnames", held]).stdout.split()))
    for path, held in attempts:
        log = (path / "ray.sub.log").read_text()
        assert "ray.sub started" in log and "head: cluster ready, launching driver" in log.replace("'", "")
        # ray.sub's head step got its container name (an empty account would have swallowed it: -A is unquoted).
        assert "[stand-in srun] account='(null)' container-name=ray-head dropped: " in log, log[-3000:]
        assert "[stand-in srun] account='(null)' container-name=ray-worker dropped: " in log
        assert filecmp.cmp(path / "nemo_rl_release" / "ray.sub", tree / "ray.sub", shallow=False)
        check_ray_cluster(path, held)
    assert "ray.sub from the image" in out and "NeMo RL 0.7.0 ray.sub" in out
    for watch in (sockets, sockets_b):
        assert watch.seen, "the socket sampler saw nothing: the no-off-loopback check would be vacuous"
        assert not watch.off_loopback, watch.off_loopback[:20]
    assert not job_pids(slurm_cluster, job_b), "processes of the finished job are still running"


@pytest.mark.slurm
@pytest.mark.slow
def test_a_node_that_dies_mid_run_is_excluded_and_the_run_resumes_exactly(
    node_death_slurm_cluster: LocalSlurm, tmp_path: Path
) -> None:
    """A real node death through ray.sub: past a periodic checkpoint, every process of the worker node (its slurmd,
    the slurmstepd of ray.sub's worker step, that step's bash, the raylet and the actors) is SIGKILLed at once. Ray
    notices within a second (the driver's next step calls the node's actor), Slurm only after SlurmdTimeout: the
    driver crashes while squeue still lists the worker step. Expected: a lost worker, that node named and excluded,
    requeued by Slurm when it marks the node DOWN (SlurmdTimeout, 30 s on this cluster: a job requeued by scontrol
    while its node does not answer restarts without its GPUs), resume from the newest complete checkpoint on other
    nodes, completion with every per-step metric equal to an uninterrupted run's, no socket off loopback. The dead
    node's slurmd is restarted and the node resumed afterwards, even on failure (its cluster is the test's own).
    Failed on main: the requeued attempt had no GPUs ("no GPUs in this allocation", exit 2, job FAILED)."""
    cluster = node_death_slurm_cluster
    tree, python = nemo_rl_tree(), python_with_ray()
    steps, period = 30, 4
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    env = entry_env(cluster, tmp_path, run_dir, python, HOLDERPO_NEMO_RL_IN_IMAGE=str(tree),
                    HOLDERPO_TEST_STEP_S="0.5", HOLDERPO_TEST_RAY_STEPS="1", HOLDERPO_CKPT_TIMEOUT_S="20")  # fmt: skip
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    job = submit_entry(cluster, tmp_path, env, steps, f"checkpointing.save_period={period}")

    def attempt(n: int) -> Path:
        return run_dir / "logs" / f"{job}-{n}"

    lost = ""
    try:
        with SocketWatch(cluster, job) as sockets:
            wait_for(lambda: (attempt(0) / "ray_cluster.json").exists(), 420, "the driver to join Ray")
            wait_for(lambda: newest_step(ckpt) >= period, 240, "a periodic checkpoint")
            nodes = job_nodes(cluster, job)
            lost = sorted(nodes)[1]  # ray.sub's worker node (the head is the first in sort order)
            worker = worker_step(cluster, job, lost)
            killed = cluster.kill_node(lost)
            at_kill = newest_step(ckpt)
            wait_requeued(cluster, job, 1, timeout=300)
            info = wait_final(cluster, job, timeout=600)
    finally:
        if lost:
            cluster.restart_node(lost)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    results = [read_env_file(attempt(n) / "result.env") for n in range(2)]
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out[-5000:]
    assert killed >= 4, killed  # slurmd, slurmstepd, the step's bash, raylet and more
    # Attempt 0: a lost worker on that node (not a driver crash), requeued, the node kept out of attempt 1.
    assert (results[0]["reason"], results[0]["cause"], results[0]["node"]) == ("requeued", "lost_worker", lost), (
        results[0], out[-5000:])  # fmt: skip
    assert f"stop requested (lost Ray worker on {lost})" in out
    # The driver crashed before Slurm noticed: Ray's report of the dead node, or (within its first seconds) the
    # actor there that it could not reach, names the node; not a driver crash.
    assert "reports a dead Ray node" in out or f"could not reach on {lost}" in out, out[-5000:]
    # The node does not answer Slurm: its requeue is Slurm's own (ours would restart without the GPUs), and the
    # batch shell's SIGTERM trap adds the node to ExcNodeList.
    assert f"{lost} does not answer Slurm" in out and "Slurm requeues the job itself" in out, out[-5000:]
    assert f"Slurm requeued the job for the failure of {lost}; the next attempt excludes {lost} (ExcNodeList)" in out
    assert "no GPUs in this allocation" not in out
    assert cluster.job(job)["ExcNodeList"] == lost
    nodes1 = cluster.run(["scontrol", "show", "hostnames", read_env_file(attempt(1) / "attempt.env")["nodes"]])
    assert lost not in nodes1.stdout.split(), nodes1.stdout
    # Resumed from the newest complete checkpoint (nothing was saved after the node died: no step completed).
    assert int(results[0]["newest_step"]) == at_kill, (results[0], at_kill)
    assert resumed_step(attempt(1) / "driver.log") == at_kill
    assert reproducible(read_metrics(ckpt)) == want
    assert (ckpt / "COMPLETED").exists() and not list(ckpt.glob("tmp_step_*"))
    check_ray_cluster(attempt(1), nodes1.stdout.split())
    assert worker, worker
    assert sockets.seen and not sockets.off_loopback, sockets.off_loopback[:20]
    assert not job_pids(cluster, job), "processes of the finished job are still running"


@pytest.mark.slurm
@pytest.mark.slow
def test_usr1_and_sigterm_to_the_job_s_steps_keep_their_meaning(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """`scancel --signal=USR1 <job>` and `scancel --signal=TERM <job>` without --batch reach every step's tasks, not the
    batch shell: ray.sub's head and worker bash die of the signal, with Ray and the driver (no checkpoint at the stop;
    ray.sub exits 138 / 143, no worker step left). Attempt 0, past a periodic checkpoint: USR1 -> requeue (a stop,
    not a lost worker) -> attempt 1 resumes from the newest complete checkpoint; past a newer one, SIGTERM -> the job
    ends (143, stopped by SIGTERM, no requeue, no node blamed); the resume by hand completes with every per-step
    metric equal to an uninterrupted run's. Was: both "lost Ray worker" requeues (a SIGTERM requeued, and a second
    signal without a newer checkpoint would have failed the job as a broken node)."""
    tree, python = nemo_rl_tree(), python_with_ray()
    steps, period = 30, 4
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    env = entry_env(slurm_cluster, tmp_path, run_dir, python, HOLDERPO_NEMO_RL_IN_IMAGE=str(tree),
                    HOLDERPO_TEST_STEP_S="0.5", HOLDERPO_TEST_RAY_STEPS="1", HOLDERPO_CKPT_TIMEOUT_S="20")  # fmt: skip
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    job = submit_entry(slurm_cluster, tmp_path, env, steps, f"checkpointing.save_period={period}")

    def attempt(n: int, of: str = job) -> Path:
        return run_dir / "logs" / f"{of}-{n}"

    with SocketWatch(slurm_cluster, job) as sockets:
        wait_for(lambda: newest_step(ckpt) >= period, 420, "a periodic checkpoint")
        slurm_cluster.run(["scancel", "--signal=USR1", job])
        wait_requeued(slurm_cluster, job, 1)
        wait_for(lambda: resumed_step(attempt(1) / "driver.log") is not None, 420, "attempt 1 to resume")
        start = resumed_step(attempt(1) / "driver.log")
        wait_for(lambda: newest_step(ckpt) > start, 240, "a periodic checkpoint in attempt 1")
        slurm_cluster.run(["scancel", "--signal=TERM", job])
        info = wait_final(slurm_cluster, job, timeout=300)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    results = [read_env_file(attempt(n) / "result.env") for n in range(2)]
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "143:0", "1"), out[-5000:]
    assert [(r["exit_code"], r["reason"], r["cause"]) for r in results] == [
        ("138", "requeued", "stop"), ("143", "stopped by SIGTERM", "term")], (results, out[-5000:])  # fmt: skip
    assert "killed by SIGUSR1 (exit 138)" in out and "killed by SIGTERM (exit 143)" in out, out[-5000:]
    assert "lost Ray worker" not in out and "looks broken" not in out, out[-5000:]
    assert start == int(results[0]["newest_step"])
    assert not job_pids(slurm_cluster, job), "processes of the stopped job are still running"

    # The resume by hand: from the newest complete checkpoint, to the end, exactly.
    job_b = submit_entry(slurm_cluster, tmp_path, env, steps, f"checkpointing.save_period={period}")
    with SocketWatch(slurm_cluster, job_b) as sockets_b:
        info_b = wait_final(slurm_cluster, job_b, timeout=600)
    out_b = (tmp_path / f"holderpo-7b-{job_b}.out").read_text()
    assert (info_b["JobState"], info_b["ExitCode"]) == ("COMPLETED", "0:0"), out_b[-5000:]
    assert resumed_step(attempt(0, job_b) / "driver.log") == int(results[1]["newest_step"]) > start
    assert reproducible(read_metrics(ckpt)) == want
    for watch in (sockets, sockets_b):
        assert watch.seen and not watch.off_loopback, watch.off_loopback[:20]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_node_lost_again_without_progress_fails_the_job_naming_it(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """Issue 21, defect 3, on the real Slurm without a NeMo RL tree or Ray (so on CI): the 7B entry with a stand-in
    ray.sub (``stand_ins/nemo_rl_tree``: ray.sub's worker step, head step, ``ray-driver.log`` and ``ENDED``, no Ray)
    and the CPU driver. Attempt 0: past a periodic checkpoint, the worker node's step is killed -> stop, checkpoint
    -> requeue with that node excluded; attempt 1, on other nodes: the driver hangs at its first step (as NeMo RL's
    first collective after a node loss), the new worker node's step is killed -> the job ends FAILED naming that
    node and the cause, with no further requeue and nothing of the job left running."""
    problem = ensure_node_names_resolve()  # ray.sub resolves the node names (host, getent): never through DNS
    if problem:
        pytest.skip(problem)
    steps, period = 40, 4
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    env = {
        "PATH": f"{STAND_INS}:{os.environ['PATH']}",
        "HOLDERPO_TEST_REAL_SRUN": shutil.which("srun") or "/usr/bin/srun",
        "NEMO_RL_HOME": str(STAND_INS / "nemo_rl_tree"),
        "HOLDERPO_DRIVER": f"{sys.executable} {CPU_DRIVER}",
        "HOLDERPO_RECIPE": str(REPO / "recipes" / "smoke_cpu.yaml"),
        "HOLDERPO_CONTAINER_IMAGE": str(tmp_path / "nemo-rl-v0.7.0.sqsh"),  # never opened: srun drops it
        "HOLDERPO_RUN_DIR": str(run_dir),
        "HOLDERPO_CACHE_DIR": str(tmp_path / "cache"),
        "HOLDERPO_DATA_DIR": str(tmp_path),
        "HOLDERPO_TEST_STEP_S": "0.5",
        "HOLDERPO_TEST_HANG_AT_STEP": "1:+1",
        "HOLDERPO_CKPT_TIMEOUT_S": "10",
        "OMP_NUM_THREADS": "1",
    }
    job = submit_entry(slurm_cluster, tmp_path, env, steps, f"checkpointing.save_period={period}")

    def attempt(n: int) -> Path:
        return run_dir / "logs" / f"{job}-{n}"

    with SocketWatch(slurm_cluster, job) as sockets:
        wait_for(lambda: newest_step(ckpt) >= period, 300, "a periodic checkpoint")
        nodes = job_nodes(slurm_cluster, job)
        lost = sorted(nodes)[1]  # the worker node (the head is the first in sort order)
        slurm_cluster.run(["scancel", "--signal=KILL", worker_step(slurm_cluster, job, lost)])
        wait_requeued(slurm_cluster, job, 1)
        hang = attempt(1) / "driver.log"
        wait_for(lambda: hang.exists() and "hanging at the start of step" in hang.read_text(), 300, "attempt 1's hang")
        nodes2 = job_nodes(slurm_cluster, job)
        lost2 = sorted(nodes2)[1]
        slurm_cluster.run(["scancel", "--signal=KILL", worker_step(slurm_cluster, job, lost2)])
        info = wait_final(slurm_cluster, job, timeout=120)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    results = [read_env_file(attempt(n) / "result.env") for n in range(2)]
    assert (info["JobState"], info["Restarts"]) == ("FAILED", "1"), out[-5000:]
    assert info["ExitCode"] == f"{results[1]['exit_code']}:0" != "0:0", (info, results[1])
    assert [(r["reason"], r["cause"]) for r in results] == [
        ("requeued", "lost_worker"), ("lost Ray worker again, no progress", "lost_worker")]  # fmt: skip
    assert (results[0]["node"], results[1]["node"]) == (lost, lost2), results
    assert f"the next attempt excludes {lost} (ExcNodeList)" in out
    assert slurm_cluster.job(job)["ExcNodeList"] == lost and lost not in nodes2, (nodes, nodes2)
    # Attempt 0 checkpointed at its stop; attempt 1 resumed there and completed nothing: no newer checkpoint.
    stopped = int(re.search(r"checkpointed step (\d+)", (attempt(0) / "driver.log").read_text()).group(1))
    assert int(results[0]["newest_step"]) == stopped == resumed_step(attempt(1) / "driver.log") == newest_step(ckpt)
    assert results[1]["newest_step"] == str(stopped), results[1]
    assert f"requeued for the same fault at checkpoint step {stopped}" in out
    assert f"node {lost2} looks broken" in out and f"NodeName={lost2} State=DRAIN" in out, out[-3000:]
    assert out.count("requeueing job") == 1, out[-5000:]
    assert "exited before the head" in (attempt(1) / "ray.sub.log").read_text()
    assert sockets.seen and not sockets.off_loopback, sockets.off_loopback[:20]
    assert not job_pids(slurm_cluster, job), "processes of the failed job are still running"


@pytest.mark.slurm
@pytest.mark.slow
def test_driver_failing_at_start_fails_the_job_with_its_code(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """Through ray.sub (taken from NEMO_RL_HOME this time), a driver that fails before any checkpoint (a recipe key
    that does not exist: exit 2) ends the job FAILED with exit code 2, on its first attempt."""
    tree, python = nemo_rl_tree(), python_with_ray()
    run_dir = tmp_path / "run"
    env = entry_env(slurm_cluster, tmp_path, run_dir, python, NEMO_RL_HOME=str(tree))
    job = submit_entry(slurm_cluster, tmp_path, env, 4, "policy.no_such_key=1")
    info = wait_final(slurm_cluster, job, timeout=420)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "2:0", "0"), out[-3000:]
    attempt = run_dir / "logs" / f"{job}-0"
    result = read_env_file(attempt / "result.env")
    assert (result["exit_code"], result["reason"]) == ("2", "driver failed")
    assert "no_such_key" in (attempt / "driver.log").read_text()
    assert f"ray.sub from NEMO_RL_HOME={tree}" in out
    log = (attempt / "ray.sub.log").read_text()
    assert "[stand-in srun] account='(null)' container-name=ray-head dropped: " in log, log[-3000:]
    assert not job_pids(slurm_cluster, job)


@pytest.mark.slurm
def test_ray_sub_of_another_nemo_rl_version_is_refused(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """A ray.sub from NeMo RL 0.6 is refused before anything starts (FAILED, exit 2, the versions and the override
    named); HOLDERPO_ALLOW_ANY_NEMO_RL=1 lets it through. No NeMo RL or Ray needed: the tree is a stand-in whose
    ray.sub only records that it ran."""
    tree = tmp_path / "nemo-rl-0.6"
    (tree / "nemo_rl").mkdir(parents=True)
    (tree / "nemo_rl" / "package_info.py").write_text("MAJOR = 0\nMINOR = 6\nPATCH = 2\n")
    (tree / "ray.sub").write_text('#!/bin/bash\necho "stand-in ray.sub ran: $COMMAND"\n')
    env = {
        "HOLDERPO_CONTAINER_IMAGE": str(tmp_path / "image.sqsh"),
        "NEMO_RL_HOME": str(tree),
        "PATH": f"{STAND_INS}:{os.environ['PATH']}",
        "HOLDERPO_TEST_REAL_SRUN": shutil.which("srun") or "srun",
        "HOLDERPO_DATA_DIR": str(tmp_path),
    }
    opts = ["--partition=gpu", "--nodes=1", f"--output={tmp_path}/%x-%j.out"]

    def run(run_dir: Path, **extra: str) -> tuple[dict[str, str], str]:
        job = slurm_cluster.sbatch(ENTRY, [], env={**env, "HOLDERPO_RUN_DIR": str(run_dir), **extra}, options=opts,
                                   cwd=tmp_path)  # fmt: skip
        return wait_final(slurm_cluster, job), (tmp_path / f"holderpo-7b-{job}.out").read_text()

    info, out = run(tmp_path / "refused")
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "2:0", "0"), out
    assert "ray.sub is from NeMo RL '0.6.2'; these entries run NeMo RL 0.7.x" in out
    assert "HOLDERPO_ALLOW_ANY_NEMO_RL=1" in out
    assert "stand-in ray.sub ran" not in out
    info, out = run(tmp_path / "allowed", HOLDERPO_ALLOW_ANY_NEMO_RL="1")
    assert info["JobState"] == "COMPLETED" and "WARNING: NeMo RL 0.6.2, not 0.7.x" in out, out
    log = next((tmp_path / "allowed" / "logs").iterdir()) / "ray.sub.log"
    assert "stand-in ray.sub ran: bash " in log.read_text()
    # ray.sub exited 0 but the driver never wrote COMPLETED: not a finished run, and not requeued either.
    assert read_env_file(log.with_name("result.env"))["reason"] == "exited 0, run not complete"
