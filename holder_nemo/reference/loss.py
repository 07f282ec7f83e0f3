"""The loss the reference run trains with: the NeMo RL plugin's ``HolderPOLossFn``, called exactly as NeMo RL calls it.

Interface (NeMo RL ``LossFunction``, LOGPROB input): ``loss_fn.set_step(step)`` selects p(step) from the schedule,
then ``loss_fn(next_token_logprobs=[B, S-1], data=batch, global_valid_seqs=n_seqs, global_valid_toks=n_toks)``
returns (this micro-batch's loss, normalised by the global counts, and its metrics as floats).

The reference run also knows each step's mean reward before it updates, so it can run the reward-driven schedule
(``loss_fn.holder.schedule.kind: reward``, p = clip(p_max exp(-gamma * mean reward), p_min, p_max)), which the NeMo
RL entry point rejects because NeMo RL v0.7.0 does not pass the reward to ``policy.train``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from holder_nemo.core import PSchedule
from holder_nemo.nemo_rl import HolderPOLossFn


def split_reward_schedule(loss_fn_config: Any) -> tuple[Any, Mapping[str, Any] | None]:
    """(the ``loss_fn`` section as the NeMo RL plugin accepts it, the ``kind: reward`` schedule mapping or None).

    The plugin refuses ``kind: reward`` (NeMo RL does not pass rewards to the loss); it is handed the section without
    the schedule, so it still validates every other key, and the caller validates the reward schedule with
    ``PSchedule`` (and replaces the plugin's default schedule with it). Anything else is returned as is.
    """
    if not isinstance(loss_fn_config, Mapping):
        return loss_fn_config, None
    holder = loss_fn_config.get("holder")
    schedule = holder.get("schedule") if isinstance(holder, Mapping) else None
    if not isinstance(schedule, Mapping) or schedule.get("kind") != "reward":
        return loss_fn_config, None
    plugin_view = {**loss_fn_config, "holder": {k: v for k, v in holder.items() if k != "schedule"}}
    return plugin_view, schedule


class ReferenceHolderPOLossFn(HolderPOLossFn):
    """``HolderPOLossFn`` whose p may also follow the step's mean reward (``set_mean_reward``).

    For every step schedule p is exactly the plugin's ``schedule(step)``; only kind ``reward`` reads the reward.
    The reward is the mean over the step's own rollout, so a resumed run recomputes it and uses the same p.
    """

    def __init__(self, loss_fn_config: Mapping[str, Any]) -> None:
        config, reward_schedule = split_reward_schedule(dict(loss_fn_config))
        feedback = None
        if reward_schedule is not None:
            try:
                feedback = PSchedule.from_dict(reward_schedule)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"loss_fn.holder.schedule: {exc}") from None
        super().__init__(config)
        if feedback is not None:
            self.schedule = feedback
        self.mean_reward: float | None = None

    def set_mean_reward(self, mean_reward: float) -> None:
        """The mean reward of the step about to be trained (read by the ``reward`` schedule only)."""
        self.mean_reward = float(mean_reward)

    @property
    def p(self) -> float:
        """Hölder order used at the current step (and reward, for kind ``reward``)."""
        return self.schedule(self.step, self.mean_reward)


def make_loss_fn(loss_fn_config: Mapping[str, Any]) -> ReferenceHolderPOLossFn:
    """Build the training loss from the recipe's ``loss_fn`` section (raises LossConfigError naming the key)."""
    return ReferenceHolderPOLossFn(loss_fn_config)


def reduce_metric(key: str, accumulated: float | None, value: float) -> float:
    """Combine one micro-batch's metric into the update's value, as NeMo RL's reductions do.

    Metrics are pre-normalised by the global counts, so micro-batch values add up; ``*_min`` / ``*_max`` take the
    min / max instead.
    """
    if accumulated is None:
        return value
    if key.endswith("_min"):
        return min(accumulated, value)
    if key.endswith("_max"):
        return max(accumulated, value)
    return accumulated + value
