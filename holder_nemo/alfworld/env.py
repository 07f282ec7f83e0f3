"""One ALFWorld episode under the verl-agent protocol: reset on a game file, step on the model's response text.

The game engine is TextWorld's PDDL environment wrapped exactly as alfworld's ``AlfredTWEnv.init_env`` wraps it
(``AlfredDemangler`` for entity names, ``AlfredInfos`` for the game path, ``won`` + ``admissible_commands``
requested), without the gym worker process, so one Python object = one game and a Ray actor can hold many.
``textworld``/``alfworld`` are imported on first use (optional extra ``holder_nemo[alfworld]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from holder_nemo.alfworld.protocol import ProtocolConfig, build_prompt, extract_task, parse_action


@dataclass(frozen=True)
class StepResult:
    """What one environment step returns.

    prompt: the next user prompt (meaningless once ``done``), observation: the game's feedback text,
    admissible: commands admissible now, command: what was sent to the game, valid: the response was well-formed,
    won: the goal holds, done: won or step limit reached, truncated: done by the step limit without a win,
    env_reward: ``success_reward * won`` (verl-agent's environment reward; the invalid-format penalty is the
    trainer's, ``step_samples``), step: steps taken so far (1-based).
    """

    prompt: str
    observation: str
    admissible: list[str]
    command: str
    valid: bool
    won: bool
    done: bool
    truncated: bool
    env_reward: float
    step: int


@dataclass
class EpisodeState:
    """Everything the protocol needs to rebuild a prompt: task, current observation, admissible list, history."""

    game_file: str
    task: str
    observation: str
    admissible: list[str]
    history: list[tuple[str, str]] = field(default_factory=list)  # (observation before the action, command)
    steps: int = 0
    won: bool = False
    done: bool = False


def _make_textworld_env(policy_commands: bool):
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
    from textworld.envs import PddlEnv

    infos = textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=policy_commands, extras=["gamefile"])
    return AlfredInfos(AlfredDemangler(PddlEnv(infos), shuffle=False))  # verl-agent: domain_randomization off


class AlfworldEpisode:
    """A single-game ALFWorld environment speaking the verl-agent protocol.

    ``reset(game_file)`` returns the first prompt; ``step(response)`` parses the response, plays the command and
    returns a :class:`StepResult`. ``expert_plan()`` gives the planner's optimal remaining commands (tests, evaluation
    sanity checks). Not thread-safe; one instance per concurrent episode.
    """

    def __init__(self, config: ProtocolConfig | None = None) -> None:
        self.config = config or ProtocolConfig()
        self._env = None
        self._with_policy = False
        self.state: EpisodeState | None = None

    def _engine(self, with_policy: bool):
        if self._env is None or with_policy != self._with_policy:
            self.close()
            self._env = _make_textworld_env(with_policy)
            self._with_policy = with_policy
        return self._env

    def reset(self, game_file: str | Path, *, with_expert: bool = False) -> str:
        """Load ``game_file`` (a ``game.tw-pddl``), start the episode and return the first prompt."""
        path = Path(game_file)
        if not path.is_file():
            raise FileNotFoundError(f"game_file: no such file {str(path)!r}")
        env = self._engine(with_expert)
        env.load(str(path))
        game_state = env.reset()
        self._game_state = game_state
        observation = game_state.feedback
        self.state = EpisodeState(
            game_file=str(path),
            task=extract_task(observation),
            observation=observation,
            admissible=list(game_state["admissible_commands"]),
        )
        return self.prompt()

    def prompt(self) -> str:
        """The prompt for the current state (first-step template before any action, history template after)."""
        state = self._require_state()
        return build_prompt(
            task=state.task,
            observation=state.observation,
            admissible=state.admissible,
            history=state.history,
            history_length=self.config.history_length,
        )

    def expert_plan(self) -> list[str]:
        """The planner's optimal command sequence from the current state (needs ``reset(..., with_expert=True)``)."""
        self._require_state()
        if not self._with_policy:
            raise RuntimeError("expert_plan() needs reset(game_file, with_expert=True)")
        return list(self._game_state["policy_commands"])

    def step(self, response: str) -> StepResult:
        """Parse ``response``, play the command, advance the history; raises if the episode is already done."""
        state = self._require_state()
        if state.done:
            raise RuntimeError(f"episode on {state.game_file} is done; call reset() first")
        parsed = parse_action(response, require_think=self.config.require_think, reject_cjk=self.config.reject_cjk)
        game_state, _score, game_done = self._env.step(parsed.command)
        self._game_state = game_state
        won = bool(game_state["won"])
        state.history.append((state.observation, parsed.command))
        state.steps += 1
        state.observation = game_state.feedback
        state.admissible = list(game_state["admissible_commands"])
        state.won = won
        truncated = not won and state.steps >= self.config.max_steps
        state.done = won or bool(game_done) or truncated
        return StepResult(
            prompt=self.prompt(),
            observation=state.observation,
            admissible=list(state.admissible),
            command=parsed.command,
            valid=parsed.valid,
            won=won,
            done=state.done,
            truncated=truncated,
            env_reward=self.config.success_reward * float(won),
            step=state.steps,
        )

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def _require_state(self) -> EpisodeState:
        if self.state is None:
            raise RuntimeError("call reset(game_file) first")
        return self.state

    def __enter__(self) -> AlfworldEpisode:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
