"""HölderPO as a NeMo RL v0.7 plugin: the loss, resume-exact p, the GRPO entry point (stop and resume:
``holder_nemo.run_control``).

Nothing here imports ``nemo_rl`` at import time; NeMo RL objects are resolved lazily inside the functions that need
them, so the loss is importable and testable anywhere and cloudpickles to the Ray workers.
"""

from holder_nemo.nemo_rl.loss import HolderPOLossFn
from holder_nemo.nemo_rl.loss_config import HolderPOLossConfig, LossConfigError, parse_loss_config
from holder_nemo.nemo_rl.steps import StepScheduledTrain, install_step_schedule

__all__ = [
    "HolderPOLossConfig",
    "HolderPOLossFn",
    "LossConfigError",
    "StepScheduledTrain",
    "install_step_schedule",
    "parse_loss_config",
]
