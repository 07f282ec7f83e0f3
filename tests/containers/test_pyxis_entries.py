"""The NeMo RL entries under real pyxis + enroot on the local Slurm cluster, with the image built from
containers/Dockerfile (FROM the NGC stand-in) and imported by enroot as ``HOLDERPO_CONTAINER_IMAGE``.

Real: Slurm 22.05 (3 slurmd "nodes" on this host, each with its own pyxis runtime path; the jobs take 2, so one that
loses a node has a spare), pyxis v0.24.0 and enroot v4.1.2 built from their fetched sources (skipped with that
reason where absent, as on CI), the image and its enroot import, ``sbatch slurm/holderpo_7b.sh`` and
``slurm/holderpo_32b.sh`` with their libraries, NeMo RL v0.7.0's own ``ray.sub`` (taken out of the image, or from
``NEMO_RL_HOME``) starting the Ray head and workers inside the containers, Ray 2.x on the image's Python 3.13, and
``holderpo train`` (the image's holder_nemo) with its stop contract on the image's Python 3.11 CPU torch.
Faked, and why:

* ``srun`` is ``stand_ins/srun`` in pass-through mode (``HOLDERPO_TEST_SRUN_PYXIS=real``): it keeps every pyxis flag,
  drops ``--mpi=pmix`` (this cluster's PMIx cannot start two slurmd's PMIx servers on one host) and applies Slurm
  26.05's GPU option rule, which 22.05 does not enforce;
* ``ray`` inside the image is ``stand_ins/ray`` (first on the image's PATH, and mounted over it from this checkout):
  ``ray start`` on the node's own loopback address, ``ray stop`` of this node's and job's Ray processes only (both
  "nodes" share this host);
* the GPU training is ``tests/slurm/cpu_driver.py`` (``HOLDERPO_DRIVER``): it joins ray.sub's Ray cluster from the
  head container on Python 3.13 and runs a task on each node, then hands the training to the image's Python 3.11
  worker venv (``exec``).

Requires NeMo RL's tree (``HOLDERPO_TEST_NEMO_RL_HOME``, v0.7.0) for ray.sub. No socket of a job leaves loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from datetime import datetime
from pathlib import Path

import pytest
from local_slurm import NODE_IPS, LocalSlurm, ensure_node_names_resolve, job_pids, pyxis_runtime_path
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
from test_nemo_rl_entry import SocketWatch, job_nodes, ray_sub_ports, worker_step

# Each test builds on the image fixtures (minutes, once) and runs jobs through several container starts.
pytestmark = [pytest.mark.container, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(3600)]
STAND_INS = REPO / "tests" / "slurm" / "stand_ins"
WORKER_PYTHON = "/opt/ray_venvs/nemo_rl.models.policy.workers.dtensor_policy_worker_v2.DTensorPolicyWorkerV2/bin/python"
TIMINGS = Path(os.environ.get("HOLDERPO_TEST_CONTAINER_TIMINGS", "/var/tmp/holderpo-test-containers/tier.json"))


@pytest.fixture(scope="module")
def tree(nemo_rl_tree: Path | None) -> Path:
    if nemo_rl_tree is None:
        pytest.skip("no NeMo RL source tree: set HOLDERPO_TEST_NEMO_RL_HOME to a NeMo RL checkout at tag v0.7.0")
    return nemo_rl_tree


def pyxis_env(tmp: Path, run_dir: Path, image: Path, **extra: str) -> dict[str, str]:
    problem = ensure_node_names_resolve()
    if problem:
        pytest.skip(problem)
    tests_slurm = REPO / "tests" / "slurm"
    return {
        "PATH": f"{STAND_INS}:{os.environ['PATH']}",
        "HOLDERPO_TEST_REAL_SRUN": shutil.which("srun") or "/usr/bin/srun",
        "HOLDERPO_TEST_SRUN_PYXIS": "real",
        "HOLDERPO_CONTAINER_IMAGE": str(image),
        # cpu_driver.py; and the current stand-in `ray` over the image's copy (a change to it needs no new image)
        "HOLDERPO_CONTAINER_MOUNTS": f"{tests_slurm}:{tests_slurm},{STAND_INS}/ray:/usr/local/holderpo-test/bin/ray",
        "HOLDERPO_DRIVER": f"/opt/nemo_rl_venv/bin/python {CPU_DRIVER} --ray",
        "HOLDERPO_TEST_TRAIN_PYTHON": WORKER_PYTHON,
        "HOLDERPO_RECIPE": "/opt/holder_nemo/recipes/smoke_cpu.yaml",  # the image's copy
        "HOLDERPO_RUN_DIR": str(run_dir),
        "HOLDERPO_CACHE_DIR": str(tmp / "cache"),
        "HOLDERPO_DATA_DIR": str(tmp),  # the entries refuse a data directory that does not exist
        "RAY_AUTH_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        **ray_sub_ports(),
        **extra,
    }


def submit(cluster: LocalSlurm, tmp: Path, script: str, env: dict[str, str], steps: int, *overrides: str) -> str:
    args = [f"grpo.max_num_steps={steps}", *TINY, "logger.progress_bar=false", *overrides]
    opts = ["--partition=gpu", "--nodes=2", "--time=00:30:00", f"--output={tmp}/%x-%j.out"]
    return cluster.sbatch(SLURM_DIR / script, args, env=env, options=opts, cwd=tmp)


def containers_on(node: str) -> list[str]:
    """The enroot containers pyxis keeps on ``node`` (its own data path, see local_slurm.ENROOT_DROPIN)."""
    data = pyxis_runtime_path(node) / "data"
    return sorted(p.name for p in data.iterdir()) if data.is_dir() else []


def program(pid: int) -> str:
    """The name of what process ``pid`` runs ("" once it is gone)."""
    with suppress(OSError):
        return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
    return ""


def attempt_nodes(cluster: LocalSlurm, attempt: Path) -> list[str]:
    """The nodes an attempt ran on (its attempt.env), in sort order: ray.sub's head first."""
    hostlist = read_env_file(attempt / "attempt.env")["nodes"]
    return sorted(cluster.run(["scontrol", "show", "hostnames", hostlist]).stdout.split())


