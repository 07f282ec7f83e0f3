"""Each attempt's fate (the rule of ``slurm/lib/common.sh``) for the stop paths issue 21 added, on the shell
functions themselves: fast, no cluster.

The Slurm clients the functions call are ``fake_slurm/`` (squeue, scontrol, sinfo, scancel, getent) on ``PATH``:
small scripts that answer as Slurm 22.05 does, messages and exit codes included, with their state in a directory.
``test_fake_slurm_matches_slurm`` checks what they rely on against the real local cluster.

* the run directory's owner check (defect 6): a failed ``squeue`` never hands the directory to a second job;
* a lost Ray worker (defect 3): requeued once; requeued again only after a newer checkpoint, else the job ends naming
  the node; the node is excluded from the next attempt (``scontrol update ExcNodeList`` after ``scontrol requeue``)
  when the partition can spare it;
* a set-up failure (defect 4: the image or Ray bring-up, before the driver starts): requeued when the run had
  progressed, at most ``HOLDERPO_SETUP_RETRIES`` times in a row; a new run's first set-up failing ends the job;
* the progress watchdog (defect 2): a driver that completes a step and then hangs is stopped, its step cancelled
  and the job requeued, the cause logged; the same hang again without a newer checkpoint ends the job;
* a preemption (defect 1) that reaches the batch shell as the job's USR1 (``preempt_send_user_signal``): told from
  the time limit's USR1 by the job's PreemptTime, requeued even past the restart limit; SIGTERM still means stop.
  On the real Slurm: ``test_preemption.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_slurm import LocalSlurm, wait_until
from slurm_runs import REPO, read_env_file

FAKE_SLURM = Path(__file__).with_name("fake_slurm")
JOB = "77"


class Fake:
    """The fake Slurm's state directory and the environment that puts ``fake_slurm/`` first on PATH."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "fake_slurm_state"
        (self.dir / "jobs").mkdir(parents=True)
        self.run_dir = tmp / "run"
        (self.run_dir / "checkpoints").mkdir(parents=True)
        self.job_state(JOB, "RUNNING")

    def job_state(self, job: str, state: str) -> None:
        (self.dir / "jobs" / job).write_text(state + "\n")

    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": f"{FAKE_SLURM}:/usr/bin:/bin", "HOLDERPO_HOME": str(REPO), "FAKE_SLURM": str(self.dir),
                "DIR": str(self.run_dir), **extra}  # fmt: skip

    def checkpoints(self, *steps: int) -> None:
        for step in steps:
            (self.run_dir / "checkpoints" / f"step_{step}").mkdir(exist_ok=True)


# ------------------------------------------------------------------------------- defect 6: the run directory's owner

