"""`holderpo study` end to end at miniature size: real reference runs in real spawned worker processes.

What is shrunk: the model (hidden 32), the batch (4 prompts x 4 samples) and the steps; the runner, the recipe
overrides per arm, the statistics and the report are the default study's.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from holder_nemo.reference.metrics_log import read_metrics
from holder_nemo.study.cli import main
from holder_nemo.study.runner import LOCK_FILE, RunSpec, execute
from holder_nemo.study.spec import ARMS, TASKS

REPO = Path(__file__).resolve().parents[2]
# 16 rows, 2 updates of 8 per step: the second update is off-policy, so the arms' losses differ.
MINI = [
    "grpo.num_prompts_per_step=4",
    "grpo.num_generations_per_prompt=4",
    "policy.train_global_batch_size=8",
    "policy.train_micro_batch_size=8",
    "policy.tiny_model.hidden_size=32",
    "policy.tiny_model.intermediate_size=64",
]
STEPS = 3


def _study(out: Path, *extra: str, seeds: int = 2, steps: int = STEPS) -> list[str]:
    arms = ["--arms", "grpo,holder_anneal", "--tasks", "repeat", "--seeds", str(seeds), "--steps", str(steps)]
    return [*arms, "--out-dir", str(out), "--jobs", "2", *MINI, *extra]


def _reproducible(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def _run_logs(out: Path) -> dict[Path, int]:
    """Each run's train.log and its size: a worker appends to it whenever it takes the run up."""
    return {p: p.stat().st_size for p in out.glob("runs/*/*/*/train.log")}


@pytest.fixture(scope="module")
def mini_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    assert main(_study(out)) == 0
    return out


def test_miniature_study_writes_tables_figure_and_intervals(mini_study):
    study = json.loads((mini_study / "study.json").read_text())
    assert study["settings"]["seeds"] == 2 and study["settings"]["steps"] == STEPS
    assert set(study["arms"]) == {"grpo", "holder_anneal"}
    assert study["arms"]["holder_anneal"]["overrides"] == list(ARMS["holder_anneal"].overrides)
    assert study["tasks"]["repeat"]["threshold"] == TASKS["repeat"].threshold
    results = study["results"]["repeat"]
    for arm in ("grpo", "holder_anneal"):
        r = results[arm]
        assert r["seeds"] == [0, 1]
        for metric in ("final_reward", "auc", "steps_to_threshold", "jensen_gap", "effective_tokens"):
            assert {"mean", "half_width", "low", "high", "n"} <= set(r[metric])
            assert r[metric]["n"] == 2
        runs = study["runs"]["repeat"][arm]
        assert sorted(runs) == ["0", "1"] and all(v["steps"] == STEPS for v in runs.values())
        # the interval is the t interval of the per-seed values
        values = [runs[s]["final_reward"] for s in ("0", "1")]
        assert r["final_reward"]["mean"] == pytest.approx(sum(values) / 2)
        assert r["final_reward"]["half_width"] == pytest.approx(12.7062 * abs(values[0] - values[1]) / 2, rel=1e-4)
    assert "vs_grpo" not in results["grpo"]
    diff = results["holder_anneal"]["vs_grpo"]["final_reward"]
    anneal, grpo = study["runs"]["repeat"]["holder_anneal"], study["runs"]["repeat"]["grpo"]
    paired = [anneal[s]["final_reward"] - grpo[s]["final_reward"] for s in ("0", "1")]
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(sum(paired) / 2)
    # p(t) of the annealed arm: linear 2 -> -2 over the run, 1-based; GRPO's stays 1
    curves = study["curves"]["repeat"]
    assert curves["holder_anneal"]["p_mean"] == pytest.approx([2 - 4 * k / STEPS for k in range(1, STEPS + 1)])
    assert curves["grpo"]["p_mean"] == pytest.approx([1.0] * STEPS)
    assert len(curves["grpo"]["reward_mean"]) == STEPS
    md = (mini_study / "study.md").read_text()
    assert "| GRPO |" in md and "| HölderPO 2→−2 |" in md and "Δ final vs GRPO" in md and "Jensen gap" in md
    assert (mini_study / "study.png").stat().st_size > 10_000


def test_same_seed_means_same_initial_weights_and_prompts_in_every_arm(mini_study):
    """Step 1 samples from the initial policy before any update: identical across arms for a seed, not across seeds."""
    runs = mini_study / "runs" / "repeat"
    first = {(arm, s): read_metrics(runs / arm / f"seed_{s}")[0] for arm in ("grpo", "holder_anneal") for s in (0, 1)}
    for s in (0, 1):
        a, b = first[("grpo", s)], first[("holder_anneal", s)]
        assert (a["reward_mean"], a["response_length_mean"]) == (b["reward_mean"], b["response_length_mean"])
    assert first[("grpo", 0)]["reward_mean"] != first[("grpo", 1)]["reward_mean"]
    # after the off-policy update the arms have diverged
    later = [read_metrics(runs / arm / "seed_0")[-1]["holder/jensen_gap"] for arm in ("grpo", "holder_anneal")]
    assert later[0] != later[1]