def slurmd_log(cluster: LocalSlurm, node: str) -> str:
    return (cluster.base / "log" / f"slurmd-{node}.log").read_text()


def check_ray_cluster_in_containers(attempt: Path, nodes: list[str]) -> dict:
    seen = json.loads((attempt / "ray_cluster.json").read_text())
    assert sorted(n["ip"] for n in seen["nodes"]) == sorted(NODE_IPS[n] for n in nodes), seen
    assert all(n["resources"]["worker_units"] == 8 for n in seen["nodes"]), seen
    assert sorted(t["slurmd_nodename"] for t in seen["tasks"]) == sorted(nodes)
    assert seen["driver_python"].startswith("3.13."), seen  # the image's driver venv
    return seen


def bring_up_seconds(job_log: str, attempt: int) -> float:
    """From the attempt's 'starting the containers' to ray.sub's driver start (timestamps of the job log and of
    ray.sub's own log are both UTC seconds)."""
    stamps = re.findall(r"\[holderpo\]\[([0-9T:-]+)Z\]\[\+\d+s\] (starting the containers|driver: )", job_log)
    starts = [s for s, what in stamps if what.startswith("starting")]
    drivers = [s for s, what in stamps if what.startswith("driver")]
    return (datetime.fromisoformat(drivers[attempt]) - datetime.fromisoformat(starts[attempt])).total_seconds()


def record_timing(name: str, value: float) -> None:
    data = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    data[name] = value
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps(data, indent=1) + "\n")