CLAIM = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
SLURM_JOB_ID=88 HOLDERPO_RUN_DIR=$DIR HP_QUERY_PAUSE_S=0
hp_claim_run_dir
echo "claimed by $(<"$DIR/owner_job")"
"""


@pytest.mark.parametrize(
    ("owner", "slurm", "claimed", "said"),
    [
        ("RUNNING", "", False, "belongs to job 77 (RUNNING)"),
        ("PENDING", "", False, "belongs to job 77 (PENDING)"),
        ("RUNNING", "down", False, "cannot tell whether job 77"),  # defect 6: was "taking over ... (gone)"
        ("RUNNING", "down_tries=2", False, "belongs to job 77 (RUNNING)"),  # the third try answers
        ("RUNNING", "down_tries=3", False, "squeue failed 3 times (slurm_load_jobs error: Socket timed out"),
        ("ENDED", "", True, "taking over run directory from job 77 (gone)"),
        (None, "", True, "taking over run directory from job 77 (gone)"),  # purged: "Invalid job id specified"
    ],
    ids=["running", "pending", "squeue fails", "squeue fails twice", "squeue fails 3 times", "ended", "purged"],
)
def test_a_failed_owner_query_never_hands_the_run_directory_over(
    tmp_path: Path, owner: str | None, slurm: str, claimed: bool, said: str
) -> None:
    fake = Fake(tmp_path)
    if owner is None:
        (fake.dir / "jobs" / JOB).unlink()
    else:
        fake.job_state(JOB, owner)
    if slurm == "down":
        (fake.dir / "down").touch()
    elif slurm.startswith("down_tries="):
        (fake.dir / "down_tries").write_text(slurm.split("=")[1])
    (fake.run_dir / "owner_job").write_text(f"{JOB}\n")
    proc = subprocess.run(
        ["bash", "-c", CLAIM], env=fake.env(), start_new_session=True, capture_output=True, text=True, timeout=60
    )
    out = proc.stdout + proc.stderr
    assert said in out, out
    if claimed:
        assert (proc.returncode, (fake.run_dir / "owner_job").read_text().strip()) == (0, "88"), out
    else:
        assert (proc.returncode, (fake.run_dir / "owner_job").read_text().strip()) == (2, JOB), out


INIT = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
SLURM_JOB_ID=88 HOLDERPO_RUN_DIR=$DIR
hp_init_attempt checkpoints
"""


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("HOLDERPO_MAX_RESTARTS", "many", "must be an integer >= 0, got 'many'"),
        ("HOLDERPO_CKPT_TIMEOUT_S", "0", "must be an integer >= 1 (seconds), got '0'"),
        ("HOLDERPO_SETUP_RETRIES", "-1", "must be an integer >= 0, got '-1'"),
        ("HOLDERPO_EXCLUDE_LOST_NODE", "yes", "must be 0 or 1, got 'yes'"),
        (
            "HOLDERPO_PROGRESS_TIMEOUT_S",
            "soon",
            "must be an integer >= 1 (seconds), 'off', or unset (the default from "
            "the run's measured step time), got 'soon'",
        ),
        ("HOLDERPO_PROGRESS_POLL_S", "0", "must be an integer >= 1 (seconds), got '0'"),
        ("HOLDERPO_SILENT_NODE_WAIT_S", "15s", "must be an integer >= 1 (seconds), got '15s'"),
    ],
)
def test_a_bad_setting_is_refused_before_the_run_directory_is_touched(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    fake = Fake(tmp_path)
    proc = subprocess.run(["bash", "-c", INIT], env=fake.env(**{variable: value}), start_new_session=True,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and f"{variable} {said}" in proc.stderr, proc.stdout + proc.stderr
    assert not (fake.run_dir / "owner_job").exists() and not (fake.run_dir / "logs").exists()


# ------------------------------------------------------------------ defects 3, 4 and 2's rule: one attempt's end

FINISH = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=2 SLURM_JOB_PARTITION=gpu HOLDERPO_RUN_DIR=$DIR
HP_RESTART=$RESTART HOLDERPO_LOG_DIR=$DIR/logs/77-$RESTART HP_CKPT_DIR=$DIR/checkpoints
HP_START_STEP=$START HP_STOP_REASON=$REASON HP_DRIVER_RC=$RC HP_SETUP_FAILED=$SETUP HP_LOST_NODE=$NODE
HOLDERPO_MAX_RESTARTS=${MAX:-5} HOLDERPO_SETUP_RETRIES=2
mkdir -p "$HOLDERPO_LOG_DIR"
hp_finish
"""


def attempt(
    fake: Fake,
    restart: int,
    *,
    rc: int,
    reason: str = "",
    start: int = -1,
    setup: str = "",
    node: str = "",
    **env: str,
) -> tuple[int, dict[str, str], str]:
    """One attempt's end through hp_finish: (job exit code, its result.env, its output). Slurm starts attempt
    ``restart`` as a running job, as after a requeue."""
    fake.job_state(JOB, "RUNNING")
    proc = subprocess.run(
        ["bash", "-c", FINISH], start_new_session=True, capture_output=True, text=True, timeout=60,
        env=fake.env(RESTART=str(restart), START=str(start), REASON=reason, RC=str(rc), SETUP=setup, NODE=node, **env),
    )  # fmt: skip
    result = read_env_file(fake.run_dir / "logs" / f"{JOB}-{restart}" / "result.env")
    return proc.returncode, result, proc.stdout + proc.stderr


def requeues(fake: Fake) -> int:
    return sum(call == f"scontrol requeue {JOB}" for call in fake.calls())


def excluded(fake: Fake) -> str | None:
    path = fake.dir / "excnodes" / JOB
    return path.read_text().strip() if path.exists() else None


def test_a_lost_node_requeues_once_excludes_the_node_and_ends_the_job_when_it_fails_again_without_progress(
    tmp_path: Path,
) -> None:
    fake = Fake(tmp_path)
    (fake.dir / "partition_nodes").write_text("hp-gpu1\nhp-gpu2\nhp-gpu3\n")  # one spare node
    fake.checkpoints(3)
    rc, result, out = attempt(fake, 0, rc=1, reason="lost Ray worker", start=3, node="hp-gpu2")
    assert (rc, result["reason"], result["cause"], result["node"], requeues(fake)) == (
        0, "requeued", "lost_worker", "hp-gpu2", 1), out  # fmt: skip
    # Excluded after the requeue: Slurm refuses ExcNodeList while the job runs (the fake does as Slurm does).
    assert excluded(fake) == "hp-gpu2" and "the next attempt excludes hp-gpu2" in out, out
    calls = fake.calls()
    assert calls.index(f"scontrol requeue {JOB}") < calls.index(f"scontrol update JobId={JOB} ExcNodeList=hp-gpu2")

    # The next attempt loses a node again before any newer checkpoint: the job ends, naming the node; no loop.
    rc, result, out = attempt(fake, 1, rc=1, reason="lost Ray worker", start=3, node="hp-gpu3")
    assert (rc, result["reason"], requeues(fake)) == (1, "lost Ray worker again, no progress", 1), out
    assert "node hp-gpu3 looks broken" in out and "at checkpoint step 3" in out, out


def test_a_lost_node_that_no_longer_answers_slurm_is_left_to_slurm_s_node_failure_requeue(tmp_path: Path) -> None:
    """A dead node (issue 21): its cancelled step stays listed (Slurm hears nothing from it until SlurmdTimeout). The
    batch shell records the attempt as requeued, does not `scontrol requeue` (on Slurm 22.05 such a job restarts
    without its GPUs once the node is DOWN), and waits for Slurm's own node-failure requeue, whose SIGTERM (here: the
    test's, with the job pending again, as after Slurm's requeue) excludes the node."""
    fake = Fake(tmp_path)
    (fake.dir / "partition_nodes").write_text("hp-gpu1\nhp-gpu2\nhp-gpu3\n")
    (fake.dir / "steps").write_text(f"{JOB}.3 hp-gpu2\n")  # ray.sub's worker step, on the dead node: never ends
    (fake.dir / "slurmd_timeout").write_text("30\n")
    fake.checkpoints(3)
    env = fake.env(RESTART="0", START="3", REASON="lost Ray worker", RC="1", SETUP="", NODE="hp-gpu2",
                   HOLDERPO_SILENT_NODE_WAIT_S="1")  # fmt: skip
    proc = subprocess.Popen(["bash", "-c", FINISH], env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    result_file = fake.run_dir / "logs" / f"{JOB}-0" / "result.env"
    try:
        wait_until(result_file.exists, 30, "the attempt's result before the wait")
        time.sleep(1)
        assert proc.poll() is None, "the batch shell did not wait for Slurm's requeue"
        fake.job_state(JOB, "PENDING")  # Slurm's node-failure requeue: the job pends again, its batch step gets TERM
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    result = read_env_file(result_file)
    assert (proc.returncode, result["reason"], result["cause"], result["node"]) == (
        0, "requeued", "lost_worker", "hp-gpu2"), out  # fmt: skip
    assert f"step {JOB}.3 still runs on hp-gpu2 1s after its cancel: hp-gpu2 does not answer Slurm" in out, out
    assert "so Slurm requeues the job itself when it marks it DOWN (SlurmdTimeout=30s)" in out, out
    assert requeues(fake) == 0, fake.calls()  # not scontrol requeue
    assert excluded(fake) == "hp-gpu2" and "Slurm requeued the job for the failure of hp-gpu2; the next attempt" \
        " excludes hp-gpu2 (ExcNodeList)" in out, out  # fmt: skip


def test_a_lost_node_after_a_newer_checkpoint_requeues_again(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    (fake.dir / "partition_nodes").write_text("hp-gpu1\nhp-gpu2\nhp-gpu3\nhp-gpu4\n")
    fake.checkpoints(3)
    assert attempt(fake, 0, rc=1, reason="lost Ray worker", start=3, node="hp-gpu2")[1]["reason"] == "requeued"
    fake.checkpoints(6)  # attempt 1 made progress before its node was lost
    rc, result, out = attempt(fake, 1, rc=1, reason="lost Ray worker", start=3, node="hp-gpu3")
    assert (rc, result["reason"], requeues(fake)) == (0, "requeued", 2), out
    assert excluded(fake) == "hp-gpu2,hp-gpu3", out  # both nodes, kept across requeues
    # Another stop in between (USR1) does not reset the count: what counts is a newer checkpoint.
    assert attempt(fake, 2, rc=75, reason="USR1", start=6)[1]["reason"] == "requeued"
    rc, result, out = attempt(fake, 3, rc=1, reason="lost Ray worker", start=6)
    assert (rc, result["reason"]) == (1, "lost Ray worker again, no progress"), out
    assert "looks broken" not in out  # no node known: none named, none blamed


def test_a_lost_node_is_not_excluded_when_the_partition_cannot_spare_it(tmp_path: Path) -> None:
    """A job excluded from more nodes than it can spare pends for ever (Slurm: Reason=BadConstraints)."""
    fake = Fake(tmp_path)
    (fake.dir / "partition_nodes").write_text("hp-gpu1\nhp-gpu2\n")  # exactly the job's 2 nodes
    fake.checkpoints(3)
    rc, result, out = attempt(fake, 0, rc=1, reason="lost Ray worker", start=3, node="hp-gpu2")
    assert (rc, result["reason"], excluded(fake)) == (0, "requeued", None), out
    assert "not excluding hp-gpu2 from the next attempt: partition gpu has 2 node(s)" in out, out
    # HOLDERPO_EXCLUDE_LOST_NODE=0: never excluded.
    fake2 = Fake(tmp_path / "off")
    (fake2.dir / "partition_nodes").write_text("hp-gpu1\nhp-gpu2\nhp-gpu3\n")
    fake2.checkpoints(3)
    rc, result, out = attempt(fake2, 0, rc=1, reason="lost Ray worker", start=3, node="hp-gpu2",
                              HOLDERPO_EXCLUDE_LOST_NODE="0")  # fmt: skip
    assert (rc, excluded(fake2)) == (0, None), out


LOST_NODE = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
source "$HOLDERPO_HOME/slurm/lib/nemo_rl.sh"
SLURM_JOB_NODELIST=$NODELIST SLURM_JOB_NUM_NODES=$NODES HP_RAY_LOG_DIR=$DIR
[[ -z "$ENDED" ]] || touch "$DIR/ENDED"
hp_lost_node
echo "lost node: '$HP_LOST_NODE'"
"""


@pytest.mark.parametrize(
    ("log", "nodes", "ended", "node"),
    [
        # Ray 2.x's ActorDiedError (python/ray/exceptions.py prints the actor's "ip: ...") and a task's node.
        ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
         "\tclass_name: Worker\n\tactor_id: 4f6d\n\tpid: 4242\n\tip: 127.0.1.3\n"
         "The actor died because its node has died. Node Id: 9c1e", "hp-gpu[1-3]", "", "hp-gpu2"),
        ("Task failed because the node it was running on is dead or unavailable. Node IP: 127.0.1.4, node ID: ab",
         "hp-gpu[1-3]", "", "hp-gpu3"),
        # Ray 2.60 (the local Slurm, test_nemo_rl_entry.py): a call to an actor whose node was lost fails to connect
        # to the actor's own address.
        ("ray.exceptions.ActorUnavailableError: The actor ae82 is unavailable: The actor is temporarily unavailable: "
         "RpcError: RPC error: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.1.3:20042: "
         "Failed to connect to remote host: Connection refused", "hp-gpu[1-3]", "1", "hp-gpu2"),
        ("The actor died because its node has died. Node Id: 9c1e", "hp-gpu[1-3]", "1", ""),
        ("\tip: 10.9.9.9\nThe actor died because its node has died.", "hp-gpu[1-3]", "", ""),
        # No address in the log: a 2-node job whose worker step ended lost its one worker, the node that is not
        # ray.sub's head (the first "name|address" in sort order: hp-gpu1 here).
        ("RuntimeError: NCCL timeout", "hp-gpu[1-2]", "1", "hp-gpu2"),
        ("RuntimeError: NCCL timeout", "hp-gpu[1-2]", "", ""),
    ],
    ids=["actor died", "task's node dead", "actor unavailable", "no address, 3 nodes", "address of no node",
         "2 nodes, ENDED", "2 nodes, no ENDED"],
)  # fmt: skip
def test_the_lost_node_is_the_node_ray_names(tmp_path: Path, log: str, nodes: str, ended: str, node: str) -> None:
    fake = Fake(tmp_path)
    (fake.dir / "hosts").write_text("127.0.1.2 hp-gpu1\n127.0.1.3 hp-gpu2\n127.0.1.4 hp-gpu3\n")
    (fake.run_dir / "ray-driver.log").write_text(log + "\n")
    env = fake.env(NODELIST=nodes, NODES="3" if nodes.endswith("1-3]") else "2", ENDED=ended)
    proc = subprocess.run(
        ["bash", "-c", LOST_NODE], env=env, start_new_session=True, capture_output=True, text=True, timeout=60
    )
    assert f"lost node: '{node}'" in proc.stdout, proc.stdout + proc.stderr


