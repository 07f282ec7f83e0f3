"""CPU stand-in for the training driver in the Slurm tests (no GPU, no NeMo RL model on a CI machine).

    python tests/slurm/cpu_driver.py [--ray] --config RECIPE [overrides...]

Called the way the NeMo RL entries call ``python -m holder_nemo.nemo_rl.run_grpo`` (``HOLDERPO_DRIVER``), or through
a one-line wrapper as the smoke entry's ``HOLDERPO_TRAIN``. What it replaces is only the GPU job; it keeps the
driver's contract with the launcher, so everything around it runs for real:

1. ``--ray``: joins the Ray cluster that NeMo RL's ``ray.sub`` started, as NeMo RL's ``init_ray`` does (address
   ``auto``: the head node's ``/tmp/ray``), runs one task pinned to every node and writes what it saw (each node's
   IP and resources, each task's ``SLURMD_NODENAME`` and IP, the driver's own IP) to
   ``$HOLDERPO_LOG_DIR/ray_cluster.json``, then disconnects;
2. runs the CPU reference run, ``holderpo train``, in this process on RECIPE with the overrides it understands. The
   ones the NeMo RL entries add for NeMo RL (``cluster.*``, ``logger.log_dir``, ``++logger.wandb.*``,
   ``++checkpointing.checkpoint_must_save_by``) are dropped. It has run_grpo's stop contract and exit codes: stop
   file / SIGUSR1 / SIGTERM -> checkpoint at the step boundary, exit 75; 0 complete (``COMPLETED`` written); 2 bad
   config.

In the container tier (``tests/containers``) the driver runs in the image's driver venv, Python 3.13, which has Ray
but no torch (PyPI has no CPU torch for 3.13): with ``HOLDERPO_TEST_TRAIN_PYTHON`` set (the image's Ray worker venv,
Python 3.11 with the CPU torch), step 2 replaces this process (``exec``, so signals reach it directly) by this same
script under that interpreter, without ``--ray``. ``ray_cluster.json`` and the driver log say which Python ran what.

Test-only pacing, ``HOLDERPO_TEST_STEP_S=SECONDS``: each training step takes at least that long (a sleep before it;
the maths is untouched), so a test can act mid-run however fast the machine is.

Test-only fault, ``HOLDERPO_TEST_SLOW_SAVE=N[,M...]``: in the job's attempts N, M... (``SLURM_RESTART_COUNT``, 0
for the first), a save made while a stop is requested (the stop file exists, or the driver got SIGUSR1/SIGTERM: after a
preemption Slurm signals the driver and the batch shell at once, and the driver may reach its save before the batch
shell has written the stop file) writes part of its temporary directory
and then hangs, as a checkpoint slower than ``HOLDERPO_CKPT_TIMEOUT_S`` (or than
Slurm's KillWait after a preemption) would. Its SIGTERM handler only records the request, so only SIGKILL ends it.

Test-only pacing, ``HOLDERPO_TEST_STOP_SAVE_S=SECONDS``: a save made while a stop is requested (as above) takes that
much longer (a sleep before it writes anything), as a large model's checkpoint does: longer than Slurm's KillWait,
shorter than a preemption's GraceTime (``test_preemption.py``).

Test-only fault model, ``HOLDERPO_TEST_RAY_STEPS=1`` (with ``--ray``): the driver stays in the Ray cluster, keeps an
actor on every node (started before ``ray_cluster.json`` is written) and each training step first calls every one of
them, as each NeMo RL step runs on every node's workers. Once a node is lost no step completes (Ray's error ends the
driver, or the call waits until the batch shell cancels it), so no checkpoint follows the loss: NeMo RL's behaviour,
where this stand-in's stop contract alone would finish a step and checkpoint it. Not with
``HOLDERPO_TEST_TRAIN_PYTHON`` (training then runs in another process, outside the Ray cluster).

Test-only fault, ``HOLDERPO_TEST_HANG_AT_STEP=A:N[,B:M...]``: in attempt A the driver hangs when it starts step N
(step N-1, its metrics, its checkpoint if one was due and its progress record complete first), as a stuck NCCL
collective or vLLM engine would: it never reaches another step boundary, so it ignores the stop file, and it ignores
SIGTERM; only SIGKILL ends it. ``A:+K``: when it starts the K-th step this attempt runs, whatever step it resumed
from (``+1``: its first step, as NeMo RL's first collective after a node was lost).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path

NEMO_RL_ONLY = re.compile(
    r"^(\+\+)?(cluster\.|logger\.log_dir=|logger\.wandb\.|checkpointing\.checkpoint_must_save_by=)"
)


def ray_check(out: Path, stay: bool = False) -> list:
    """Join the Ray cluster and write what it saw to ``out``; ``stay``: keep the connection and return one actor
    pinned to each node (``HOLDERPO_TEST_RAY_STEPS``), else disconnect and return []."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # The head's own address file and this node's IP, rather than NeMo RL's address="auto": on this shared host "auto"
    # would also see other users' Ray clusters, and Ray would take the host's interface address as this node's IP.
    address_file = Path("/tmp/ray/ray_current_cluster")  # this node's private /tmp/ray (local_slurm.py)
    address = address_file.read_text().strip() if address_file.exists() else "auto"
    node_ip = socket.gethostbyname(os.environ["SLURMD_NODENAME"])
    ray.init(address=address, _node_ip_address=node_ip, log_to_driver=False)
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]

        @ray.remote(num_cpus=0)
        def where() -> dict[str, str | None]:
            return {"slurmd_nodename": os.environ.get("SLURMD_NODENAME"), "ip": ray.util.get_node_ip_address()}

        pinned = [
            where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
            for node in nodes
        ]
        report = {
            "driver_python": sys.version.split()[0],
            "driver_ip": node_ip,
            "nodes": [{"ip": node["NodeManagerAddress"], "resources": node["Resources"]} for node in nodes],
            "tasks": ray.get(pinned, timeout=300),
        }
        actors = []
        if stay:

            @ray.remote(num_cpus=0, max_restarts=0)
            class StepWorker:  # a node's share of a step; max_restarts=0: a lost node is not replaced
                def step(self, n: int) -> int:
                    return n

            actors = [
                StepWorker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote() for node in nodes
            ]  # fmt: skip
            ray.get([actor.step.remote(0) for actor in actors], timeout=300)  # all placed before the report
    finally:
        if not stay:
            ray.shutdown()
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    print(f"cpu_driver: Ray cluster {report}", flush=True)
    return actors


