"""Preemption that checkpoints (issue 21, defect 1) on the local Slurm, for the smoke entry and for ray.sub.

With Slurm's default preemption (``PreemptMode=REQUEUE``, no ``GraceTime``) the job's steps and its batch shell get
SIGTERM at once and SIGKILL after ``KillWait``; the ``srun`` clients in the batch step answer their SIGTERM with
"forcing job termination" (SIGKILL of their steps), so a save that takes longer than that is lost and the run
resumes from its last periodic checkpoint. With only a ``GraceTime``, the SIGTERM goes to the steps' tasks at once
(ray.sub's head bash, raylet and GCS die together). docs/slurm.md ("Preemption that checkpoints") gives a cluster
admin the settings under which the normal stop path runs instead: ``SlurmctldParameters=preempt_send_user_signal``
(at preemption Slurm sends the job's own ``--signal``, the entries' ``B:USR1``, to the batch shell only), a
``GraceTime`` longer than ``HOLDERPO_CKPT_TIMEOUT_S`` + 60 s, ``PreemptMode=REQUEUE`` and ``KillWait=30``;
``preempting_slurm_cluster`` (conftest.py) is configured so.

Each test lets a run pass a periodic checkpoint by at least two steps (steps a preemption can lose), submits a job
to the higher-priority partition that needs the run's nodes, and checks that the run checkpointed at the step the
preemption found it at (by the batch shell's stop file, not a periodic save), was requeued (by the batch shell, within
the grace time, before Slurm's SIGTERM), and ended exactly as an uninterrupted run. The driver's save after a stop
request takes 10 s more (``HOLDERPO_TEST_STOP_SAVE_S``; a large model's save is minutes): longer than the default
cluster's ``KillWait`` of 5 s, so the negative control (the same run on a cluster with Slurm's defaults, a strict
xfail) loses its steps since the last periodic checkpoint.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from local_slurm import LocalSlurm, job_pids, wait_until
from slurm_runs import (
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
from test_nemo_rl_entry import SocketWatch, entry_env, job_nodes, nemo_rl_tree, python_with_ray, submit_entry
from test_slurm_scripts import cpu_driver_as_train, submit_smoke

STOP_SAVE_S = "10"  # the driver's save after a stop request: > KillWait (5 s) of the default cluster, < GraceTime
CKPT_TIMEOUT_S = "30"  # HOLDERPO_CKPT_TIMEOUT_S; the preempting cluster's GraceTime is above it + 60 s (docs/slurm.md)


@dataclass
class Preemption:
    periodic: int  # the newest periodic checkpoint when the preempting job was submitted
    done: int  # the steps the run had completed then
    requeued_s: float  # from the preempting job's submission to the run's requeue (polled)
    urgent: dict[str, str]  # the preempting job, once finished


def preempt_past_a_checkpoint(
    cluster: LocalSlurm, tmp: Path, ckpt: Path, job: str, period: int, urgent: list[str]
) -> Preemption:
    """Once the run (checkpoints and metrics in ``ckpt``) is two steps past a periodic checkpoint, submit a job with
    sbatch options ``urgent`` that preempts it; wait for the run's requeue and the preempting job's end."""

    def past_a_checkpoint() -> tuple[int, int] | None:
        periodic, done = newest_step(ckpt), len(read_metrics(ckpt))
        return (periodic, done) if periodic >= period and done >= periodic + 2 else None

    periodic, done = wait_until(past_a_checkpoint, 600, "the run two steps past a periodic checkpoint", interval=0.2)
    return preempt_now(cluster, tmp, job, urgent, periodic, done)


def preempt_now(cluster: LocalSlurm, tmp: Path, job: str, urgent: list[str], periodic: int, done: int) -> Preemption:
    """Submit a job with sbatch options ``urgent`` that preempts ``job`` now; wait for the run's requeue and the
    preempting job's end."""
    started = time.monotonic()
    urgent_job = cluster.run(
        ["sbatch", "--parsable", *urgent, "--wrap=sleep 1", f"--output={tmp}/urgent-%j.out"], cwd=tmp
    ).stdout.strip()
    wait_requeued(cluster, job, 1)
    requeued_s = time.monotonic() - started
    return Preemption(periodic, done, requeued_s, wait_final(cluster, urgent_job))