CRASHED = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
source "$HOLDERPO_HOME/slurm/lib/nemo_rl.sh"
SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=$NODES SLURM_JOB_NODELIST=$NODELIST SLURM_JOB_PARTITION=gpu HOLDERPO_RUN_DIR=$DIR
HP_RESTART=0 HOLDERPO_LOG_DIR=$DIR/logs/77-0 HP_CKPT_DIR=$DIR/checkpoints HP_START_STEP=3 HP_DRIVER_RC=${RC:-1}
HP_RAY_LOG_DIR=$DIR/ray HOLDERPO_MAX_RESTARTS=5 HOLDERPO_SETUP_RETRIES=2
mkdir -p "$HOLDERPO_LOG_DIR"
hp_classify_ray_sub_end
hp_finish
"""

# What the driver's log ends with when the node of one of its actors died a moment ago (Ray 2.60, seen on the local
# Slurm: test_nemo_rl_entry.py's node death): the call's connection to the actor's own address was refused, and the
# GCS had not yet declared the node dead.
UNAVAILABLE = (
    "Traceback (most recent call last):\n"
    '  File "cpu_driver.py", line 148, in _train_step\n'
    "ray.exceptions.ActorUnavailableError: The actor 5c0d8e4b3a is unavailable: The actor is temporarily unavailable: "
    "RpcError: RPC error: failed to connect to all addresses; last error: UNKNOWN: ipv4:{ip}:20042: Failed to connect "
    "to remote host: Connection refused. The task may or may not have been executed on the actor."
)


@pytest.mark.parametrize(
    ("log", "nodes", "want"),
    [
        # The defect: the worker node died, squeue still lists its step (Slurm has not noticed), the driver crashed
        # on the unreachable actor. Was: "driver failed" (FAILED, no node named, nothing excluded).
        (UNAVAILABLE.format(ip="127.0.1.3"), "hp-gpu[1-2]", ("requeued", "lost_worker", "hp-gpu2")),
        (UNAVAILABLE.format(ip="127.0.1.4"), "hp-gpu[1-3]", ("requeued", "lost_worker", "hp-gpu3")),
        # Ray's own report, once the GCS has declared the node dead.
        ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n\tip: 127.0.1.3\n"
         "The actor died because its node has died. Node Id: 9c1e", "hp-gpu[1-2]", ("requeued", "lost_worker",
                                                                                    "hp-gpu2")),
        # The GCS's verdict, printed by the driver before a crash whose own error blamed only the actor's process
        # (seen on the local Slurm: the node's processes die in some order, and the raylet may report its worker).
        ("\x1b[33m(raylet)\x1b[0m The node with node id: a12bb6 and address: 127.0.1.3 and node name: 127.0.1.3 has "
         "been marked dead because the detector has missed too many heartbeats from it. This can happen when a \t(1) "
         "raylet crashes unexpectedly (OOM, etc.)\nray.exceptions.ActorDiedError: The actor died unexpectedly before "
         "finishing this task.\nThe actor is dead because its worker process has died. Worker exit type: "
         "SYSTEM_ERROR", "hp-gpu[1-2]", ("requeued", "lost_worker", "hp-gpu2")),
        # An unreachable actor on the head node, where the driver runs and so the node lives: a crash of that actor.
        (UNAVAILABLE.format(ip="127.0.1.2"), "hp-gpu[1-2]", ("driver failed", "crash", "")),
        # An address of no node of the allocation, or no address: nothing names a lost node.
        (UNAVAILABLE.format(ip="10.9.9.9"), "hp-gpu[1-2]", ("driver failed", "crash", "")),
        ("ray.exceptions.ActorUnavailableError: The actor 5c0d is unavailable: The actor is restarting.",
         "hp-gpu[1-2]", ("driver failed", "crash", "")),
        ("ValueError: bad batch", "hp-gpu[1-2]", ("driver failed", "crash", "")),
    ],
    ids=["unreachable actor on the worker", "on a worker of 3 nodes", "node died (GCS)", "GCS verdict", "on the head",
         "address of no node", "no address", "plain crash"],
)  # fmt: skip
def test_a_driver_crashed_by_a_node_that_just_died_is_a_lost_worker(
    tmp_path: Path, log: str, nodes: str, want: tuple[str, str, str]
) -> None:
    """A real node death (every process of the node gone at once) reaches Ray within a second and Slurm only after
    SlurmdTimeout: the driver crashes while squeue still lists the dead node's worker step, and Ray 2.60's error is
    often ActorUnavailableError naming the actor's address, not "its node has died". That is a lost worker on that
    node (requeue, node named and excluded), not a driver crash (FAILED before any new checkpoint)."""
    fake = Fake(tmp_path)
    fake.checkpoints(3)
    (fake.dir / "hosts").write_text("127.0.1.2 hp-gpu1\n127.0.1.3 hp-gpu2\n127.0.1.4 hp-gpu3\n")
    (fake.dir / "partition_nodes").write_text("hp-gpu1\nhp-gpu2\nhp-gpu3\nhp-gpu4\n")
    (fake.dir / "steps").write_text(f"{JOB}.batch\n{JOB}.2\n")  # the worker step: Slurm still lists it
    (fake.run_dir / "ray").mkdir()
    (fake.run_dir / "ray" / "ray-driver.log").write_text(log + "\n")
    env = fake.env(NODELIST=nodes, NODES="3" if nodes.endswith("1-3]") else "2")
    proc = subprocess.run(
        ["bash", "-c", CRASHED], env=env, start_new_session=True, capture_output=True, text=True, timeout=60
    )
    out = proc.stdout + proc.stderr
    result = read_env_file(fake.run_dir / "logs" / f"{JOB}-0" / "result.env")
    assert (result["reason"], result["cause"], result.get("node", "")) == want, out
    assert proc.returncode == (0 if want[0] == "requeued" else 1), out
    assert excluded(fake) == (want[2] or None), out
    if "ActorUnavailableError" in log and want[2]:
        assert f"could not reach on {want[2]}" in out, out


@pytest.mark.parametrize(
    ("rc", "preempt_time", "ended", "want"),
    [
        (138, "", False, (0, "requeued", "stop")),  # scancel --signal=USR1 <job>: was "lost Ray worker" (no step left)
        (143, "", False, (143, "stopped by SIGTERM", "term")),  # scancel --signal=TERM <job>: was requeued
        (143, "2026-12-07T12:15:18", False, (0, "requeued", "preempted")),  # GraceTime, no preempt_send_user_signal
        (143, "", True, (0, "requeued", "lost_worker")),  # ray.sub's head sidecar after ENDED: a lost worker
        (1, "", False, (0, "requeued", "lost_worker")),  # a crash with no worker step left: as before
    ],
    ids=["USR1 to the steps", "SIGTERM to the steps", "SIGTERM to the steps, preempted", "ENDED, then the sidecar",
         "crash, no worker step"],
)  # fmt: skip
def test_a_signal_to_the_job_s_steps_keeps_its_meaning(
    tmp_path: Path, rc: int, preempt_time: str, ended: bool, want: tuple[int, str, str]
) -> None:
    """`scancel --signal=USR1|TERM <job>` without --batch: the signal kills ray.sub's head and worker steps (their
    bash, Ray, the driver) and ray.sub exits 128+signal (measured on the local Slurm), with no worker step left.
    USR1 still means stop and requeue, SIGTERM stop (a preemption's SIGTERM: requeue), resuming from the newest
    complete checkpoint, instead of "lost Ray worker" (which would blame the loop rule, and requeue a SIGTERM)."""
    fake = Fake(tmp_path)
    fake.checkpoints(3)
    (fake.dir / "hosts").write_text("127.0.1.2 hp-gpu1\n127.0.1.3 hp-gpu2\n")
    (fake.dir / "partition_nodes").write_text("hp-gpu1\nhp-gpu2\nhp-gpu3\n")
    (fake.dir / "steps").write_text(f"{JOB}.batch\n")  # the signal ended every step
    if preempt_time:
        (fake.dir / "preempt_time").mkdir()
        (fake.dir / "preempt_time" / JOB).write_text(preempt_time + "\n")
    (fake.run_dir / "ray").mkdir()
    (fake.run_dir / "ray" / "ray-driver.log").write_text("holderpo train: step 4/30 (checkpoint)\n")
    if ended:
        (fake.run_dir / "ray" / "ENDED").touch()
    env = fake.env(NODELIST="hp-gpu[1-2]", NODES="2", RC=str(rc))
    proc = subprocess.run(
        ["bash", "-c", CRASHED], env=env, start_new_session=True, capture_output=True, text=True, timeout=60
    )
    out = proc.stdout + proc.stderr
    result = read_env_file(fake.run_dir / "logs" / f"{JOB}-0" / "result.env")
    assert (proc.returncode, result["reason"], result["cause"]) == want, out
    assert result["exit_code"] == str(rc) and result["newest_step"] == "3", result
    assert ("went to the job's steps, not to this batch shell" in out) == (rc in (138, 143) and not ended), out


@pytest.mark.parametrize(
    ("restart", "checkpoints", "earlier_setup_requeues", "want"),
    [
        (0, (), 0, (1, "set-up failed", 0)),  # a new run's first set-up: a configuration error, not retried
        (1, (3,), 0, (0, "requeued", 1)),  # defect 4: was "driver failed", the job FAILED although it had progressed
        (0, (3,), 0, (0, "requeued", 1)),  # a resubmission of a run that has checkpoints
        (1, (), 0, (0, "requeued", 1)),  # attempt 0 stopped (USR1) before its first checkpoint: set-up had worked
        (2, (3,), 1, (0, "requeued", 1)),
        (3, (3,), 2, (1, "set-up failed", 0)),  # HOLDERPO_SETUP_RETRIES=2 in a row: the job ends with the cause
    ],
    ids=["new run", "later attempt", "resubmission", "after a stop", "second retry", "retries spent"],
)
def test_a_set_up_failure_is_retried_by_requeue_when_the_run_had_progressed(
    tmp_path: Path, restart: int, checkpoints: tuple[int, ...], earlier_setup_requeues: int, want: tuple
) -> None:
    fake = Fake(tmp_path)
    fake.checkpoints(*checkpoints)
    for n in range(restart):  # the earlier attempts' outcomes: the last ones set-up requeues
        cause = "setup" if n >= restart - earlier_setup_requeues else "stop"
        log_dir = fake.run_dir / "logs" / f"{JOB}-{n}"
        log_dir.mkdir(parents=True)
        (log_dir / "result.env").write_text(f"exit_code=1\nreason=requeued\ncause={cause}\nnewest_step=3\n")
    start = max(checkpoints, default=-1)
    rc, result, out = attempt(fake, restart, rc=1, start=start, setup="Ray bring-up: ray.sub exited 1")
    assert (rc, result["reason"], requeues(fake)) == want, out
    assert result["cause"] == "setup" and "set-up failed (Ray bring-up: ray.sub exited 1)" in out, out


def test_a_set_up_retry_still_counts_against_the_restart_limit(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.checkpoints(3)
    rc, result, out = attempt(fake, 2, rc=1, start=3, setup="the image did not start on every node", MAX="2")
    assert (rc, result["reason"], requeues(fake)) == (1, "restart limit reached", 0), out


BRING_UP = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
source "$HOLDERPO_HOME/slurm/lib/nemo_rl.sh"
SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=2 HOLDERPO_RUN_DIR=$DIR HP_RESTART=1 HOLDERPO_LOG_DIR=$DIR/logs/77-1
HP_CKPT_DIR=$DIR/checkpoints HP_START_STEP=3 HP_DRIVER_RC=1 HP_RAY_LOG_DIR=$DIR/ray HOLDERPO_MAX_RESTARTS=5
HOLDERPO_SETUP_RETRIES=2
mkdir -p "$HOLDERPO_LOG_DIR" "$HP_RAY_LOG_DIR"
hp_check_lost_worker
hp_check_bring_up
hp_finish
"""


@pytest.mark.parametrize("driver_started", [False, True], ids=["ray.sub failed before the driver", "driver failed"])
def test_ray_sub_failing_before_the_driver_is_a_set_up_failure(tmp_path: Path, driver_started: bool) -> None:
    fake = Fake(tmp_path)
    fake.checkpoints(3)
    (fake.dir / "steps").write_text(f"{JOB}.batch\n{JOB}.2\n")  # the worker step still runs: no lost worker
    if driver_started:
        (fake.run_dir / "ray").mkdir()
        (fake.run_dir / "ray" / "ray-driver.log").write_text("ValueError: bad batch\n")
    proc = subprocess.run(
        ["bash", "-c", BRING_UP], env=fake.env(), start_new_session=True, capture_output=True, text=True, timeout=60
    )
    result = read_env_file(fake.run_dir / "logs" / f"{JOB}-1" / "result.env")
    want = ("driver failed", "crash") if driver_started else ("requeued", "setup")
    assert (result["reason"], result["cause"]) == want, proc.stdout + proc.stderr


PREPARE = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
source "$HOLDERPO_HOME/slurm/lib/nemo_rl.sh"
srun() { echo "srun $*" >>"$FAKE_SLURM/calls"; echo "pyxis: failed to import docker image" >&2; return 1; }
SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=2 SLURM_JOB_NODELIST=hp-gpu[1-2] HOLDERPO_RUN_DIR=$DIR HP_RESTART=$RESTART
HOLDERPO_LOG_DIR=$DIR/logs/77-$RESTART HP_CKPT_DIR=$DIR/checkpoints HP_START_STEP=$START HOLDERPO_MAX_RESTARTS=5
HOLDERPO_SETUP_RETRIES=2 HOLDERPO_CONTAINER_IMAGE=registry.example#nemo-rl:v0.7.0 HOLDERPO_CACHE_DIR=$DIR/cache
NEMO_RL_HOME=$NEMO_RL_HOME
mkdir -p "$HOLDERPO_LOG_DIR"
hp_prepare_containers
echo "not reached"
"""


@pytest.mark.parametrize("restart", [0, 1])
def test_an_image_that_fails_to_start_goes_through_the_rule(tmp_path: Path, restart: int) -> None:
    """hp_prepare_containers' failed image start (a registry's rate limit, a full enroot disk): the rule decides
    (was: refused, exit 2, on every attempt)."""
    fake = Fake(tmp_path)
    nemo_rl = tmp_path / "nemo-rl"
    (nemo_rl / "nemo_rl").mkdir(parents=True)
    (nemo_rl / "ray.sub").write_text("#!/bin/bash\n")
    (nemo_rl / "nemo_rl" / "package_info.py").write_text("MAJOR = 0\nMINOR = 7\nPATCH = 0\n")
    (fake.dir / "hosts").write_text("127.0.1.2 hp-gpu1\n127.0.1.3 hp-gpu2\n")
    if restart:
        fake.checkpoints(3)
    env = fake.env(RESTART=str(restart), START="3" if restart else "-1", NEMO_RL_HOME=str(nemo_rl))
    proc = subprocess.run(
        ["bash", "-c", PREPARE], env=env, start_new_session=True, capture_output=True, text=True, timeout=60
    )
    out = proc.stdout + proc.stderr
    result = read_env_file(fake.run_dir / "logs" / f"{JOB}-{restart}" / "result.env")
    assert "not reached" not in out and "could not start registry.example#nemo-rl:v0.7.0 on every node" in out, out
    want = (0, "requeued") if restart else (1, "set-up failed")
    assert (proc.returncode, result["reason"], result["cause"]) == (*want, "setup"), out


# ------------------------------------------------------------------- defect 1: a preemption reaching the shell as USR1

PREEMPTED_AT = "2026-12-07T12:15:18"


@pytest.mark.parametrize(
    ("reason", "preempt_time", "restart", "want"),
    [
        ("USR1", PREEMPTED_AT, 0, (0, "requeued", "preempted", 1)),
        ("USR1", PREEMPTED_AT, 2, (0, "requeued", "preempted", 1)),  # past the limit: Slurm would requeue it too
        ("USR1", "", 0, (0, "requeued", "stop", 1)),  # the time limit's USR1, or scancel --signal=USR1 --batch
        ("USR1", "", 2, (75, "restart limit reached", "stop", 0)),
        ("TERM", PREEMPTED_AT, 0, (75, "stopped by SIGTERM", "term", 0)),  # the grace time ran out: Slurm requeues
        ("TERM", "", 0, (75, "stopped by SIGTERM", "term", 0)),  # scancel --signal=TERM --batch: stop, no requeue
    ],
    ids=["preempted", "preempted past the restart limit", "time limit", "time limit past the restart limit",
         "SIGTERM at the grace time's end", "the user's SIGTERM"],
)  # fmt: skip
def test_a_preemption_signalled_as_usr1_checkpoints_and_requeues(
    tmp_path: Path, reason: str, preempt_time: str, restart: int, want: tuple
) -> None:
    """With SlurmctldParameters=preempt_send_user_signal and a GraceTime, Slurm preempts a job by sending its own
    --signal (B:USR1) to the batch shell, as at the time limit; the driver checkpoints and the batch shell requeues
    the job itself. `scontrol show job`'s PreemptTime tells a preemption (cause=preempted, requeued whatever the
    restart count) from the time limit (cause=stop, under HOLDERPO_MAX_RESTARTS); a SIGTERM keeps meaning stop."""
    fake = Fake(tmp_path)
    fake.checkpoints(3, 5)
    if preempt_time:
        (fake.dir / "preempt_time").mkdir()
        (fake.dir / "preempt_time" / JOB).write_text(preempt_time + "\n")
    rc, result, out = attempt(fake, restart, rc=75, reason=reason, start=3, MAX="2")
    assert (rc, result["reason"], result["cause"], requeues(fake)) == want, out
    assert result["newest_step"] == "5"
    assert (f"Slurm preempts this job, PreemptTime={PREEMPTED_AT}" in out) == (want[2] == "preempted"), out


# ---------------------------------------------------------------------------- defect 2: the progress watchdog

HANGING_DRIVER = r"""
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, os.environ["HOLDERPO_HOME"])
from holder_nemo.nemo_rl.progress import ProgressRecorder