def test_7b_entry_under_pyxis_stops_loses_nodes_requeues_and_resumes_exactly(
    pyxis_cluster: LocalSlurm, holder_nemo_sqsh: Path, tree: Path, tmp_path: Path
) -> None:
    """`sbatch slurm/holderpo_7b.sh` on 2 of the 3 nodes under pyxis: ray.sub (out of the image) brings Ray up in the
    named containers the entry started on both nodes at once; one job through four attempts (issue 21 in containers):

    0. first checkpoint; a USR1 stops it (checkpoint, requeue);
    1. resumed; past one of its periodic checkpoints the worker node's Ray step (ray.sub's `ray-worker` srun step:
       the raylet in that node's container) is killed, `scancel --signal=KILL <job>.<step>`, as a node that dies
       takes its step with it: ray.sub writes ENDED, the driver checkpoints at its stop, the job is requeued with
       `cause=lost_worker node=<that node>` and that node in ExcNodeList;
    2. fresh containers on the two other nodes (the spare among them), resumed from the newest complete checkpoint;
       past a periodic checkpoint every process of the job on the new worker node (inside its container: ray.sub's
       worker loop, `ray start --block`, the raylet, Ray's workers) is SIGKILLed from the host at once: lost worker
       again, but after progress, so requeued, and that node not excluded (no node left to spare);
    3. on the same two nodes, resumed, completes; per-step metrics equal an uninterrupted run's.

    What runs is what attempt.env says (the image file and its sha256, the image's holder_nemo), and pyxis removes
    the job's containers when each attempt ends (container_scope=job)."""
    steps, period = 36, 3
    run_dir = tmp_path / "run"
    # 1 s a step: a lost worker's stop (worker step ended -> ray.sub's ENDED -> the batch shell's poll -> stop file ->
    # the driver's next step boundary) takes several seconds, and each attempt must still have steps left to stop in.
    env = pyxis_env(tmp_path, run_dir, holder_nemo_sqsh, HOLDERPO_TEST_STEP_S="1")
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    ckpt = run_dir / "checkpoints"
    job = submit(pyxis_cluster, tmp_path, "holderpo_7b.sh", env, steps, f"checkpointing.save_period={period}")
    attempt = lambda n: run_dir / "logs" / f"{job}-{n}"  # noqa: E731
    held: list[list[str]] = []  # each attempt's nodes, ray.sub's head first (the first in sort order)

    def joined_ray(n: int) -> None:
        """Wait for attempt ``n``'s driver to join Ray; check that each of its nodes holds this job's one named
        container (pyxis_<job>_<name>), nothing else, and that nodes outside the attempt hold none."""
        wait_for(lambda: (attempt(n) / "ray_cluster.json").exists(), 600, f"attempt {n}'s driver to join Ray")
        held.append(sorted(job_nodes(pyxis_cluster, job)))
        head, worker = held[n]
        assert containers_on(head) == [f"pyxis_{job}_ray-head"], containers_on(head)
        assert containers_on(worker) == [f"pyxis_{job}_ray-worker"], containers_on(worker)
        for node in set(pyxis_cluster.gpu_nodes) - {head, worker}:  # the previous attempt's epilog removed them
            wait_for(lambda node=node: not containers_on(node), 120, f"no container of the job on {node}")

    def past_a_periodic_checkpoint(n: int) -> int:
        """Wait for attempt ``n`` to resume and then write a periodic checkpoint; the step it resumed from."""
        wait_for(lambda: resumed_step(attempt(n) / "driver.log") is not None, 300, f"attempt {n} to resume")
        start = resumed_step(attempt(n) / "driver.log")
        wait_for(lambda: newest_step(ckpt) > start, 300, f"a periodic checkpoint in attempt {n}")
        return start

    with SocketWatch(pyxis_cluster, job) as sockets:
        # 0: USR1 after the first checkpoint.
        joined_ray(0)
        for node, name in zip(held[0], ("ray-head", "ray-worker"), strict=True):
            rootfs = pyxis_runtime_path(node) / "data" / f"pyxis_{job}_{name}"
            du = subprocess.run(["du", "-sb", str(rootfs)], capture_output=True, text=True).stdout.split()[0]
            record_timing(f"bytes unpacked on {node} ({name})", int(du))
        wait_for(lambda: newest_step(ckpt) >= period, 300, "the first checkpoint")
        pyxis_cluster.run(["scancel", "--signal=USR1", "--batch", job])
        wait_requeued(pyxis_cluster, job, 1)
        # 1: kill the worker node's Ray step.
        joined_ray(1)
        start1 = past_a_periodic_checkpoint(1)
        lost = held[1][1]  # ray.sub's one worker node
        pyxis_cluster.run(["scancel", "--signal=KILL", worker_step(pyxis_cluster, job, lost)])
        wait_requeued(pyxis_cluster, job, 2)
        # 2: kill every process of the job on the new worker node, Slurm not involved.
        joined_ray(2)
        start2 = past_a_periodic_checkpoint(2)
        lost2 = held[2][1]
        victims = {pid: program(pid) for pid in job_pids(pyxis_cluster, job, lost2)}
        for pid in victims:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_requeued(pyxis_cluster, job, 3)
        # 3: resume and complete.
        joined_ray(3)
        info = wait_final(pyxis_cluster, job, timeout=900)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "3"), out[-5000:]
    assert [p.name for p in attempt_dirs(run_dir)] == [f"{job}-{n}" for n in range(4)]
    results = [read_env_file(attempt(n) / "result.env") for n in range(4)]
    assert [r["reason"] for r in results] == ["requeued", "requeued", "requeued", "complete"], results
    assert (results[0]["exit_code"], results[0]["cause"], results[3]["exit_code"]) == ("75", "stop", "0"), results
    # Each lost worker's node is named; the first is kept out of the next attempts, which run on the other two nodes.
    assert [(r["cause"], r["node"]) for r in results[1:3]] == [("lost_worker", lost), ("lost_worker", lost2)], results
    for node in (lost, lost2):
        assert f"stop requested (lost Ray worker on {node})" in out, out[-5000:]
    assert out.count("while the driver runs: a Ray worker step ended") == 2, out[-5000:]
    assert f"the next attempt excludes {lost} (ExcNodeList)" in out
    assert held[2] == sorted(set(pyxis_cluster.gpu_nodes) - {lost}), held
    # The second lost node stays in use: excluding it too would leave one node for a 2-node job.
    assert f"not excluding {lost2} from the next attempt: partition gpu has 3 node(s), the job needs 2" in out
    assert pyxis_cluster.job(job)["ExcNodeList"] == lost and held[3] == held[2], held
    for n in (1, 2):
        assert "exited before the head" in (attempt(n) / "ray.sub.log").read_text()
    # What the kill hit: the worker node's Ray (its raylet), not the head's (its GCS).
    assert "raylet" in victims.values() and "gcs_server" not in victims.values(), victims
    # Each attempt resumed from the newest complete checkpoint: the one its predecessor wrote when it stopped.
    stops = [
        int(re.search(r"checkpointed step (\d+)", (attempt(n) / "driver.log").read_text()).group(1)) for n in (0, 1, 2)
    ]
    assert period <= stops[0] == start1 < stops[1] == start2 < stops[2] < steps, (stops, start1, start2)
    assert [int(results[n]["newest_step"]) for n in (0, 1, 2)] == stops, results
    assert [resumed_step(attempt(n) / "driver.log") for n in (1, 2, 3)] == stops
    assert reproducible(read_metrics(ckpt)) == want and (ckpt / "COMPLETED").exists()

    sha = hashlib.sha256(holder_nemo_sqsh.read_bytes()).hexdigest()
    for n in range(4):
        driver_log = (attempt(n) / "driver.log").read_text()
        # Ray and the driver's Ray client on the image's Python 3.13; the training on its Python 3.11 worker venv.
        check_ray_cluster_in_containers(attempt(n), held[n])
        assert f"hands the training to {WORKER_PYTHON}" in driver_log and "training on Python 3.11." in driver_log
        ray_sub_log = (attempt(n) / "ray.sub.log").read_text()
        assert "[stand-in srun] account='(null)' container-name=ray-head dropped: --mpi=pmix" in ray_sub_log
        assert filecmp_same(attempt(n) / "nemo_rl_release" / "ray.sub", tree / "ray.sub")
        provenance = read_env_file(attempt(n) / "attempt.env")
        assert (provenance["image"], provenance["image_sha256"]) == (str(holder_nemo_sqsh), sha)
        assert provenance["holder_nemo_source"] == "image:/opt/holder_nemo"
        assert provenance["holder_nemo_version"] == "0.1.0" and len(provenance["holder_nemo_git_sha"]) == 40
        assert provenance["ray_sub"] == "image:/opt/nemo-rl/ray.sub" and provenance["nemo_rl_version"] == "0.7.0"
        assert "PYTHONPATH" not in (attempt(n) / "driver.sh").read_text()  # the image's holder_nemo, not a checkout
        record_timing(f"7b bring-up attempt {n} (s)", bring_up_seconds(out, n))
    # Every attempt started fresh containers on its nodes (pyxis created each node's container once per attempt it
    # ran there, then ray.sub's steps reused it): the spare node's came with attempt 2.
    for node in pyxis_cluster.gpu_nodes:
        log = slurmd_log(pyxis_cluster, node)
        created = re.findall(rf"\[{job}\.\d+\] pyxis: creating container filesystem", log)
        assert len(created) == sum(node in nodes for nodes in held), (node, held, log[-3000:])
        if created:
            assert re.search(rf"\[{job}\.\d+\] pyxis: reusing existing container", log), log[-3000:]
    # The first step on each node of attempt 0 (the entry's container start, one import per node) began at the same
    # time on both; ray.sub's head and worker steps then reused those containers.
    first = {}
    for node in held[0]:
        stamp = re.search(rf"\[([0-9T:.-]+)\] launch task StepId={job}\.\d+ request", slurmd_log(pyxis_cluster, node))
        first[node] = datetime.fromisoformat(stamp.group(1))
    assert abs((first[held[0][0]] - first[held[0][1]]).total_seconds()) < 5, first
    gone = lambda: not any(containers_on(n) for n in pyxis_cluster.gpu_nodes)  # noqa: E731
    wait_for(gone, 120, "pyxis' epilog to remove the job's containers")
    assert sockets.seen and not sockets.off_loopback, sockets.off_loopback[:20]
    assert not job_pids(pyxis_cluster, job)


