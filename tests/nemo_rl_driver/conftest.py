"""Fixtures of the driver-contract tier: a real local Ray cluster (loopback, fake GPU resources), an offline Hub,
a small maths dataset, and ``run_driver`` to launch our entry point on NeMo RL's real driver code.

Only where NeMo RL v0.7.0 is importable (a source tree on PYTHONPATH, or the NGC image); skipped elsewhere (CI).
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kill_points import Kill

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECIPES = REPO / "recipes"
HAVE_NEMO_RL = importlib.util.find_spec("nemo_rl") is not None
MODELS = [
    "Qwen/Qwen2.5-Math-7B",
    "Qwen/Qwen2.5-Math-1.5B",
    "Qwen/Qwen2.5-32B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "Qwen/Qwen3-4B-Base",
    "Qwen/Qwen3-8B-Base",
    "Qwen/Qwen2.5-1.5B-Instruct",
]
# The most GPUs a recipe asks for (32B: 4 nodes x 8), and CPUs for its bundles (x2 when vLLM is colocated) + actors.
FAKE_GPUS, LOGICAL_CPUS = 32, 96


def pytest_collection_modifyitems(config, items):
    if HAVE_NEMO_RL:
        return
    skip = pytest.mark.skip(reason="nemo_rl is not importable: the driver-contract tier needs NeMo RL v0.7.0")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class ConnectionWatch:
    """Polls the TCP connections of a process tree; records any peer outside loopback (tests may only talk there)."""

    def __init__(self) -> None:
        import psutil

        self.psutil, self.roots, self.foreign = psutil, set(), set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        self.roots.add(pid)

    def _pids(self) -> set[int]:
        pids = set()
        for root in list(self.roots):
            try:
                proc = self.psutil.Process(root)
                pids |= {root, *(c.pid for c in proc.children(recursive=True))}
            except self.psutil.Error:
                continue
        return pids

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            pids = self._pids()
            try:
                connections = self.psutil.net_connections(kind="inet")
            except self.psutil.Error:
                continue
            for conn in connections:
                if conn.pid in pids and conn.raddr and not _is_loopback(conn.raddr.ip):
                    self.foreign.add((conn.pid, conn.raddr.ip, conn.raddr.port))

    def stop(self) -> set:
        self._stop.set()
        self._thread.join()
        return self.foreign


# Ray replaces 127.0.0.1 / localhost by this host's external address (services.resolve_ip_for_localhost), so the
# cluster lives on another loopback address; every process then advertises and dials 127.0.0.2 only.
RAY_NODE_IP = "127.0.0.2"


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """``ray start --head --block`` on a loopback address with fake GPUs (as ray.sub starts one with real ones)."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--node-ip-address={RAY_NODE_IP}", f"--port={port}",
         f"--num-cpus={LOGICAL_CPUS}", f"--num-gpus={FAKE_GPUS}", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    watch = ConnectionWatch()
    watch.watch(head.pid)
    address = f"{RAY_NODE_IP}:{port}"
    deadline = time.monotonic() + 120
    while True:  # the GCS answers once the head is up
        status = subprocess.run([str(ray_bin), "status", f"--address={address}"], env=env, capture_output=True)
        if status.returncode == 0 and b"GPU" in status.stdout:
            break
        if head.poll() is not None or time.monotonic() > deadline:
            head.kill()
            pytest.fail(f"the local Ray head did not start (exit {head.poll()})")
        time.sleep(1)
    yield {"address": address, "watch": watch}
    foreign = watch.stop()
    os.killpg(head.pid, signal.SIGTERM)  # the head and every Ray process it started (agents outlive a plain TERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(60)
    time.sleep(2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    assert not foreign, f"connections outside loopback: {sorted(foreign)}"


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> Path:
    sys.path.insert(0, str(HERE))
    from fake_hub import populate_hub_cache

    return populate_hub_cache(tmp_path_factory.mktemp("hf") / "hub", MODELS)


@pytest.fixture(scope="session")
def maths_data(tmp_path_factory) -> dict[str, Path]:
    """``{"problem", "answer"}`` JSONL as `holderpo data prepare` writes it: additions, 4,096 train / 64 val rows."""
    root = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    out = {}
    for split, n in (("train", 4096), ("validation", 64)):
        rows = []
        for _ in range(n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            rows.append(json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}))
        out[split] = root / f"{split}.jsonl"
        out[split].write_text("\n".join(rows) + "\n")
    return out


@pytest.fixture(scope="session")
def alfworld_games(tmp_path_factory) -> Path:
    """ALFWorld games built offline from the alfworld package's PDDL and grammar (3 per task type and split)."""
    # a submodule of the real package: a bare "alfworld" is also the tests/alfworld folder (a namespace package)
    pytest.importorskip("alfworld.info", reason="the ALFWorld recipe needs the optional extra holder_nemo[alfworld]")
    os.environ.setdefault("ALFWORLD_DATA", str(tmp_path_factory.mktemp("alfworld_data")))
    from holder_nemo.alfworld.games import build_offline_games

    root = tmp_path_factory.mktemp("alfworld_games")
    build_offline_games(root, trials=3)
    return root


