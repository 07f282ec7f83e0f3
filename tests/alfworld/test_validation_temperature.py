"""Switching the vLLM sampling temperature for validation (``alfworld.training.vllm_temperature_setter``).

Real: Ray (a local cluster of its own on 127.0.0.1) and Ray's ``__ray_call__``. Faked: the vLLM worker actor (vLLM
needs a GPU), by an actor that keeps its settings in ``cfg`` and reads ``cfg["temperature"]`` when it builds its
sampling parameters, as NeMo RL v0.7.0's ``VllmGenerationWorker`` does; the ``nemo_rl``-marked test checks that this
is what v0.7.0's worker does.
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from types import SimpleNamespace

import pytest

from holder_nemo.alfworld.training import vllm_temperature_setter


def test_setter_changes_every_worker_and_returns_the_previous_temperature(local_ray) -> None:
    @local_ray.remote
    class FakeVllmWorker:
        def __init__(self) -> None:
            self.cfg = {"temperature": 1.0, "top_p": 1.0}

        def sampling_temperature(self, greedy: bool = False) -> float:  # what _build_sampling_params reads
            return 0.0 if greedy else self.cfg["temperature"]

    workers = [FakeVllmWorker.remote() for _ in range(2)]
    generation = SimpleNamespace(worker_group=SimpleNamespace(workers=workers), cfg={"temperature": 1.0})
    set_temperature = vllm_temperature_setter(generation)
    assert set_temperature(0.4) == 1.0
    assert local_ray.get([w.sampling_temperature.remote() for w in workers]) == [0.4, 0.4]
    assert generation.cfg["temperature"] == 0.4
    assert set_temperature(1.0) == 0.4
    assert local_ray.get([w.sampling_temperature.remote() for w in workers]) == [1.0, 1.0]


def test_the_function_run_on_the_workers_needs_no_holder_nemo_there() -> None:
    """Ray pickles what ``__ray_call__`` runs with cloudpickle; the vLLM workers run in NeMo RL's own venvs, so the
    function must travel by value: unpickled and run where importing ``holder_nemo`` fails."""
    cloudpickle = pytest.importorskip("ray.cloudpickle", reason="needs ray")
    set_temperature = vllm_temperature_setter(SimpleNamespace(worker_group=SimpleNamespace(workers=[object()])))
    (swap,) = [cell.cell_contents for cell in set_temperature.__closure__ if callable(cell.cell_contents)]
    script = (
        "import sys, pickle, types\n"
        "class NoHolderNemo:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'holder_nemo':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, NoHolderNemo())\n"
        "import ray.cloudpickle\n"
        "swap = pickle.loads(sys.stdin.buffer.read())\n"
        "worker = types.SimpleNamespace(cfg={'temperature': 1.0})\n"
        "assert swap(worker, 0.4) == 1.0 and worker.cfg['temperature'] == 0.4\n"
    )
    done = subprocess.run([sys.executable, "-c", script], input=cloudpickle.dumps(swap), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_generation_without_vllm_workers_is_refused() -> None:
    with pytest.raises(TypeError, match=r"alfworld\.val_temperature"):
        vllm_temperature_setter(SimpleNamespace(cfg={"temperature": 1.0}))


@pytest.mark.nemo_rl
@pytest.mark.skipif(importlib.util.find_spec("nemo_rl") is None, reason="nemo_rl is not importable; needs v0.7.0")
def test_nemo_rl_vllm_worker_reads_its_cfg_temperature_at_every_call() -> None:
    """The contract the setter relies on, in NeMo RL v0.7.0's own source."""
    from nemo_rl.models.generation.vllm import vllm_generation, vllm_worker

    build = inspect.getsource(vllm_worker.BaseVllmGenerationWorker._build_sampling_params)
    assert 'temperature = 0.0 if greedy else self.cfg["temperature"]' in build
    impl = inspect.getsource(vllm_worker.VllmGenerationWorkerImpl)  # generate() sits under an NVTX decorator
    generate = impl[impl.index("    def generate(") : impl.index("    def generate_text(")]
    assert "sampling_params = self._build_sampling_params(" in generate
    assert "self.cfg = config" in inspect.getsource(vllm_worker.BaseVllmGenerationWorker)
    assert "self.worker_group = RayWorkerGroup(" in inspect.getsource(vllm_generation.VllmGeneration.__init__)