def test_rerun_redoes_nothing_extra_seeds_run_only_the_new_ones(mini_study, capsys):
    before = _run_logs(mini_study)
    assert main(_study(mini_study)) == 0
    assert "4 runs, 4 already complete, 0 to run" in capsys.readouterr().err
    assert _run_logs(mini_study) == before
    assert main(_study(mini_study, seeds=3)) == 0
    assert "6 runs, 4 already complete, 2 to run" in capsys.readouterr().err
    after = _run_logs(mini_study)
    assert {p: after[p] for p in before} == before and len(after) == len(before) + 2
    assert json.loads((mini_study / "study.json").read_text())["results"]["repeat"]["grpo"]["seeds"] == [0, 1, 2]


def test_one_seed_of_grpo_gspo_and_the_anneal_is_the_old_holderpo_compare(tmp_path, capsys):
    """`holderpo study --seeds 1 --arms grpo,gspo,holder_anneal` replaced `holderpo compare`: one seed per arm, the
    same initial policy and prompts in all three, a report without intervals (one seed supports none)."""
    out = tmp_path / "cmp"
    args = ["--seeds", "1", "--arms", "grpo,gspo,holder_anneal", "--tasks", "repeat", "--steps", "2"]
    assert main([*args, "--out-dir", str(out), "--jobs", "2", *MINI]) == 0
    study = json.loads((out / "study.json").read_text())
    runs = {arm: read_metrics(out / "runs" / "repeat" / arm / "seed_0") for arm in ("grpo", "gspo", "holder_anneal")}
    assert [r["holder_p"] for r in runs["grpo"]] == [1.0, 1.0] and [r["holder_p"] for r in runs["gspo"]] == [0.0, 0.0]
    assert runs["holder_anneal"][0]["holder_p"] == pytest.approx(0.0)  # linear 2 -> -2 over 2 steps, 1-based
    assert runs["grpo"][0]["reward_mean"] == runs["gspo"][0]["reward_mean"] == runs["holder_anneal"][0]["reward_mean"]
    final = study["results"]["repeat"]["gspo"]["final_reward"]
    assert final["n"] == 1 and math.isnan(final["half_width"])
    assert "| GSPO |" in capsys.readouterr().out


def test_a_run_directory_another_process_holds_waits_for_it(tmp_path):
    """The per-run lock (an orphaned worker of a killed study still training): the run starts only once it is free."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    off = ["logger.plot=false", "logger.progress_bar=false", "logger.tensorboard_enabled=false"]
    argv = (str(REPO / "recipes" / "smoke_cpu.yaml"), *MINI, *off, "grpo.max_num_steps=1")
    spec = RunSpec("repeat", "grpo", 0, run_dir, (*argv, f"checkpointing.checkpoint_dir={run_dir}"))
    held = (run_dir / LOCK_FILE).open("w")
    fcntl.flock(held, fcntl.LOCK_EX)  # another open file: conflicts with the run's flock even in this process
    started_while_held = []

    def release() -> None:
        time.sleep(1.5)
        started_while_held.append((run_dir / "train.log").exists())
        held.close()

    threading.Thread(target=release).start()
    assert execute(spec) == 0  # in the main thread: the run installs its signal handlers
    assert started_while_held == [False]
    assert (run_dir / "COMPLETED").exists() and len(read_metrics(run_dir)) == 1


def test_changed_settings_in_an_existing_study_are_refused_before_any_run(mini_study, capsys):
    """The runs' own resume guard, asked for every run up front: each changed key with both values, nothing run."""
    before = _run_logs(mini_study)
    assert main(_study(mini_study, "policy.optimizer.kwargs.lr=1e-4")) == 2
    err = capsys.readouterr().err
    assert "policy.optimizer.kwargs.lr: 0.0005 (stored) -> 0.0001 (now)" in err
    assert "holderpo study: --out-dir: holderpo study keeps a run's settings" in err
    assert _run_logs(mini_study) == before


def test_bad_arguments_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--arms", "grpo,nope", "--out-dir", str(tmp_path)])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["grpo.seed=3", "--out-dir", str(tmp_path)])
    assert "use --steps / --seeds / --out-dir" in capsys.readouterr().err
    assert main(["--tasks", "repeat", "--out-dir", str(tmp_path), "loss_fn.ratio_clip_min=2.0"]) == 2
    assert "ratio_clip_min" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_stops_the_study_at_a_step_boundary_and_a_rerun_finishes_it_exactly(tmp_path):
    steps = 40  # long enough that the signal lands while both runs are training
    straight = tmp_path / "straight"
    args = ["--arms", "holder_reward", "--tasks", "reverse", "--seeds", "2", "--steps", str(steps), "--jobs", "2"]
    args += MINI
    assert main([*args, "--out-dir", str(straight)]) == 0

    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "holder_nemo.cli", "study", *args, "--out-dir", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "HOLDERPO_STOP_FILE"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any(read_metrics(d) for d in out.glob("runs/reverse/holder_reward/seed_*")):
        assert proc.poll() is None and time.monotonic() < deadline, "no run started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "SIGTERM" in err and "rerun the same command" in err
    run_dirs = sorted(out.glob("runs/reverse/holder_reward/seed_*"))
    assert not all((d / "COMPLETED").exists() for d in run_dirs)

    assert main([*args, "--out-dir", str(out)]) == 0
    for seed in (0, 1):
        resumed = read_metrics(out / "runs" / "reverse" / "holder_reward" / f"seed_{seed}")
        expected = read_metrics(straight / "runs" / "reverse" / "holder_reward" / f"seed_{seed}")
        assert _reproducible(resumed) == _reproducible(expected)
