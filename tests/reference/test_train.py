"""The reference run end to end on a tiny recipe: completion, exact resume at every step, the stop contract.

All runs use the real recipe, real HF Qwen2 model, real loss plugin and real checkpoints; only sizes are shrunk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reference_helpers import REPO, SMOKE, tiny

from holder_nemo.reference.checkpoint import list_checkpoints
from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.reference.train import EXIT_COMPLETED, EXIT_STOPPED, main

STEPS = 6
SIGNAL_STEPS = 40  # long enough that a signal sent after step 1 always lands before the last step


def reproducible(records: list[dict]) -> list[dict]:
    """Metrics without the wall-clock/memory entries (``perf/...``), which legitimately differ between runs."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    overrides = tiny(
        STEPS, run_dir, "checkpointing.save_period=2", "logger.plot=true", "logger.tensorboard_enabled=true"
    )
    assert main([str(SMOKE), *overrides]) == 0
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted_long(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted_long")
    assert main([str(SMOKE), *tiny(SIGNAL_STEPS, run_dir, "checkpointing.save_period=100")]) == 0
    return run_dir


def test_completed_run_has_metrics_checkpoints_figure(uninterrupted):
    records = read_metrics(uninterrupted)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    # p follows linear_dec 2 -> -2 over max_num_steps, 1-based: p(k) = 2 - 4 k / STEPS
    for r in records:
        assert r["holder_p"] == pytest.approx(2 - 4 * r["step"] / STEPS)
    first = records[0]
    for key in ("reward_mean", "grad_norm", "holder/effective_tokens", "holder/seq_clip_frac_high", "loss"):
        assert key in first
    assert first["num_updates"] == 2  # 16 rows / train_global_batch_size 8
    assert 0.0 <= first["reward_mean"] <= 1.0
    # several updates per step move the ratio off 1 (the clip can act)
    assert any(r["probs_ratio_max"] > 1.0 or r["probs_ratio_min"] < 1.0 for r in records)
    # keep_last_k = 2 of the saves at steps 2, 4 and the final 6
    assert [step for step, _ in list_checkpoints(uninterrupted)] == [4, 6]
    summary = json.loads((uninterrupted / "COMPLETED").read_text())
    assert summary["steps"] == STEPS
    assert (uninterrupted / "training.png").stat().st_size > 10_000
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((uninterrupted / "tb").glob("events.out.tfevents.*"))


def test_rerun_of_completed_run_is_a_no_op(uninterrupted, capsys):
    before = (uninterrupted / "metrics.jsonl").read_text()
    assert main([str(SMOKE), *tiny(STEPS, uninterrupted)]) == EXIT_COMPLETED
    assert "already complete" in capsys.readouterr().out
    assert (uninterrupted / "metrics.jsonl").read_text() == before


def test_resume_after_every_step_reproduces_metrics_exactly(uninterrupted, tmp_path, monkeypatch):
    """A stop file present from the start stops the run after each step: 6 invocations, 5 resumes."""
    stop_file = tmp_path / "STOP"
    stop_file.touch()
    monkeypatch.setenv("HOLDERPO_STOP_FILE", str(stop_file))
    run_dir = tmp_path / "run"
    codes = [main([str(SMOKE), *tiny(STEPS, run_dir, "checkpointing.save_period=100")]) for _ in range(STEPS)]
    assert codes == [EXIT_STOPPED] * (STEPS - 1) + [EXIT_COMPLETED]
    assert (run_dir / "COMPLETED").exists()
    assert reproducible(read_metrics(run_dir)) == reproducible(read_metrics(uninterrupted))


def test_resume_drops_metrics_of_steps_after_the_checkpoint(uninterrupted, tmp_path, monkeypatch):
    """A run that died after logging steps it never checkpointed resumes from the checkpoint, not from the log."""
    stop_file = tmp_path / "STOP"
    stop_file.touch()
    monkeypatch.setenv("HOLDERPO_STOP_FILE", str(stop_file))
    run_dir = tmp_path / "run"
    for _ in range(2):
        assert main([str(SMOKE), *tiny(STEPS, run_dir)]) == EXIT_STOPPED
    with (run_dir / "metrics.jsonl").open("a") as fh:  # a step 3 the crash never checkpointed
        fh.write(json.dumps({"step": 3, "reward_mean": -1.0}) + "\n")
    monkeypatch.delenv("HOLDERPO_STOP_FILE")
    assert main([str(SMOKE), *tiny(STEPS, run_dir)]) == EXIT_COMPLETED
    assert reproducible(read_metrics(run_dir)) == reproducible(read_metrics(uninterrupted))


def _wait_for_steps(run_dir: Path, n: int, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run exited early with {proc.returncode}: {proc.stderr.read()}")
        if len(read_metrics(run_dir)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} steps within {timeout_s} s")


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT])
def test_real_signal_checkpoints_exits_75_and_resume_is_exact(uninterrupted_long, tmp_path, signum):
    """`holderpo train` in a real subprocess gets a real signal mid-run (SIGINT: Ctrl-C in its terminal); a second
    invocation finishes the run."""
    run_dir = tmp_path / "run"
    args = [str(SMOKE), *tiny(SIGNAL_STEPS, run_dir, "checkpointing.save_period=100")]
    cmd = [sys.executable, "-m", "holder_nemo.cli", "train", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HOLDERPO_STOP_FILE", None)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    _wait_for_steps(run_dir, 1, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == EXIT_STOPPED, stderr
    assert "stop requested" in stderr
    stopped_at = len(read_metrics(run_dir))
    assert 1 <= stopped_at < SIGNAL_STEPS
    assert [step for step, _ in list_checkpoints(run_dir)] == [stopped_at]
    assert not (run_dir / "COMPLETED").exists()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_COMPLETED, done.stderr
    assert f"resumed from {run_dir / f'step_{stopped_at}'}" in done.stderr
    assert reproducible(read_metrics(run_dir)) == reproducible(read_metrics(uninterrupted_long))


def test_without_a_terminal_each_step_is_one_line(tmp_path, capsys):
    """Under Slurm or CI (no TTY) there is no bar: step, reward, p, loss and time per line (the first, the last, every
    checkpoint, else at most one each PROGRESS_LINE_INTERVAL_S)."""
    assert main([str(SMOKE), *tiny(3, tmp_path, "checkpointing.save_period=2")]) == EXIT_COMPLETED
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("holderpo train: step ")]
    records = read_metrics(tmp_path)
    assert [line.split()[3] for line in lines] == ["1/3", "2/3", "3/3"]
    for line, record in zip(lines, records, strict=True):
        assert f"reward {record['reward_mean']:.3f}  p {record['holder_p']:+.3f}  loss {record['loss']:+.4g}" in line
        assert line.split("  ")[-1].endswith("s/step") or line.endswith("(checkpoint)")
    assert lines[1].endswith("(checkpoint)")


def test_a_configured_logger_that_cannot_run_is_named_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the tensorboard package is not installed
    assert main([str(SMOKE), *tiny(2, tmp_path, "logger.tensorboard_enabled=true")]) == EXIT_COMPLETED
    err = capsys.readouterr().err
    assert err.count("logger.tensorboard_enabled is true but the tensorboard package is not installed") == 1, err
    assert not (tmp_path / "tb").exists() and len(read_metrics(tmp_path)) == 2


def test_progress_record_for_the_hang_watchdog(tmp_path, monkeypatch):
    """`holderpo train` keeps the progress record the Slurm entry's watchdog reads (holder_nemo.nemo_rl.progress)."""
    progress = tmp_path / "progress.json"
    monkeypatch.setenv("HOLDERPO_PROGRESS_FILE", str(progress))
    assert main([str(SMOKE), *tiny(4, tmp_path / "run", "checkpointing.save_period=2")]) == EXIT_COMPLETED
    record = json.loads(progress.read_text())
    assert record["counts"] == {"step": 4, "validation": 0, "checkpoint": 2}  # saves at step 2 and the last
    assert record["last"]["kind"] == "checkpoint" and record["last"]["step"] == 4
    assert record["timeout_s"] >= 1800