def check_checkpointed_at_preemption(cluster: LocalSlurm, out: str, first: Path, second: Path, got: Preemption) -> int:
    """The run lost nothing to the preemption: it resumed from a checkpoint its batch shell asked for when the
    preemption came, at or after the step it had completed by then (not the last periodic one); returns that step."""
    resumed = resumed_step(second / "driver.log")
    assert resumed is not None, (second / "driver.log").read_text()[-3000:]
    assert resumed >= got.done, (
        f"resumed from step {resumed}, but step {got.done} had completed when the preemption came (last periodic "
        f"checkpoint: step {got.periodic}): {got.done - resumed} step(s) lost"
    )
    stopped = re.search(r"stop requested \((.*)\); checkpointed step (\d+)", (first / "driver.log").read_text())
    assert stopped and stopped.group(1).startswith("stop file "), (first / "driver.log").read_text()[-3000:]
    assert int(stopped.group(2)) == resumed
    result = read_env_file(first / "result.env")  # the batch shell decided, not Slurm's SIGKILL
    assert (result["exit_code"], result["reason"], result["cause"]) == ("75", "requeued", "preempted"), result
    assert "Slurm preempts this job, PreemptTime=" in out and "stop requested (TERM)" not in out, out[-5000:]
    assert "DUE TO PREEMPTION" not in out, out[-5000:]  # requeued before the grace time ran out
    assert cluster.preemption and got.requeued_s < cluster.preemption.grace_time, got
    assert got.urgent["JobState"] == "COMPLETED", got.urgent
    return resumed


def cluster_for(request: pytest.FixtureRequest, mechanism: str) -> LocalSlurm:
    return request.getfixturevalue("preempting_slurm_cluster" if mechanism == "admin settings" else "slurm_cluster")


DEFAULTS_LOSE = pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="negative control: with Slurm's default preemption (no GraceTime, no preempt_send_user_signal) the "
    "driver's save after SIGTERM outlives KillWait and the run resumes from its last periodic checkpoint",
)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["admin settings", pytest.param("slurm defaults", marks=DEFAULTS_LOSE)])
def test_preemption_checkpoints_and_resumes_exactly(
    request: pytest.FixtureRequest, tmp_path: Path, mechanism: str
) -> None:
    """The smoke entry with the CPU driver (no NeMo RL needed) in partition ``cpu``, preempted by a job of
    ``cpu-urgent`` that needs the whole node."""
    cluster = cluster_for(request, mechanism)
    steps, period = 20, 4
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    run_dir = tmp_path / "preempted"
    job = submit_smoke(
        cluster, tmp_path, run_dir, steps, f"checkpointing.save_period={period}",
        HOLDERPO_TRAIN=cpu_driver_as_train(tmp_path), HOLDERPO_TEST_STEP_S="1.0", HOLDERPO_TEST_STOP_SAVE_S=STOP_SAVE_S,
        HOLDERPO_CKPT_TIMEOUT_S=CKPT_TIMEOUT_S,
    )  # fmt: skip
    got = preempt_past_a_checkpoint(cluster, tmp_path, run_dir, job, period, ["--partition=cpu-urgent", "--exclusive"])
    info = wait_final(cluster, job, timeout=400)
    out = (tmp_path / f"holderpo-smoke-cpu-{job}.out").read_text()
    print(f"[{mechanism}] preempted after step {got.done} (periodic checkpoint {got.periodic}); requeued "
          f"{got.requeued_s:.1f} s after the preempting job's submission")  # fmt: skip
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out[-5000:]
    first, second = attempt_dirs(run_dir)
    check_checkpointed_at_preemption(cluster, out, first, second, got)
    assert reproducible(read_metrics(run_dir)) == want


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["admin settings", pytest.param("slurm defaults", marks=DEFAULTS_LOSE)])
def test_preemption_of_the_ray_sub_path_checkpoints_and_resumes_exactly(
    request: pytest.FixtureRequest, tmp_path: Path, mechanism: str
) -> None:
    """The 7B entry through NeMo RL's real ray.sub on 2 nodes of ``gpu`` (needs a NeMo RL v0.7.0 tree, as
    test_nemo_rl_entry.py), preempted by a job of ``gpu-urgent`` on its head node: the batch shell writes the stop
    file, the driver in ray.sub's head checkpoints, ray.sub ends, the batch shell cancels the worker step and
    requeues; the next attempt (new head and workers, new Ray cluster) resumes from that checkpoint and the run ends
    exactly as an uninterrupted one. No socket of the job leaves loopback."""
    tree, python = nemo_rl_tree(), python_with_ray()  # skip before starting a cluster
    cluster = cluster_for(request, mechanism)
    steps, period = 20, 4
    run_dir = tmp_path / "run"
    env = entry_env(
        cluster, tmp_path, run_dir, python, HOLDERPO_NEMO_RL_IN_IMAGE=str(tree), HOLDERPO_TEST_STEP_S="1.0",
        HOLDERPO_TEST_STOP_SAVE_S=STOP_SAVE_S, HOLDERPO_CKPT_TIMEOUT_S=CKPT_TIMEOUT_S,
    )  # fmt: skip
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    ckpt = run_dir / "checkpoints"
    job = submit_entry(cluster, tmp_path, env, steps, f"checkpointing.save_period={period}")
    with SocketWatch(cluster, job) as sockets:
        wait_for(lambda: (run_dir / "logs" / f"{job}-0" / "ray_cluster.json").exists(), 420, "the driver to join Ray")
        head = sorted(job_nodes(cluster, job))[0]  # a node of this job (the default cluster has free ones)
        got = preempt_past_a_checkpoint(
            cluster, tmp_path, ckpt, job, period, ["--partition=gpu-urgent", f"--nodelist={head}", "--exclusive"]
        )
        info = wait_final(cluster, job, timeout=600)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    print(f"[ray.sub, {mechanism}] preempted after step {got.done} (periodic checkpoint {got.periodic}); requeued "
          f"{got.requeued_s:.1f} s after the preempting job's submission")  # fmt: skip
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out[-5000:]
    first, second = attempt_dirs(run_dir)
    check_checkpointed_at_preemption(cluster, out, first, second, got)
    assert reproducible(read_metrics(ckpt)) == want
    assert (ckpt / "COMPLETED").exists() and not list(ckpt.glob("tmp_step_*"))
    for attempt in (first, second):
        log = (attempt / "ray.sub.log").read_text()
        assert "head: cluster ready, launching driver" in log.replace("'", ""), log[-3000:]
    assert sockets.seen and not sockets.off_loopback, sockets.off_loopback[:20]
    assert not job_pids(cluster, job), "processes of the finished job are still running"


