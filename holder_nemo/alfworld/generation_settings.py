"""Validation at verl-agent's temperature (0.4) with NeMo RL's vLLM engine, which trains at 1.0.

NeMo RL v0.7.0's ``VllmGeneration.generate(data, greedy)`` has no sampling argument: each vLLM worker actor builds
its ``SamplingParams`` at every call from its own config (``VllmGenerationWorker._build_sampling_params`` reads
``self.cfg["temperature"]``). So the temperature is switched by writing that entry on every worker actor, through
Ray's ``__ray_call__`` (run a function on the actor instance), and on the driver's copy; the per-step loop sets the
validation temperature before validating and restores the training one after. This relies on the two NeMo RL
v0.7.0 internals named above (``worker_group.workers`` and the worker's ``cfg``), checked against a real Ray actor in
``tests/alfworld/test_generation_settings.py``; a generation backend without them (Megatron inference) is refused
with an error rather than silently validating at the training temperature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _swap_temperature(worker: Any, temperature: float) -> float:
    """Runs inside a vLLM worker actor: set its sampling temperature, return the previous one."""
    previous = float(worker.cfg["temperature"])
    worker.cfg["temperature"] = float(temperature)
    return previous


def vllm_temperature_setter(policy_generation: Any) -> Callable[[float], float]:
    """``set(temperature) -> previous temperature`` for NeMo RL's ``VllmGeneration`` (every worker actor)."""
    workers = getattr(getattr(policy_generation, "worker_group", None), "workers", None)
    if not workers:
        raise TypeError(
            f"alfworld.val_temperature: cannot change the sampling temperature of {type(policy_generation).__name__} "
            "(no vLLM worker actors); use the vLLM generation backend or set alfworld.val_temperature to "
            "policy.generation.temperature"
        )

    def set_temperature(temperature: float) -> float:
        import ray

        previous = ray.get([w.__ray_call__.remote(_swap_temperature, temperature) for w in workers])
        if isinstance(getattr(policy_generation, "cfg", None), dict):
            policy_generation.cfg["temperature"] = float(temperature)
        return previous[0]

    return set_temperature
