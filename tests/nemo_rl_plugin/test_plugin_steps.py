"""Resume-exact p: the policy.train wrapper across a simulated preemption and restart.

Stand-ins (documented): NeMo RL's ``Policy`` needs GPUs and Ray workers, so ``WorkerPolicy`` below only does what
matters here: like ``Policy.train`` it ships the loss object to a "worker" by pickling it (Ray cloudpickles
``common_kwargs`` on every call) and evaluates p there. ``driver_loop`` reproduces ``grpo_train``'s step bookkeeping
(one ``policy.train`` per step, ``training_info.json`` with ``total_steps + 1`` written every ``save_period`` steps,
resume from the newest ``step_N``). The real ``grpo_train``/``CheckpointManager`` pieces are checked in
``test_nemo_rl_real.py`` where nemo_rl is importable.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from holder_nemo.core import PSchedule
from holder_nemo.nemo_rl import HolderPOLossFn, StepScheduledTrain, install_step_schedule
from holder_nemo.nemo_rl.steps import completed_steps_from_state


class WorkerPolicy:
    def __init__(self) -> None:
        self.worker_p: list[float] = []

    def train(self, data, loss_fn, eval_mode=False, gbs=None, mbs=None, timer=None):
        on_worker = pickle.loads(pickle.dumps(loss_fn))
        self.worker_p.append(on_worker.p)
        return {"loss": 0.0}


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[int, dict, str]] = []

    def log_metrics(self, metrics, step, prefix=""):
        self.records.append((step, dict(metrics), prefix))


class Preempted(RuntimeError):
    pass


def driver_loop(ckpt: Path, max_steps: int, save_period: int, crash_after: int | None = None) -> WorkerPolicy:
    """One job: resume from the newest step_N, train, save every save_period steps, maybe die mid-run."""
    steps = sorted(ckpt.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    state = json.loads((steps[-1] / "training_info.json").read_text()) if steps else None
    policy, logger = WorkerPolicy(), RecordingLogger()
    loss_fn = HolderPOLossFn({"holder": {"schedule": {"steps": 10}}})
    install_step_schedule(policy, loss_fn, state, logger)
    total_steps = completed_steps_from_state(state)
    while total_steps < max_steps:
        policy.train({"batch": total_steps}, loss_fn, timer=None)
        if (total_steps + 1) % save_period == 0 or total_steps + 1 == max_steps:
            step_dir = ckpt / f"step_{total_steps + 1}"
            step_dir.mkdir(parents=True)
            (step_dir / "training_info.json").write_text(json.dumps({"total_steps": total_steps + 1}))
        total_steps += 1
        if crash_after is not None and total_steps == crash_after:
            policy.logger = logger
            raise Preempted(policy)
    policy.logger = logger
    return policy


def test_restart_uses_exactly_the_uninterrupted_p_sequence(tmp_path):
    sched = PSchedule("linear_dec", 2.0, -2.0, 10)
    straight = driver_loop(tmp_path / "a", max_steps=12, save_period=3)
    assert straight.worker_p == [sched(k) for k in range(1, 13)]  # k-th step uses p(k); p(1) = 1.6 here
    # preempted after step 5 (last checkpoint: step_3): steps 4-5 are redone after the restart
    with pytest.raises(Preempted) as info:
        driver_loop(tmp_path / "b", max_steps=12, save_period=3, crash_after=5)
    first = info.value.args[0]
    second = driver_loop(tmp_path / "b", max_steps=12, save_period=3)
    assert first.worker_p == straight.worker_p[:5]
    assert second.worker_p == straight.worker_p[3:]
    assert [(s, m["p"]) for s, m, prefix in second.logger.records] == [(k, sched(k)) for k in range(4, 13)]
    assert all(prefix == "holder" for *_, prefix in second.logger.records)


def test_paper_convention_first_step():
    policy, loss_fn = WorkerPolicy(), HolderPOLossFn({})
    wrapper = install_step_schedule(policy, loss_fn, {"total_steps": 0})
    assert isinstance(policy.train, StepScheduledTrain) and loss_fn.p == pytest.approx(1.992)
    policy.train({}, loss_fn)
    policy.train({}, loss_fn)
    assert wrapper.completed_steps == 2
    assert policy.worker_p == [pytest.approx(1.992), pytest.approx(1.984)]


def test_bad_saved_state_is_rejected():
    with pytest.raises(ValueError, match="total_steps"):
        completed_steps_from_state({"total_steps": -3})
    assert completed_steps_from_state(None) == 0