@pytest.mark.slurm
@pytest.mark.slow
def test_preemption_during_set_up_of_the_ray_sub_path_requeues_and_resumes_exactly(
    preempting_slurm_cluster: LocalSlurm, tmp_path: Path
) -> None:
    """The 7B entry through NeMo RL's real ray.sub (needs a NeMo RL v0.7.0 tree), preempted with the admin settings
    while ray.sub is still bringing Ray up, before the driver has completed a step: the batch shell has the USR1 at
    once and writes the stop file; HOLDERPO_CKPT_TIMEOUT_S (5 s here, shorter than this set-up; a 7B set-up is
    minutes, the default timeout 240 s) later the driver has completed no step of this attempt, so there is nothing
    to save but what the newest complete checkpoint holds: the batch shell says so, cancels the steps and requeues
    (``cause=preempted``) well within the grace time. The next attempt starts where the run was (here: from
    scratch) and ends exactly as an uninterrupted run."""
    tree, python = nemo_rl_tree(), python_with_ray()
    cluster = preempting_slurm_cluster
    steps, period = 12, 4
    run_dir = tmp_path / "run"
    env = entry_env(
        cluster, tmp_path, run_dir, python, HOLDERPO_NEMO_RL_IN_IMAGE=str(tree), HOLDERPO_TEST_STEP_S="1.0",
        HOLDERPO_CKPT_TIMEOUT_S="5",
    )  # fmt: skip
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    ckpt = run_dir / "checkpoints"
    job = submit_entry(cluster, tmp_path, env, steps, f"checkpointing.save_period={period}")
    first_attempt = run_dir / "logs" / f"{job}-0"
    with SocketWatch(cluster, job) as sockets:
        # ray.sub has started, and the driver has not joined Ray yet: the set-up is under way.
        wait_for(lambda: "ray.sub started" in _text(first_attempt / "ray.sub.log"), 300, "ray.sub to start")
        assert not (first_attempt / "ray_cluster.json").exists(), "the driver started before the preemption"
        head = sorted(job_nodes(cluster, job))[0]
        urgent = ["--partition=gpu-urgent", f"--nodelist={head}", "--exclusive"]
        got = preempt_now(cluster, tmp_path, job, urgent, periodic=-1, done=0)
        info = wait_final(cluster, job, timeout=600)
    out = (tmp_path / f"holderpo-7b-{job}.out").read_text()
    print(f"[ray.sub, during set-up] requeued {got.requeued_s:.1f} s after the preempting job's submission")
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out[-5000:]
    first, second = attempt_dirs(run_dir)
    result = read_env_file(first / "result.env")
    assert (result["reason"], result["cause"], result["newest_step"]) == ("requeued", "preempted", "-1"), result
    assert "Slurm preempts this job, PreemptTime=" in out and "DUE TO PREEMPTION" not in out, out[-5000:]
    assert "without a completed step in this attempt (still setting up; nothing newer than checkpoint step -1" in out
    assert "ERROR: driver still running" not in out, out[-5000:]
    assert "holderpo train: step" not in _text(first / "driver.log") and resumed_step(second / "driver.log") is None
    assert cluster.preemption and got.requeued_s < cluster.preemption.grace_time, got
    assert got.urgent["JobState"] == "COMPLETED", got.urgent
    assert reproducible(read_metrics(ckpt)) == want
    assert (ckpt / "COMPLETED").exists() and not list(ckpt.glob("tmp_step_*"))
    assert sockets.seen and not sockets.off_loopback, sockets.off_loopback[:20]
    assert not job_pids(cluster, job), "processes of the finished job are still running"


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
