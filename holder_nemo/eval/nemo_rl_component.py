"""The paper's maths grader as a NeMo RL component.

The recipe selects it with ``env.holder_math._component_: holder_nemo.eval.nemo_rl_component``.

``register`` puts ``nemo_rl_env.PaperMathEnvironment`` (NeMo RL's ``BaseMathEnvironment`` with a verifier that calls
``holder_nemo.eval.scoring``, docs/eval.md) in NeMo RL's registries under the section's name, run with the driver's
Python. Importable without NeMo RL (``holderpo recipe check`` loads components offline).
"""

from __future__ import annotations

from typing import Any


def register(env_name: str, config: Any) -> list[str]:
    """Make ``env_name`` usable as ``env_name`` in the recipe's data configs (idempotent)."""
    from holder_nemo.nemo_rl.components import register_environment

    return [register_environment(env_name, "holder_nemo.eval.nemo_rl_env.PaperMathEnvironment")]