def steps_on_every_node(actors: list) -> None:
    """Each training step first runs on every node's actor (``HOLDERPO_TEST_RAY_STEPS``)."""
    import ray

    from holder_nemo.reference.train import ReferenceRecipe

    original = ReferenceRecipe._train_step

    def _train_step(self, step):
        ray.get([actor.step.remote(step) for actor in actors])  # raises (or waits) once a node is gone
        return original(self, step)

    ReferenceRecipe._train_step = _train_step


def on_saves_requested_by_a_stop(fault) -> None:
    """Run ``fault(original_save, run_dir, step, **kwargs)`` instead of a save made while a stop is requested."""
    from holder_nemo.reference import checkpoint
    from holder_nemo.run_control import StopRequest

    original = checkpoint.save_checkpoint
    original_request = StopRequest.request
    signalled: list[str] = []

    def request(self, reason):
        signalled.append(reason)
        return original_request(self, reason)

    def save_checkpoint(run_dir, step, **kwargs):
        stop_file = os.environ.get("HOLDERPO_STOP_FILE")
        if not (signalled or (stop_file and Path(stop_file).exists())):
            return original(run_dir, step, **kwargs)
        return fault(original, run_dir, step, **kwargs)

    StopRequest.request = request
    checkpoint.save_checkpoint = save_checkpoint