# A driver stand-in that completes one training step and then hangs (a stuck NCCL collective): it ignores the stop
# file and SIGTERM, as a process blocked in a collective does; only SIGKILL ends it.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
Path(os.environ["FAKE_SLURM"], "step_pids").write_text(f"{os.getpid()}\n")
progress = ProgressRecorder.from_env()
progress.start()
progress.training_started()
time.sleep(float(os.environ.get("FIRST_STEP_S", "0.2")))
progress.completed("step", 1)
print("step 1 done; hanging", flush=True)
while True:
    time.sleep(3600)
"""

WATCHDOG = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
hp_install_traps
SLURM_JOB_ID=77 HP_RESTART=$RESTART HOLDERPO_RUN_DIR=$DIR HOLDERPO_LOG_DIR=$DIR/logs/77-$RESTART
HP_CKPT_DIR=$DIR/checkpoints HOLDERPO_STOP_FILE=$HOLDERPO_LOG_DIR/STOP HOLDERPO_PROGRESS_FILE=$DIR/progress.json
HP_ATTEMPT_START=$(date +%s) HP_START_STEP=3 HOLDERPO_MAX_RESTARTS=5 HOLDERPO_SETUP_RETRIES=2
HOLDERPO_CKPT_TIMEOUT_S=2 HOLDERPO_PROGRESS_TIMEOUT_S=2 HOLDERPO_PROGRESS_POLL_S=1
export HOLDERPO_PROGRESS_FILE
mkdir -p "$HOLDERPO_LOG_DIR"
hp_run_driver "$HOLDERPO_LOG_DIR/driver.log" "$PYTHON" "$DRIVER"
hp_finish
"""


