"""Resume-exact annealed p: hand the loss the global training step before every driver-side ``policy.train`` call.

NeMo RL v0.7.0 never tells the loss which step it is: the step lives in ``grpo_train``'s locals and in
``grpo_save_state["total_steps"]`` (number of *completed* steps, restored from ``training_info.json`` on resume).
``grpo_train`` calls ``policy.train(train_data, loss_fn, timer=...)`` exactly once per GRPO step and logs that
step's metrics at ``total_steps + 1``. Because the loss object is cloudpickled to the workers on every call, setting
``loss_fn.set_step(k)`` on the driver right before the call is enough.

Step convention: the k-th training step of a run (k = total_steps + 1, the step NeMo RL logs under) uses p(k), the
paper/oat convention (oat counts from 1: p(1) = 1.992 for 2 -> -2 over 500 steps, p(500) = -2). A run resumed from
the ``step_k`` checkpoint (total_steps = k) continues with p(k + 1), exactly as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol


class _SteppableLoss(Protocol):
    def set_step(self, step: int) -> None: ...

    @property
    def p(self) -> float: ...


class StepScheduledTrain:
    """Replacement for a policy's bound ``train``: sets the loss step, logs ``holder/p``, then delegates.

    Args:
        train: the policy's original bound ``train`` method.
        completed_steps: steps already completed (``grpo_save_state["total_steps"]`` after ``setup()``, checked by
            ``completed_steps_from_state``).
        logger: optional NeMo RL ``Logger`` (anything with ``log_metrics(metrics, step, prefix=...)``).
        on_step_done: optional ``f(step)`` called once ``train`` has returned for that global step (the progress
            record, ``progress.py``).
    """

    def __init__(
        self,
        train: Callable[..., Any],
        completed_steps: int,
        logger: Any | None = None,
        on_step_done: Callable[[int], None] | None = None,
    ) -> None:
        self.wrapped = train
        self.completed_steps = completed_steps
        self.logger = logger
        self.on_step_done = on_step_done

    def __call__(self, data: Any, loss_fn: Any, *args: Any, **kwargs: Any) -> Any:
        step = self.completed_steps + 1
        if hasattr(loss_fn, "set_step"):
            loss_fn.set_step(step)
            if self.logger is not None:
                self.logger.log_metrics({"p": float(loss_fn.p)}, step, prefix="holder")
        result = self.wrapped(data, loss_fn, *args, **kwargs)
        self.completed_steps = step
        if self.on_step_done is not None:
            self.on_step_done(step)
        return result


def completed_steps_from_state(grpo_save_state: Mapping[str, Any] | None) -> int:
    """``total_steps`` of a restored ``GRPOSaveState`` (0 for a fresh run)."""
    if not grpo_save_state:
        return 0
    total = grpo_save_state.get("total_steps", 0)
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"grpo_save_state['total_steps'] must be an integer >= 0, got {total!r}")
    return total


def install_step_schedule(
    policy: Any,
    loss_fn: _SteppableLoss,
    grpo_save_state: Mapping[str, Any] | None,
    logger: Any | None = None,
    on_step_done: Callable[[int], None] | None = None,
) -> StepScheduledTrain:
    """Wrap ``policy.train`` (instance attribute, the class is untouched) and seed the loss with the next step."""
    completed = completed_steps_from_state(grpo_save_state)
    wrapper = StepScheduledTrain(policy.train, completed, logger, on_step_done)
    policy.train = wrapper
    loss_fn.set_step(completed + 1)
    return wrapper