def hang_saves_requested_by_a_stop() -> None:
    from holder_nemo.reference import checkpoint

    def hang(original, run_dir, step, **kwargs):
        partial = Path(run_dir) / f"tmp_step_{step}"  # named as NeMo RL names its unfinished saves
        partial.mkdir(parents=True, exist_ok=True)
        (partial / checkpoint.MODEL_FILE).write_bytes(b"half a model")
        print(f"cpu_driver: slow save of step {step} (test fault): hanging", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)

    on_saves_requested_by_a_stop(hang)


def slow_saves_requested_by_a_stop(seconds: float) -> None:
    def slow(original, run_dir, step, **kwargs):
        print(f"cpu_driver: save of step {step} after a stop request takes {seconds:g} s more (test pacing)",
              file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(seconds)
        return original(run_dir, step, **kwargs)

    on_saves_requested_by_a_stop(slow)


def pace_steps(seconds: float) -> None:
    from holder_nemo.reference.train import ReferenceRecipe

    original = ReferenceRecipe._train_step

    def _train_step(self, step):
        time.sleep(seconds)
        return original(self, step)

    ReferenceRecipe._train_step = _train_step


def hang_at_step(spec: str) -> None:
    """``spec``: N (hang at the start of step N) or +K (of the K-th step this attempt runs)."""
    import signal

    from holder_nemo.reference.train import ReferenceRecipe

    original = ReferenceRecipe._train_step
    relative, target = spec.startswith("+"), int(spec.removeprefix("+"))
    ran = 0

    def _train_step(self, current):
        nonlocal ran
        ran += 1
        if (ran if relative else current) == target:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"cpu_driver: hanging at the start of step {current} (test fault)", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)
        return original(self, current)

    ReferenceRecipe._train_step = _train_step


def main(argv: list[str]) -> int:
    use_ray = "--ray" in argv
    argv = [a for a in argv if a != "--ray"]
    if len(argv) < 2 or argv[0] != "--config":
        print("usage: cpu_driver.py [--ray] --config RECIPE [overrides...]", file=sys.stderr)
        return 2
    recipe, overrides = argv[1], [a for a in argv[2:] if not NEMO_RL_ONLY.match(a)]
    train_python = os.environ.get("HOLDERPO_TEST_TRAIN_PYTHON")
    ray_steps = use_ray and os.environ.get("HOLDERPO_TEST_RAY_STEPS") == "1"
    if ray_steps and train_python:
        print("cpu_driver: HOLDERPO_TEST_RAY_STEPS needs training in this process (HOLDERPO_TEST_TRAIN_PYTHON is set)",
              file=sys.stderr)  # fmt: skip
        return 2
    actors = ray_check(Path(os.environ["HOLDERPO_LOG_DIR"]) / "ray_cluster.json", stay=ray_steps) if use_ray else []
    if train_python and Path(train_python).resolve() != Path(sys.executable).resolve():
        print(f"cpu_driver: Python {sys.version.split()[0]} hands the training to {train_python}", flush=True)
        os.execv(train_python, [train_python, __file__, *argv])
    print(f"cpu_driver: training on Python {sys.version.split()[0]} ({sys.executable})", flush=True)
    if os.environ.get("HOLDERPO_TEST_STEP_S"):
        pace_steps(float(os.environ["HOLDERPO_TEST_STEP_S"]))
    if actors:
        steps_on_every_node(actors)
    attempt = os.environ.get("SLURM_RESTART_COUNT") or "0"
    if attempt in os.environ.get("HOLDERPO_TEST_SLOW_SAVE", "").split(","):
        hang_saves_requested_by_a_stop()
    elif os.environ.get("HOLDERPO_TEST_STOP_SAVE_S"):
        slow_saves_requested_by_a_stop(float(os.environ["HOLDERPO_TEST_STOP_SAVE_S"]))
    hangs = dict(item.split(":") for item in os.environ.get("HOLDERPO_TEST_HANG_AT_STEP", "").split(",") if item)
    if attempt in hangs:
        hang_at_step(hangs[attempt])
    from holder_nemo.reference import train

    return train.main([recipe, *overrides])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