def run_batch_shell(env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    """WATCHDOG in its own session; whatever is left of it (a hung driver that was never stopped: it ignores
    SIGTERM) is SIGKILLed when it ends or times out."""
    proc = subprocess.Popen(["bash", "-c", WATCHDOG], env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_hanging_attempt(fake: Fake, tmp: Path, restart: int) -> tuple[subprocess.CompletedProcess, float]:
    driver = tmp / "hanging_driver.py"
    driver.write_text(HANGING_DRIVER)
    (fake.dir / "steps").write_text(f"{JOB}.batch\n{JOB}.0\n")
    fake.job_state(JOB, "RUNNING")
    env = fake.env(RESTART=str(restart), PYTHON=sys.executable, DRIVER=str(driver))
    started = time.monotonic()
    proc = run_batch_shell(env)
    return proc, time.monotonic() - started


def test_a_driver_that_hangs_after_a_step_is_stopped_and_requeued(tmp_path: Path) -> None:
    """No step, validation or checkpoint for HOLDERPO_PROGRESS_TIMEOUT_S after the first completed step: the batch
    shell requests a stop, HOLDERPO_CKPT_TIMEOUT_S later cancels the driver's step (SIGKILL: the hung driver ignores
    the stop file and SIGTERM) and requeues, with the cause in the log and in result.env (was: the hang held the
    allocation until its end)."""
    fake = Fake(tmp_path)
    fake.checkpoints(3)
    proc, seconds = run_hanging_attempt(fake, tmp_path, 0)
    out = proc.stdout + proc.stderr
    result = read_env_file(fake.run_dir / "logs" / f"{JOB}-0" / "result.env")
    want = (0, "requeued", "no_progress", 1)
    assert (proc.returncode, result["reason"], result["cause"], requeues(fake)) == want, out
    assert "progress watchdog: no step, validation or checkpoint completed for" in out, out
    assert "last: step of step 1" in out and "stop requested (no progress)" in out, out
    assert f"scancel {JOB}.0" in fake.calls() and f"scancel {JOB}.batch" not in fake.calls()
    assert result["exit_code"] == "137"  # SIGKILL: the only way a hung driver ends
    assert seconds < 30, seconds  # timeout 2 s + checkpoint timeout 2 s + polls, not the allocation's end

    # The next attempt hangs again with no newer checkpoint: the job ends, no loop.
    proc, _ = run_hanging_attempt(fake, tmp_path, 1)
    result = read_env_file(fake.run_dir / "logs" / f"{JOB}-1" / "result.env")
    assert (proc.returncode, result["reason"], requeues(fake)) == (137, "no progress again", 1), proc.stderr


def test_the_watchdog_is_not_armed_before_the_first_step(tmp_path: Path) -> None:
    """Start-up (Ray, model load, the first step's warm-up) never counts: a driver whose first step takes longer
    than the timeout runs on; the watchdog arms once it completes, and then finds the hang."""
    fake = Fake(tmp_path)
    fake.checkpoints(3)
    driver = tmp_path / "hanging_driver.py"
    driver.write_text(HANGING_DRIVER)
    (fake.dir / "steps").write_text(f"{JOB}.batch\n{JOB}.0\n")
    env = fake.env(RESTART="0", PYTHON=sys.executable, DRIVER=str(driver), FIRST_STEP_S="6")
    proc = run_batch_shell(env)
    out = proc.stdout + proc.stderr
    stalled = [line for line in out.splitlines() if "progress watchdog:" in line]
    assert stalled and "+" in stalled[0], out
    # The stop came at least the 6 s of the first step plus the 2 s timeout after the start: the first step's
    # 6 s (3 x the timeout) never counted.
    seconds = int(stalled[0].split("][+")[1].split("s]")[0])
    assert seconds >= 8, out
    assert read_env_file(fake.run_dir / "logs" / f"{JOB}-0" / "result.env")["cause"] == "no_progress"


# ----------------------------------------------------------------- the fakes against the real Slurm they stand for


@pytest.mark.slurm
def test_fake_slurm_matches_slurm(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """What fake_slurm/ relies on, asked of the real local Slurm: squeue's answer for a purged job id; the
    PreemptTime of a job not preempted; ExcNodeList
    refused for a running job and taken once it is requeued (and honoured by the next start); `scancel JOB.STEP`
    kills the step's tasks with SIGKILL at once (a SIGTERM trap never runs, KillWait is not waited)."""
    unknown = slurm_cluster.run(["squeue", "-h", "-j", "999999", "-o", "%T"], check=False)
    assert unknown.returncode == 1 and "Invalid job id specified" in unknown.stderr, unknown

    marker = tmp_path / "term-trapped"
    script = f"trap 'echo TERM >{marker}' TERM; sleep 300 & wait; sleep 300 & wait"
    job = slurm_cluster.run(["sbatch", "--parsable", "--partition=gpu", "--nodes=2", "--requeue",
                             f"--output={tmp_path}/job-%j.out",
                             f"--wrap=srun --nodes=1 --ntasks=1 bash -c \"{script}\"; sleep 300"],
                            cwd=tmp_path).stdout.strip()  # fmt: skip
    info = slurm_cluster.wait_job(job, lambda i: i["JobState"] == "RUNNING", 60, "the job to run")
    shown = slurm_cluster.run(["scontrol", "show", "job", job]).stdout  # hp_preempt_time's source, as the fake's
    assert re.search(r"(^| )PreemptTime=None( |$)", shown, re.MULTILINE), shown  # (set: test_preemption.py)
    assert re.search(r"(^| )Requeue=1( |$)", shown, re.MULTILINE), shown  # hp_await_node_failure_requeue's source
    config = slurm_cluster.run(["scontrol", "show", "config"]).stdout  # and its SlurmdTimeout, read with this sed
    assert re.search(r"^SlurmdTimeout *= *[0-9]+ sec$", config, re.MULTILINE), config
    steps = wait_until(
        lambda: [s for s in slurm_cluster.run(["squeue", "-h", "-s", "-j", job, "-o", "%i"]).stdout.split()
                 if s == f"{job}.0"], 60, "the step to start")  # fmt: skip
    started = time.monotonic()
    slurm_cluster.run(["scancel", steps[0]])
    wait_until(lambda: f"{job}.0" not in slurm_cluster.run(["squeue", "-h", "-s", "-j", job, "-o", "%i"]).stdout,
               30, "the step to end")  # fmt: skip
    assert time.monotonic() - started < 5  # KillWait is 5 s on this cluster: not waited
    time.sleep(1)
    assert not marker.exists(), "the step got SIGTERM: scancel JOB.STEP is documented (and relied on) as SIGKILL"

    first_nodes = info["NodeList"]
    assert slurm_cluster.job(job)["JobState"] == "RUNNING"  # the batch script sleeps on: the job still runs
    refused = slurm_cluster.run(["scontrol", "update", f"JobId={job}", "ExcNodeList=hp-gpu4"], check=False)
    assert refused.returncode != 0 and "Job is no longer pending execution" in refused.stderr, refused
    slurm_cluster.run(["scontrol", "requeue", job])
    taken = slurm_cluster.run(["scontrol", "update", f"JobId={job}", f"ExcNodeList={first_nodes}"], check=False)
    assert taken.returncode == 0, taken
    again = slurm_cluster.wait_job(job, lambda i: i["JobState"] == "RUNNING" and i["Restarts"] == "1", 120,
                                   "the requeued job to run again")  # fmt: skip
    assert set(slurm_cluster.run(["scontrol", "show", "hostnames", again["NodeList"]]).stdout.split()).isdisjoint(
        slurm_cluster.run(["scontrol", "show", "hostnames", first_nodes]).stdout.split()
    ), (first_nodes, again["NodeList"])
    slurm_cluster.run(["scancel", job])  # its batch script sleeps
