"""What a study runs: the arms (loss settings), the tasks (data settings) and the shared run settings.

Every arm and task is a list of recipe overrides on the reference recipe (``holderpo train``), written out in
``study.json`` / ``study.md`` so each run can be reproduced by hand. Override order per run (later wins):
``STUDY_BASE`` -> the task's -> the user's command-line overrides -> the arm's (so an arm is always what it says).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    label: str  # shown in tables and figures
    summary: str  # one line: what the arm is
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class StudyTask:
    summary: str
    overrides: tuple[str, ...]
    threshold: float  # reward level for "steps to threshold"


def _holder(clip_mode: str, kind: str, p_max: float, p_min: float = -2.0, *extra: str) -> tuple[str, ...]:
    return (
        f"loss_fn.holder.clip_mode={clip_mode}",
        f"loss_fn.holder.schedule.kind={kind}",
        f"loss_fn.holder.schedule.p_max={p_max}",
        f"loss_fn.holder.schedule.p_min={p_min}",
        *extra,
    )


BASELINE_ARM = "grpo"

ARMS: dict[str, Arm] = {
    "grpo": Arm(
        "GRPO", "token clip, p = 1 (arithmetic mean of clipped token ratios)", _holder("token", "constant", 1.0)
    ),
    "gspo": Arm(
        "GSPO", "sequence clip, p = 0 (geometric mean), the recipe's epsilon", _holder("sequence", "constant", 0.0)
    ),
    "gmpo": Arm(
        "GMPO",
        "token_log clip, p = 0, epsilon = 0.4 (GMPO's published setting)",
        _holder("token_log", "constant", 0.0, -2.0, "loss_fn.ratio_clip_min=0.4", "loss_fn.ratio_clip_max=0.4"),
    ),
    "holder_anneal": Arm(
        "HölderPO 2→−2",
        "sequence clip, p linear 2 -> -2 over the run (paper default)",
        _holder("sequence", "linear_dec", 2.0),
    ),
    "holder_p2": Arm("p = 2", "sequence clip, p = 2 fixed", _holder("sequence", "constant", 2.0)),
    "holder_pm2": Arm("p = −2", "sequence clip, p = -2 fixed", _holder("sequence", "constant", -2.0, -2.0)),
    "holder_reversed": Arm(
        "reversed −2→2",
        "sequence clip, p linear -2 -> 2 (the anneal run backwards)",
        _holder("sequence", "linear", 2.0),
    ),
    "holder_reward": Arm(
        "reward-driven",
        "sequence clip, p = clip(2 exp(-2 r), -2, 2) with r the step's mean reward (2 at r = 0, 0.27 at r = 1)",
        _holder("sequence", "reward", 2.0, -2.0, "++loss_fn.holder.schedule.gamma=2.0"),
    ),
}

# Shared by every run. 16 prompts x 8 samples = 128 rows per step, 8 optimizer updates of 16 rows (the paper's
# maths runs refresh the policy 8 times per rollout batch): 7 of 8 updates are off-policy, which is where the
# aggregations differ (on the first update every ratio is 1 and all arms take the same gradient).
STUDY_BASE: tuple[str, ...] = (
    "grpo.num_prompts_per_step=16",
    "grpo.num_generations_per_prompt=8",
    "policy.train_global_batch_size=16",
    "policy.train_micro_batch_size=16",
    "policy.optimizer.kwargs.lr=5e-4",
    "policy.generation.max_new_tokens=10",
    "checkpointing.save_period=25",
    "checkpointing.keep_last_k=1",
    "logger.progress_bar=false",
    "logger.tensorboard_enabled=false",
    "logger.plot=false",
    "reference.num_threads=1",
)

TASKS: dict[str, StudyTask] = {
    "repeat": StudyTask(
        '"7=" -> "77777777", "12=" -> "12121212": a 1-2 digit number tiled to 8 digits, then <eos> (9 tokens)',
        (
            "data.task=digits",
            "data.digits.op=repeat",
            "data.digits.min_digits=1",
            "data.digits.max_digits=2",
            "++data.digits.repeat_length=8",
        ),
        threshold=0.4,
    ),
    "reverse": StudyTask(
        '"12345678=" -> "87654321": a 6-8 digit number reversed, then <eos> (7-9 tokens)',
        (
            "data.task=digits",
            "data.digits.op=reverse",
            "data.digits.min_digits=6",
            "data.digits.max_digits=8",
        ),
        threshold=0.12,
    ),
}

DEFAULT_SEEDS = 5
