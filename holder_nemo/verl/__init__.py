"""HölderPO for verl (``pip install 'holder_nemo[verl]'``, verl==0.9.1): policy losses ``holder`` and ``holder_token``.

``HolderPolicyLossConfig`` (the ``actor.policy_loss._target_`` that carries the p schedule) and the losses live in
``holder_nemo.verl.losses``, whose import registers them in verl's ``POLICY_LOSS_REGISTRY``; ``holder_ppo_loss`` (the
step hook) in ``holder_nemo.verl.step_hook``. Importing this package does not import verl: names resolve on first
access, and Hydra's ``_target_: holder_nemo.verl.HolderPolicyLossConfig`` is such an access.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "HolderPolicyLossConfig": "losses",
    "compute_policy_loss_holder": "losses",
    "compute_policy_loss_holder_token": "losses",
    "register": "losses",
    "holder_ppo_loss": "step_hook",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"holder_nemo.verl.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
