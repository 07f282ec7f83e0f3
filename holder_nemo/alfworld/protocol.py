"""The GiGPO / verl-agent ALFWorld protocol: prompt, history, action parsing, rewards. Pure Python.

What the model sees and how its text becomes a command are reproduced from verl-agent (the framework the paper's
ALFWorld numbers come from): ``agent_system/environments/prompts/alfworld.py`` (prompt wording),
``agent_system/memory/memory.py`` (history lines), ``env_manager.AlfWorldEnvironmentManager`` (task extraction,
admissible-action list without ``help``) and ``env_package/alfworld/projection.py`` (parsing). The prompt wording is
kept verbatim, typo "observaitons" included, because the policy is trained on exactly this text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from holder_nemo.config.errors import ConfigError

TASK_MARKER = "Your task is to: "

_ADMISSIBLE_AND_INSTRUCTIONS = (
    "Your admissible actions of the current situation are: [{admissible_actions}].\n"
    "\n"
    "Now it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. This reasoning process MUST be enclosed "
    "within <think> </think> tags. \n"
    "Once you've finished your reasoning, you should choose an admissible action for current step and present it "
    "within <action> </action> tags.\n"
)
PROMPT_FIRST_STEP = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
    "Your current observation is: {current_observation}\n" + _ADMISSIBLE_AND_INSTRUCTIONS
)
PROMPT_WITH_HISTORY = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment. Your task is to: {task_description}\n"
    "Prior to this step, you have already taken {step_count} step(s). Below are the most recent {history_length} "
    "observaitons and the corresponding actions you took: {action_history}\n"
    "You are now at step {current_step} and your current observation is: {current_observation}\n"
    + _ADMISSIBLE_AND_INSTRUCTIONS
)

_CJK = re.compile(r"[\u4e00-\u9fff]")


class ProtocolConfig(BaseModel):
    """Knobs of the protocol, the recipe's ``env.alfworld`` section (verl-agent defaults; all YAML-overridable).

    history_length: past (observation, action) pairs shown in the prompt (``env.history_length``, default 2).
    max_steps: environment steps per episode (``env.max_steps``, 50); the episode ends unsuccessful after it.
    success_reward: reward on the winning step (verl-agent ``compute_reward``: 10 * won).
    invalid_action_penalty: subtracted for a step whose response is malformed (``invalid_action_penalty_coef``, 0.1).
    require_think: a response without ``<think>``/``</think>`` is invalid (verl-agent: yes).
    reject_cjk: a response containing CJK ideographs is invalid (verl-agent: yes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    history_length: int = Field(2, ge=0)
    max_steps: int = Field(50, ge=1)
    success_reward: float = Field(10.0, gt=0)
    invalid_action_penalty: float = Field(0.1, ge=0)
    require_think: StrictBool = True
    reject_cjk: StrictBool = True

    @classmethod
    def from_dict(cls, cfg: dict | None) -> ProtocolConfig:
        """Build from a config mapping; unknown keys are an error naming them."""
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.model_fields))
        if unknown:
            raise ConfigError("env.alfworld", f"unknown keys {unknown}; allowed {sorted(cls.model_fields)}")
        return cls(**cfg)


@dataclass(frozen=True)
class ParsedAction:
    """The command sent to the game and whether the response was well-formed (verl-agent ``is_action_valid``)."""

    command: str
    valid: bool


def parse_action(response: str, *, require_think: bool = True, reject_cjk: bool = True) -> ParsedAction:
    """verl-agent's ``alfworld_projection`` for one response.

    The response is lower-cased and the text between the first ``<action>`` and the first ``</action>`` is the
    command. Without both tags the command is the last 30 characters of the response and the step is invalid; that
    text is still sent to the game, which answers "Nothing happens.". Admissibility is NOT checked here: a well-formed
    but inadmissible command is valid and simply does nothing.
    """
    lowered = response.lower()
    start, end = lowered.find("<action>"), lowered.find("</action>")
    if start == -1 or end == -1:
        return ParsedAction(command=lowered[-30:], valid=False)
    command = lowered[start + len("<action>") : end].strip()
    valid = True
    if require_think and (response.find("<think>") == -1 or response.find("</think>") == -1):
        valid = False
    if reject_cjk and _CJK.search(response):
        valid = False
    return ParsedAction(command=command, valid=valid)


def extract_task(first_observation: str) -> str:
    """The task text after ``Your task is to: `` in the reset observation (ValueError if absent, as verl-agent)."""
    index = first_observation.find(TASK_MARKER)
    if index == -1:
        raise ValueError("task description not found in the first observation (no 'Your task is to: ')")
    return first_observation[index + len(TASK_MARKER) :].strip()


def format_admissible(commands: list[str]) -> str:
    """Admissible commands as verl-agent lists them: quoted, ``help`` dropped, joined by newline + space."""
    return "\n ".join(f"'{c}'" for c in commands if c != "help")


def format_history(history: list[tuple[str, str]], history_length: int) -> tuple[str, int]:
    """The last ``history_length`` (observation-before-action, action) pairs, numbered from 1 over the episode.

    Returns (text, number of pairs shown). Lines read ``[Observation n: 'obs', Action n: 'act']``.
    """
    recent = history[-history_length:] if history_length > 0 else []
    first_number = len(history) - len(recent) + 1
    lines = [
        f"[Observation {first_number + j}: '{obs}', Action {first_number + j}: '{act}']"
        for j, (obs, act) in enumerate(recent)
    ]
    return "\n".join(lines), len(recent)


def build_prompt(
    *,
    task: str,
    observation: str,
    admissible: list[str],
    history: list[tuple[str, str]],
    history_length: int,
) -> str:
    """The user prompt for the next step.

    First step (empty history) or ``history_length == 0``: the no-history template with the raw observation (which
    carries the task). Later steps: task, step count, the last ``history_length`` pairs, current observation.
    """
    actions = format_admissible(admissible)
    if not history or history_length <= 0:
        return PROMPT_FIRST_STEP.format(current_observation=observation, admissible_actions=actions)
    history_text, shown = format_history(history, history_length)
    return PROMPT_WITH_HISTORY.format(
        task_description=task,
        step_count=len(history),
        history_length=shown,
        action_history=history_text,
        current_step=len(history) + 1,
        current_observation=observation,
        admissible_actions=actions,
    )
