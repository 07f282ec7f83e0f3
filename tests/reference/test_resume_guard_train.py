"""`holderpo train` refuses to resume (or to call finished) a run whose recipe changed, unless told to accept it."""

from __future__ import annotations

import json

from reference_helpers import SMOKE, tiny

from holder_nemo.config import EXIT_BAD_INPUT
from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.reference.train import EXIT_COMPLETED, main
from holder_nemo.run_control import ACCEPT_FLAG, CHANGE_LOG


def test_changed_recipe_is_refused_before_the_completed_shortcut_unless_accepted(tmp_path, capsys):
    assert main([str(SMOKE), *tiny(2, tmp_path)]) == EXIT_COMPLETED
    assert (tmp_path / "COMPLETED").exists()
    capsys.readouterr()

    # Same recipe: nothing to do. Operational keys (logging) may differ.
    assert main([str(SMOKE), *tiny(2, tmp_path, "logger.plot=true")]) == EXIT_COMPLETED
    assert "already complete" in capsys.readouterr().out

    # More steps, or another p schedule, change the run: refused, both values printed, nothing touched.
    assert main([str(SMOKE), *tiny(3, tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "grpo.max_num_steps: 2 (stored) -> 3 (now)" in err
    assert "loss_fn.holder.schedule.steps: 2 (stored) -> 3 (now)" in err  # the schedule follows max_num_steps
    assert main([str(SMOKE), *tiny(2, tmp_path, "loss_fn.holder.schedule.p_min=-1.0")]) == EXIT_BAD_INPUT
    assert "loss_fn.holder.schedule.p_min: -2.0 (stored) -> -1.0 (now)" in capsys.readouterr().err
    assert (tmp_path / "COMPLETED").exists() and len(read_metrics(tmp_path)) == 2

    # Accepted: the finished run reopens and trains step 3; the change is recorded.
    assert main([str(SMOKE), *tiny(3, tmp_path), ACCEPT_FLAG]) == EXIT_COMPLETED
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    (line,) = (tmp_path / CHANGE_LOG).read_text().splitlines()
    keys = [c["key"] for c in json.loads(line)["changes"]]
    assert keys == ["grpo.max_num_steps", "loss_fn.holder.schedule.steps"]


def test_the_same_run_spelt_differently_or_moved_resumes(tmp_path, monkeypatch, capsys):
    """checkpoint_dir=relrun, then =/abs/relrun and =relrun/ (same directory), then the run directory moved: each
    resumes the run (here: finds it complete) instead of refusing it as a changed recipe."""
    monkeypatch.chdir(tmp_path)
    assert main([str(SMOKE), *tiny(2, "relrun")]) == EXIT_COMPLETED  # relative to the working directory
    for spelling in (tmp_path / "relrun", "relrun/"):
        assert main([str(SMOKE), *tiny(2, spelling)]) == EXIT_COMPLETED, capsys.readouterr().err
        assert "already complete" in capsys.readouterr().out
    (tmp_path / "relrun").rename(tmp_path / "moved")
    assert main([str(SMOKE), *tiny(2, tmp_path / "moved")]) == EXIT_COMPLETED, capsys.readouterr().err
    assert "already complete" in capsys.readouterr().out
    assert len(read_metrics(tmp_path / "moved")) == 2