def filecmp_same(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_32b_entry_on_two_nodes_reusing_them_runs_its_own_containers(
    pyxis_cluster: LocalSlurm, holder_nemo_sqsh: Path, tree: Path, tmp_path: Path
) -> None:
    """`sbatch slurm/holderpo_32b.sh` (2 nodes here) on the nodes an earlier job of this tier ran on, with ray.sub
    from NEMO_RL_HOME: it starts fresh containers of its own (no leftover is reused), runs to completion, and the
    holder_nemo that runs is still the image's (NEMO_RL_HOME only says where ray.sub comes from)."""
    run_dir = tmp_path / "run"
    env = pyxis_env(tmp_path, run_dir, holder_nemo_sqsh, NEMO_RL_HOME=str(tree))
    job = submit(pyxis_cluster, tmp_path, "holderpo_32b.sh", env, 3)
    info = wait_final(pyxis_cluster, job, timeout=900)
    out = (tmp_path / f"holderpo-32b-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "0"), out[-5000:]
    attempt = run_dir / "logs" / f"{job}-0"
    provenance = read_env_file(attempt / "attempt.env")
    assert provenance["holder_nemo_source"] == "image:/opt/holder_nemo", provenance
    assert provenance["ray_sub"] == f"NEMO_RL_HOME:{tree}/ray.sub"
    assert "PYTHONPATH" not in (attempt / "driver.sh").read_text()
    nodes = attempt_nodes(pyxis_cluster, attempt)
    check_ray_cluster_in_containers(attempt, nodes)
    assert [r["step"] for r in read_metrics(run_dir / "checkpoints")] == [1, 2, 3]
    for node in nodes:  # the first step of this job on each node created its container
        log = slurmd_log(pyxis_cluster, node)
        pattern = rf"\[{job}\.(\d+)\] pyxis: (reusing existing container \w+|creating container filesystem)"
        steps = re.findall(pattern, log)
        assert steps and "creating" in steps[0][1] and all("reusing" in s for _, s in steps[1:]), steps
    record_timing("32b bring-up attempt 0 (s)", bring_up_seconds(out, 0))


def test_global_container_scope_is_refused_before_bring_up(
    pyxis_clusters: Callable[..., AbstractContextManager[LocalSlurm]], holder_nemo_sqsh: Path, tree: Path,
    docker, tmp_path: Path,
) -> None:  # fmt: skip
    """pyxis' default container_scope=global keeps named containers across jobs: a container named ray-head that
    an earlier job left (here: of another image) would be reused by this job's ray-head step, ignoring its
    --container-image. The entry refuses to start, naming pyxis' plugstack line and the admin setting."""
    import images

    other = images.enroot_import(docker, images.debian_base(docker))  # another image: the bare Debian base
    with pyxis_clusters("global", ("hpx-gpu4",)) as cluster:
        earlier = cluster.run(["srun", "--partition=gpu", f"--container-image={other}", "--container-name=ray-head",
                               "true"], timeout=600)  # fmt: skip
        assert earlier.returncode == 0
        assert containers_on("hpx-gpu4") == ["pyxis_ray-head"]  # left behind (global scope)
        run_dir = tmp_path / "run"
        env = pyxis_env(tmp_path, run_dir, holder_nemo_sqsh)
        args = ["grpo.max_num_steps=2", *TINY]
        job = cluster.sbatch(SLURM_DIR / "holderpo_7b.sh", args, env=env, cwd=tmp_path,
                             options=["--partition=gpu", "--nodes=1", "--account=holderpo-test",
                                      f"--output={tmp_path}/%x-%j.out"])  # fmt: skip
        info = wait_final(cluster, job, timeout=600)
        out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
        assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), out[-4000:]
        assert "pyxis runs with container_scope=global (the default in " in out and "container_scope=job" in out
        assert not list(run_dir.glob("logs/*/nemo_rl_release"))  # refused before any container was started
        # No step of the refused job ran (its batch script is the only thing of it on the node).
        assert not re.search(rf"\] \[{job}\.\d+\]", slurmd_log(cluster, "hpx-gpu4"))
