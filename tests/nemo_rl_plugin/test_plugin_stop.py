"""Stop contract pieces of the NeMo RL entry point, Slurm end-time helpers, exit codes, refusal without nemo_rl."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import types
from datetime import datetime
from pathlib import Path

import pytest

from holder_nemo import run_control
from holder_nemo.config import EXIT_BAD_INPUT
from holder_nemo.nemo_rl import master_config, run_grpo
from holder_nemo.run_control import (
    SAVE_MARGIN_ENV,
    StopRequest,
    patched_timeout_checker,
    slurm_deadline,
    slurm_job_end_time,
)


class BaseTimeoutChecker:
    """Stand-in with the attributes grpo_train's TimeoutChecker (nemo_rl/utils/timer.py) exposes; the real class is
    exercised in test_nemo_rl_real.py. ``check_save`` fires after ``limit`` seconds, once."""

    def __init__(self, timeout=None, fit_last_save_time=False):
        self.limit = float("inf") if timeout is None else float(timeout)
        self.start_time = time.time()
        self.last_saved = False
        self.iteration_times: list[float] = []

    def check_save(self):
        if self.last_saved:
            return False
        if time.time() - self.start_time >= self.limit:
            self.last_saved = True
            return True
        return False


def stop_aware_checker(stop: StopRequest, **kwargs) -> BaseTimeoutChecker:
    """A checker of the class ``patched_timeout_checker`` puts in place of ``BaseTimeoutChecker``."""
    with patched_timeout_checker(types.SimpleNamespace(TimeoutChecker=BaseTimeoutChecker), stop) as patched:
        return patched(**kwargs)


def test_stop_file_triggers_once(tmp_path):
    stop_file = tmp_path / "STOP"
    stop = StopRequest(stop_file=stop_file)
    checker = stop_aware_checker(stop)
    assert checker.check_save() is False and stop.fired is None
    stop_file.touch()
    assert checker.check_save() is True and stop.fired.startswith("stop file")
    assert checker.check_save() is False  # grpo_train has returned by then; never twice


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_signals_request_a_stop(signum):
    stop = StopRequest()
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        stop.install_signal_handlers()
        os.kill(os.getpid(), signum)
        time.sleep(0.05)
        checker = stop_aware_checker(stop)
        assert checker.check_save() is True
        assert stop.fired == signal.Signals(signum).name
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_nemo_rl_own_timeout_still_counts_and_deadline_uses_mean_step():
    stop = StopRequest()
    checker = stop_aware_checker(stop, timeout=0)
    assert checker.check_save() is True and stop.fired == "checkpointing.checkpoint_must_save_by"
    stop = StopRequest(deadline=time.time() + 100)
    checker = stop_aware_checker(stop)
    checker.iteration_times = [30.0, 50.0]
    assert checker.check_save() is False  # now + 40 s < deadline
    checker.iteration_times = [150.0]
    assert checker.check_save() is True and "Slurm" in stop.fired


def test_patch_is_scoped():
    module = types.SimpleNamespace(TimeoutChecker=BaseTimeoutChecker)
    with patched_timeout_checker(module, StopRequest()) as patched:
        assert module.TimeoutChecker is patched and issubclass(patched, BaseTimeoutChecker)
    assert module.TimeoutChecker is BaseTimeoutChecker


@pytest.fixture
def no_slurm_job(monkeypatch):
    """An environment outside any Slurm job (the variables a test sets are its own)."""
    for name in ("SLURM_JOB_END_TIME", "SLURM_JOB_ID", SAVE_MARGIN_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_slurm_end_time_from_env_and_squeue(tmp_path, no_slurm_job):
    env = no_slurm_job
    assert slurm_job_end_time() is None
    env.setenv("SLURM_JOB_END_TIME", "1790000000")
    assert slurm_job_end_time() == 1790000000.0
    env.delenv("SLURM_JOB_END_TIME")
    env.setenv("SLURM_JOB_ID", "42")
    env.setenv("PATH", str(tmp_path))  # no squeue on PATH: no end time
    assert slurm_job_end_time() is None
    # squeue fallback: a stand-in executable printing what `squeue -h -j ID -o %e` prints ($END)
    fake = tmp_path / "squeue"
    fake.write_text('#!/bin/sh\n[ "$1 $2 $3 $4 $5" = "-h -j 42 -o %e" ] && echo "$END"\n')
    fake.chmod(0o755)
    env.setenv("END", "2026-11-27T23:30:00")
    assert slurm_job_end_time() == datetime(2026, 11, 27, 23, 30, 0).timestamp()
    for unlimited in ("N/A", "Unknown"):
        env.setenv("END", unlimited)
        assert slurm_job_end_time() is None
    env.setenv("END", "tomorrow")
    with pytest.raises(ValueError, match="squeue end time"):
        slurm_job_end_time()


def test_checkpoint_must_save_by_is_printed(no_slurm_job, monkeypatch, capsys):
    monkeypatch.setattr(run_control, "time", types.SimpleNamespace(time=lambda: 1_000.0))
    for end, printed in ((10_000, "00:02:20:00"), (1_000 + 600 + 90_061, "01:01:01:01"), (1_500, "00:00:00:00")):
        monkeypatch.setenv("SLURM_JOB_END_TIME", str(end))
        assert run_control.main(["--margin", "600"]) == 0
        assert capsys.readouterr().out == printed + "\n"
    monkeypatch.delenv("SLURM_JOB_END_TIME")
    assert run_control.main([]) == 1 and "no Slurm job end time" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        run_control.main(["--margin", "-1"])
    assert info.value.code == 2 and "--margin must be >= 0" in capsys.readouterr().err


def test_slurm_deadline_env(no_slurm_job):
    env = no_slurm_job
    assert slurm_deadline() is None
    env.setenv(SAVE_MARGIN_ENV, "300")
    env.setenv("SLURM_JOB_END_TIME", "5000")
    assert slurm_deadline() == 4700.0
    env.setenv(SAVE_MARGIN_ENV, "soon")
    with pytest.raises(ValueError, match=SAVE_MARGIN_ENV):
        slurm_deadline()


def test_exit_codes_and_completed_marker(tmp_path):
    ckpt = {"enabled": True, "checkpoint_dir": str(tmp_path / "ckpt")}
    assert run_control.exit_code_after_training("SIGTERM", ckpt) == 75
    assert not (tmp_path / "ckpt" / "COMPLETED").exists()
    assert run_control.exit_code_after_training("SIGTERM", {"enabled": False}) == 1
    assert run_control.exit_code_after_training(None, ckpt) == 0
    assert (tmp_path / "ckpt" / "COMPLETED").exists()


@pytest.fixture
def entry_point_past_the_version_gate(monkeypatch):
    """run_grpo.main up to ``prepare`` without NeMo RL: the version gate passes, signal handlers are restored."""
    monkeypatch.setattr(master_config, "check_nemo_rl", lambda: "0.7.0")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_a_bad_recipe_is_exit_2_with_one_line_per_problem(monkeypatch, capsys, entry_point_past_the_version_gate):
    from holder_nemo.config import ConfigError

    def prepare(*_args, **_kwargs):
        raise ConfigError([("grpo.async_grpo.enabled", "must be false"), ("cluster.num_nodes", "must be >= 1, got 0")])

    monkeypatch.setattr(run_grpo, "prepare", prepare)
    assert run_grpo.main(["--config", "r.yaml"]) == EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{run_grpo.PROG}: bad config r.yaml:",
        f"{run_grpo.PROG}: grpo.async_grpo.enabled: must be false",
        f"{run_grpo.PROG}: cluster.num_nodes: must be >= 1, got 0",
    ]


def test_a_bug_is_a_traceback_not_a_bad_config(monkeypatch, entry_point_past_the_version_gate):
    """Only configuration errors are exit 2; a bug in our code or NeMo RL's propagates (exit 1 with its traceback)."""

    def prepare(*_args, **_kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(run_grpo, "prepare", prepare)
    with pytest.raises(TypeError, match="a bug"):
        run_grpo.main(["--config", "r.yaml"])


def test_a_stop_during_the_final_step_completes_the_run(tmp_path, capsys):
    """Defect 5 of issue 21: the final step is saved anyway; a stop then means complete, not one more attempt."""
    ckpt = {"enabled": True, "checkpoint_dir": str(tmp_path / "ckpt")}
    assert run_control.exit_code_after_training("SIGUSR1", ckpt, finished=True) == 0
    assert (tmp_path / "ckpt" / "COMPLETED").exists()
    assert "stop requested (SIGUSR1) during the final step: the run is complete" in capsys.readouterr().out
    assert run_control.exit_code_after_training("SIGUSR1", {"enabled": False}, finished=True) == 0


def test_final_step_is_the_loops_own_end():
    def config(**grpo):
        base = {"max_num_steps": 500, "max_num_epochs": 20, "use_dynamic_sampling": False}
        return types.SimpleNamespace(grpo={**base, **grpo}, data={"use_multiple_dataloader": False})

    assert run_control.final_step(config(), dataloader=range(66), own_loop=False) == 500
    assert run_control.final_step(config(max_num_epochs=2), dataloader=range(66), own_loop=False) == 132  # epochs first
    assert run_control.final_step(config(max_num_epochs=2), dataloader=range(66), own_loop=True) == 500  # its own loop
    # Dynamic sampling may use several batches per step: the epochs bound no step count, max_num_steps does.
    assert run_control.final_step(config(max_num_epochs=2, use_dynamic_sampling=True), range(66), own_loop=False) == 500
    assert run_control.final_step(config(max_num_epochs=2), dataloader=None, own_loop=False) == 500


def test_a_final_checkpoint_without_its_marker_is_a_complete_run(tmp_path, capsys):
    """A driver killed between the final save and COMPLETED: the next one writes the marker without a set-up."""
    from holder_nemo.run_control import run_complete

    ckpt = {"enabled": True, "checkpoint_dir": str(tmp_path / "ckpt")}
    assert not run_complete(ckpt, 6)  # no checkpoint yet
    (tmp_path / "ckpt" / "step_4").mkdir(parents=True)
    assert not run_complete(ckpt, 6) and not (tmp_path / "ckpt" / "COMPLETED").exists()
    (tmp_path / "ckpt" / "step_6").mkdir()
    assert not run_complete({**ckpt, "enabled": False}, 6)
    assert run_complete(ckpt, 6) and (tmp_path / "ckpt" / "COMPLETED").is_file()
    assert "step_6 is the final step" in capsys.readouterr().out
    assert run_complete(ckpt, 6) and not run_complete({"enabled": True, "checkpoint_dir": None}, 6)


def test_tidy_removes_what_a_killed_save_or_retention_left(tmp_path):
    """What NeMo RL v0.7.0's CheckpointManager leaves when its process is killed, and what must stay."""
    from holder_nemo.run_control import latest_complete_step, tidy_checkpoint_dir

    ckpt = tmp_path / "ckpt"

    def checkpoint(name, info=True):
        (ckpt / name / "policy" / "weights").mkdir(parents=True)
        if info:
            (ckpt / name / "training_info.json").write_text('{"total_steps": 1}')

    checkpoint("step_4")  # complete, the newest
    checkpoint("step_2", info=False)  # retention's rmtree cut short after training_info.json went
    checkpoint("step_3")  # complete, older (kept: retention is NeMo RL's to apply, with its keep_top_k)
    checkpoint("tmp_step_5")  # a save that never reached the rename
    checkpoint("tmp_step_3", info=False)
    (ckpt / "holderpo_recipe.json").write_text("{}")
    removed = tidy_checkpoint_dir(ckpt)
    assert sorted(p.name for p in removed) == ["step_2", "tmp_step_3", "tmp_step_5"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["holderpo_recipe.json", "step_3", "step_4"]
    assert latest_complete_step(ckpt) == 4
    # The newest step_N is never removed, whatever it holds (NeMo RL resumes from it and reports its own error).
    checkpoint("step_6", info=False)
    assert tidy_checkpoint_dir(ckpt) == [] and latest_complete_step(ckpt) == 6
    assert tidy_checkpoint_dir(tmp_path / "missing") == []


@pytest.mark.parametrize(
    "version", ["0.7.0", "0.7.1", "0.7.0+7ea279ab", "0.7.2rc1", "0.7.0rc0+abc1234", "0.7.3.dev4+g81aa43d", "v0.7.1"]
)
def test_version_gate_accepts_every_0_7_build(monkeypatch, version):
    fake = types.ModuleType("nemo_rl")
    fake.__version__ = version
    monkeypatch.setitem(sys.modules, "nemo_rl", fake)
    monkeypatch.delenv(master_config.ALLOW_ANY_VERSION_ENV, raising=False)
    assert master_config.check_nemo_rl() == version


@pytest.mark.parametrize("version", ["0.5.0", "0.6.0+abc", "0.70.0", "1.7.0", "0.8.0rc1", "unknown", "7"])
def test_version_gate_refuses_others_with_the_reason_and_the_override(monkeypatch, version):
    fake = types.ModuleType("nemo_rl")
    fake.__version__ = version
    monkeypatch.setitem(sys.modules, "nemo_rl", fake)
    monkeypatch.delenv(master_config.ALLOW_ANY_VERSION_ENV, raising=False)
    with pytest.raises(master_config.NemoRLUnavailable) as info:
        master_config.check_nemo_rl()
    message = str(info.value)
    assert repr(version) in message and "0.7.x" in message and master_config.ALLOW_ANY_VERSION_ENV in message
    assert "loss-function contract" in message
    monkeypatch.setenv(master_config.ALLOW_ANY_VERSION_ENV, "1")
    assert master_config.check_nemo_rl() == version


def test_entry_point_refuses_without_nemo_rl(tmp_path):
    import importlib.util

    if importlib.util.find_spec("nemo_rl") is not None:
        pytest.skip("nemo_rl is importable here; the refusal path needs an environment without it")
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "holderpo_base.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "holder_nemo.nemo_rl.run_grpo", "--config", str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert "nemo_rl is not importable" in result.stderr and "docs/nemo_rl.md" in result.stderr


def test_the_slurm_shell_uses_the_exit_codes_and_marker_of_run_control():
    """The batch shell cannot import Python: its copies of the contract's constants must equal the owner's."""
    from holder_nemo.config.errors import EXIT_BAD_INPUT

    shell = (Path(__file__).resolve().parents[2] / "slurm" / "lib" / "common.sh").read_text()
    values = dict(re.findall(r"^(HP_EXIT_[A-Z]+)=(\d+)$", shell, flags=re.M))
    assert values == {"HP_EXIT_STOPPED": str(run_control.EXIT_STOPPED), "HP_EXIT_REFUSED": str(EXIT_BAD_INPUT)}
    assert f'"$HP_CKPT_DIR/{run_control.COMPLETED_FILE}"' in shell
    assert "Owner: holder_nemo/run_control.py" in shell


def test_run_control_imports_no_torch():
    """The driver venv of a torch-less base imports it (containers/install_holder_nemo.sh's driver check)."""
    probe = "import sys, holder_nemo.run_control; print(sorted(m for m in ('torch', 'nemo_rl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]"], out