@dataclass
class DriverRun:
    code: int
    trace: dict
    log: str
    run_dir: Path
    log_dir: Path | None
    events: list[dict] = field(default_factory=list)  # this launch's trace points (kill_points), in order
    seconds: float = 0.0

    def tensorboard(self, tag: str) -> dict[int, float]:
        """{step: value} of a scalar NeMo RL logged (``train/...``, ``holder/p``) in this launch's log directory
        (NeMo RL's ``get_next_experiment_dir`` gives every launch its own ``exp_NNN``)."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        values: dict[int, float] = {}
        if self.log_dir is None:
            return values
        for events in sorted(self.log_dir.rglob("events.out.tfevents.*")):
            acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
            acc.Reload()
            if tag in acc.Tags().get("scalars", []):
                values.update({e.step: e.value for e in acc.Scalars(tag)})
        return values


def _read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _kill_when_due(proc: subprocess.Popen, kill: Kill, events_path: Path, started: float, timeout: float) -> None:
    """Watch the launch's event log; SIGKILL the driver process when ``kill`` says (unless it ended first)."""
    due: float | None = started + kill.after_s if kill.after_s is not None else None
    offset, seen = 0, 0
    while proc.poll() is None:
        now = time.monotonic()
        if now - started > timeout:
            return  # the caller's wait fails the test
        if due is None and events_path.exists():
            with open(events_path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(complete)
            mine = [e for e in map(json.loads, complete.decode().splitlines()) if e["pid"] == proc.pid]
            seen += len(mine)
            if kill.at is not None and any(e.get("held") for e in mine):
                due = now
            elif kill.after_events is not None and seen >= kill.after_events:
                due = now + kill.delay
        if due is not None and now >= due:
            os.kill(proc.pid, signal.SIGKILL)
            return
        time.sleep(0.05)


@pytest.fixture
def run_driver(ray_cluster, hub_cache, maths_data):
    """``run_driver(run_dir, recipe, *overrides, signal_at_step=k, env={...})`` -> DriverRun.

    Operational overrides only (where to write, which data file, one reward worker, no GPU monitor); everything
    that decides what is trained is the recipe's own.
    """

    def run(
        run_dir: Path, recipe: str, *overrides: str, signal_at_step: int = 0, env=None, timeout=900, data=None,
        kill: Kill | None = None,
    ):  # fmt: skip
        run_dir.mkdir(parents=True, exist_ok=True)
        events_path = run_dir / "events.jsonl"
        trace_path = run_dir / f"trace-{time.monotonic_ns()}.json"
        data = data or maths_data
        argv = [
            "--config", str(RECIPES / recipe),
            f"checkpointing.checkpoint_dir={run_dir / 'ckpt'}",
            f"logger.log_dir={run_dir / 'logs'}",
            f"data.train.data_path={data['train']}",
            f"data.validation.data_path={data['validation']}",
            "env.holder_math.num_workers=1",
            "logger.monitor_gpus=false",
            *overrides,
        ]  # fmt: skip
        child_env = {
            **os.environ,
            "RAY_ADDRESS": ray_cluster["address"],
            "RAY_AUTH_MODE": "disabled",
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(hub_cache),
            "TORCH_CUDA_ARCH_LIST": "9.0",  # set in the NGC image; NeMo RL's Megatron path requires it
            "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]),
            "HOLDERPO_TEST_SIGNAL_AT_STEP": str(signal_at_step),
            "HOLDERPO_TEST_EVENTS": str(events_path),
            "HOLDERPO_TEST_KILL_AT": json.dumps(kill.at) if kill is not None and kill.at else "",
            **(env or {}),
        }
        before = set((run_dir / "logs").glob("exp_*"))
        log_path = run_dir / f"{trace_path.stem}.log"
        started = time.monotonic()
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "driver.py"), str(trace_path), "--", *argv],
                env=child_env, stdout=log_file, stderr=subprocess.STDOUT, text=True, cwd=run_dir,
            )  # fmt: skip
        ray_cluster["watch"].watch(proc.pid)
        try:
            if kill is not None:
                _kill_when_due(proc, kill, events_path, started, timeout)
            proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - started
        log = log_path.read_text()
        trace = json.loads(trace_path.read_text()) if trace_path.exists() else {}
        new_logs = sorted(set((run_dir / "logs").glob("exp_*")) - before)
        events = [e for e in _read_events(events_path) if e["pid"] == proc.pid]
        return DriverRun(proc.returncode, trace, log, run_dir, new_logs[-1] if new_logs else None, events, seconds)

    return run
