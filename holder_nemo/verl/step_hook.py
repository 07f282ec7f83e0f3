"""The smallest hook that gets verl's global step to the Hölder losses (verl 0.9.1 passes it to no policy loss).

Two lines in the trainer, as the paper's fork did: put ``global_steps`` in the actor-update batch's metadata, and
make ``holder_ppo_loss`` the actor's loss function (docs/verl.md shows both). verl copies batch metadata into every
micro-batch as non-tensor data; ``holder_ppo_loss`` moves it to ``config.policy_loss.global_step`` and runs verl's own
``ppo_loss`` unchanged. The step is verl's ``trainer.global_steps`` (1-based, restored from ``global_step_N`` on
resume), so a resumed run uses the p of an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig
from verl.workers.utils.losses import ppo_loss

from holder_nemo.verl.losses import HolderPolicyLossConfig


def holder_ppo_loss(config: ActorConfig, model_output: Any, data: Any, dp_group: Any = None) -> Any:
    """verl's ``ppo_loss`` after ``config.policy_loss.global_step = data["global_steps"]`` (when both exist)."""
    step = tu.get_non_tensor_data(data=data, key="global_steps", default=None)
    if step is not None and isinstance(config.policy_loss, HolderPolicyLossConfig):
        config.policy_loss.global_step = int(step)
    return ppo_loss(config, model_output, data, dp_group)
