"""kill -9 x 20 on the NeMo RL driver loop: a run killed at 20 moments finishes equal to an uninterrupted run.

Our entry point on NeMo RL v0.7.0's real ``run_grpo`` -> ``grpo.setup`` -> ``grpo_train`` and ``CheckpointManager``
(only the GPU worker actors and the Hub faked, ``conftest.py``). The driver process is killed with SIGKILL from
outside 20 times, each launch restarted the way a requeue restarts it (the same command on the same run directory;
the Slurm entry's own start-up tidying is not used, the driver must cope alone). The moments are
deliberate (the driver holds at a trace point of ``kill_points``: mid-step between two optimizer updates, during
generation, during validation, mid-save, between save and rename, during NeMo RL's checkpoint retention, after the
final checkpoint before the completion marker, mid-save of a stop-requested checkpoint) and random (seeded: a random
number of trace points plus a random delay, or a random time during start-up).

The finished run must equal an uninterrupted one with the same settings: the same steps with the same p(step),
weights, optimizer steps and losses; the same data at every step (digest of the token ids trained on); the same
validation records; the same checkpoint directory (file list, ``training_info.json``, weights, dataloader state,
``config.yaml``), no ``tmp_step_*`` left; and every launch resumed from a complete checkpoint whose weights are the
uninterrupted run's at that step (nothing resumed from a half-written checkpoint).

Run settings (the same for both runs; operational or size-only overrides of the 1.5B recipe, so that 21 launches fit
a CPU test): 6 steps of 4 prompts x 4 generations in two optimizer updates of 8, validation on 8 prompts and a
checkpoint every 2 steps, NeMo RL keeping only the newest checkpoint (so its retention deletes one at every save).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from kill_points import Kill

pytestmark = [pytest.mark.nemo_rl, pytest.mark.slow]

RECIPE = "holderpo_qwen2.5-math-1.5b.yaml"
STEPS = 6
SETTINGS = (
    f"grpo.max_num_steps={STEPS}",  # the p schedule follows (loss_fn.holder.schedule.steps)
    "grpo.num_prompts_per_step=4",
    "grpo.num_generations_per_prompt=4",
    "policy.train_global_batch_size=8",
    "grpo.val_period=2",
    "grpo.max_val_samples=8",
    "grpo.val_batch_size=8",
    "checkpointing.save_period=2",
    "checkpointing.keep_top_k=1",
)
SEED = 21


def kill_plan(rng: random.Random) -> list[tuple[str, Kill, int]]:
    """(what the kill aims at, how, SIGUSR1 at this step or 0) for the 20 launches, in run order."""

    def at(event: str, **fields) -> Kill:
        return Kill(at={"event": event, **fields})

    def random_moment() -> Kill:
        return Kill(after_events=rng.randint(1, 24), delay=round(rng.uniform(0.0, 0.5), 3))

    def random_startup() -> Kill:
        return Kill(after_s=round(rng.uniform(2.0, 20.0), 2))

    return [
        ("random: start-up", random_startup(), 0),
        ("mid-step 1, between its two optimizer updates", at("train_batch", step=1, batch=1), 0),
        ("random: trace point + delay", random_moment(), 0),
        ("during validation of step 2 (generation)", at("generate", phase="validation"), 0),
        ("mid-save of step 2 (weights written, Megatron's tracker file not)", at("save_weights_written", step=2), 0),
        ("between save and rename of step 2", at("finalize_begin", step=2), 0),
        ("random: trace point + delay", random_moment(), 0),
        ("mid-save of a stop-requested (SIGUSR1) checkpoint at step 3", at("save_weights_written", step=3), 3),
        ("generating step 3's rollouts", at("generate", phase="train"), 0),
        ("random: start-up", random_startup(), 0),
        ("mid-step 4, between its two optimizer updates", at("train_batch", step=4, batch=1), 0),
        ("validation of step 4 starting", at("validate_begin", step=4), 0),
        ("between save and rename of step 4", at("finalize_begin", step=4), 0),
        ("NeMo RL's retention deleting step_2 after step_4's rename", at("rmtree_partial", directory="step_2"), 0),
        ("random: trace point + delay", random_moment(), 0),
        ("mid-step 5, after its last optimizer update", at("train_batch", step=5, batch=2), 0),
        ("mid-save of the final step 6 (nothing written yet)", at("save_begin", step=6), 0),
        ("random: trace point + delay", random_moment(), 0),
        ("between save and rename of the final step 6", at("finalize_begin", step=6), 0),
        ("after the final checkpoint, before the completion marker", at("completing"), 0),
    ]


def by_step(events: list[dict], name: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for e in events:
        if e["event"] == name:
            out.setdefault(e["step"], []).append({k: v for k, v in e.items() if k not in ("pid", "time", "held")})
    return out


def tree(checkpoint_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(checkpoint_dir)) for p in checkpoint_dir.rglob("*"))


def checkpoint_contents(path: Path, run_dir: Path) -> dict:
    """What a resume reads from ``step_N``: training info, weights and optimizer, dataloader state, config (paths
    of the run directory and the per-launch log directory, ``exp_NNN``, normalised away)."""
    common = torch.load(path / "policy/weights/iter_0000000/common.pt", weights_only=True)
    config = (path / "config.yaml").read_text().replace(str(run_dir), "RUN")
    config = "\n".join(line for line in config.splitlines() if "exp_" not in line)
    return {
        "training_info": json.loads((path / "training_info.json").read_text()),
        "theta": common["model"]["theta"].tolist(),
        "optimizer": common["optimizer"],
        "dataloader": repr(torch.load(path / "train_dataloader.pt", weights_only=False)),
        "config": config,
    }


@pytest.mark.timeout(5400)  # 22 launches, each paying Ray, imports and grpo.setup (the tier's default is 1200 s)
def test_kill_9_twenty_times_finishes_equal_to_an_uninterrupted_run(run_driver, tmp_path):
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight = run_driver(straight_dir, RECIPE, *SETTINGS)
    assert straight.code == 0, straight.log[-4000:]
    report = [f"uninterrupted run: {straight.seconds:.0f} s"]

    launches = []
    for label, kill, signal_at_step in kill_plan(random.Random(SEED)):
        launch = run_driver(killed_dir, RECIPE, *SETTINGS, kill=kill, signal_at_step=signal_at_step)
        held = [e for e in launch.events if e.get("held")]
        last = held[-1] if held else (launch.events[-1] if launch.events else {"event": "(before any trace point)"})
        moment = {k: v for k, v in last.items() if k in ("event", "step", "batch", "phase", "directory")}
        report.append(f"kill {len(launches) + 1:2d} after {launch.seconds:5.1f} s: {label}; hit {moment}")
        assert launch.code == -9, f"launch for '{label}' ended by itself with {launch.code}:\n{launch.log[-3000:]}"
        assert kill.at is None or held, f"'{label}': the trace point was never reached"
        launches.append(launch)
    final = run_driver(killed_dir, RECIPE, *SETTINGS)
    report.append(f"final launch: exit {final.code} after {final.seconds:.0f} s")
    total = sum(x.seconds for x in [*launches, final])
    report.append(f"killed run, 21 launches: {total:.0f} s")
    (tmp_path / "kill_report.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    assert final.code == 0, final.log[-4000:]
    # Killed after the final checkpoint: the restart sees that step_6 is the final step and writes COMPLETED without
    # a whole set-up (Ray, model load, vLLM) and an empty grpo_train.
    assert "Setting up compute cluster" not in final.log, "a whole attempt only to write COMPLETED"

    # The same steps, p(step), weights, optimizer steps and losses; the same data at every step.
    events = [e for launch in [*launches, final] for e in launch.events]
    expected_train, trained = by_step(straight.events, "train_end"), by_step(events, "train_end")
    assert sorted(expected_train) == sorted(trained) == list(range(1, STEPS + 1))
    for step, records in trained.items():
        assert all(r == expected_train[step][0] for r in records), f"step {step} differs after a resume"
    expected_data, data = by_step(straight.events, "train_begin"), by_step(events, "train_begin")
    for step, records in data.items():
        assert all(r == expected_data[step][0] for r in records), f"step {step} trained on other data"

    # The same validation records (NeMo RL's validate returns, at steps 2, 4, 6).
    expected_val, validated = by_step(straight.events, "validate_end"), by_step(events, "validate_end")
    assert sorted(validated) == sorted(expected_val) == [2, 4, 6]
    for step, records in validated.items():
        assert all(r == expected_val[step][0] for r in records), f"validation at step {step} differs"

    # Every launch resumed from a complete checkpoint holding the uninterrupted run's weights at that step.
    for launch in [*launches, final]:
        for init in (e for e in launch.events if e["event"] == "policy_init" and e["weights_path"]):
            step = int(Path(init["weights_path"]).parents[1].name.removeprefix("step_"))
            assert Path(init["weights_path"]).parents[1].name == f"step_{step}", init["weights_path"]
            assert init["theta"] == expected_train[step][0]["theta"], f"resumed from a bad step_{step}"
            assert init["optimizer_steps"] == expected_train[step][0]["optimizer_steps"]

    # The same checkpoint directory: files, contents, the run's recipe record and the completion marker.
    ckpt, expected_ckpt = killed_dir / "ckpt", straight_dir / "ckpt"
    assert not list(ckpt.glob("tmp_step_*")), "a temporary checkpoint was left behind"
    assert tree(ckpt) == tree(expected_ckpt)
    for step_dir in expected_ckpt.glob("step_*"):
        expected = checkpoint_contents(step_dir, straight_dir)
        assert checkpoint_contents(ckpt / step_dir.name, killed_dir) == expected, step_dir.name
    recipe = (ckpt / "holderpo_recipe.json").read_text().replace(str(killed_dir), "RUN")
    assert recipe == (expected_ckpt / "holderpo_recipe.json").read_text().replace(str(straight_dir), "RUN")
    assert (ckpt / "COMPLETED").is_file()

    # Whatever any launch logged to TensorBoard agrees with the uninterrupted run (a SIGKILL loses what the
    # writer had not flushed yet, so the logs may have holes; they never hold another run's values).
    for tag in ("holder/p", "train/loss", "validation/accuracy"):
        expected = straight.tensorboard(tag)
        assert expected, tag
        for launch in [*launches, final]:
            logged = launch.tensorboard(tag)
            assert logged == {k: expected[k] for k in logged}, (tag, logged)
