"""Offline ALFWorld games played through TextWorld's PDDL engine and through alfworld's own AlfredTWEnv."""

from __future__ import annotations

import importlib.util
import json

import pytest

from holder_nemo.alfworld.games import SPECS, TASK_TYPES, task_description

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)


def _respond(command: str) -> str:
    return f"<think>the plan says so</think><action>{command}</action>"


@pytest.mark.parametrize("task_type", list(TASK_TYPES.values()))
def test_scripted_expert_plan_wins_every_task_type(task_type, game_by_task):
    from holder_nemo.alfworld.env import AlfworldEpisode

    spec = SPECS[task_type]
    with AlfworldEpisode() as env:
        env.reset(game_by_task[task_type], with_expert=True)
        assert env.expert_plan() == list(spec.expert_plan)  # the planner agrees with the scripted plan
        assert env.state.task == task_description(spec) + "."
        for k, command in enumerate(spec.expert_plan, start=1):
            assert command in env.state.admissible, (command, env.state.admissible)
            result = env.step(_respond(command))
            assert result.valid and result.command == command and result.step == k
            last = k == len(spec.expert_plan)
            assert (result.won, result.done, result.truncated) == (last, last, False)
            assert result.env_reward == (10.0 if last else 0.0)
        with pytest.raises(RuntimeError, match="done"):
            env.step(_respond("look"))


def test_invalid_and_inadmissible_actions(game_by_task):
    from holder_nemo.alfworld.env import AlfworldEpisode

    with AlfworldEpisode() as env:
        env.reset(game_by_task["pick_and_place_simple"])
        garbage = env.step("I will just wander around the room for a while")
        assert garbage.observation == "Nothing happens."
        assert (garbage.valid, garbage.won, garbage.done) == (False, False, False)
        assert garbage.env_reward == 0.0  # the 0.1 penalty for a malformed reply is the trainer's (step_samples)
        inadmissible = env.step(_respond("fly to the moon"))
        assert inadmissible.observation == "Nothing happens." and inadmissible.valid and inadmissible.env_reward == 0.0
        no_think = env.step("<action>go to countertop 1</action>")  # executed, but malformed
        assert no_think.observation.startswith("You arrive at countertop 1.")
        assert not no_think.valid and no_think.env_reward == 0.0
        # the history holds the observation seen *before* each action and the command actually sent
        assert env.state.history[0][1] == "i will just wander around the room for a while"[-30:]
        assert env.state.history[1] == ("Nothing happens.", "fly to the moon")
        assert "[Observation 3: 'Nothing happens.', Action 3: 'go to countertop 1']" in no_think.prompt
        assert "Prior to this step, you have already taken 3 step(s)." in no_think.prompt
        assert "You are now at step 4 and your current observation is: You arrive at countertop 1." in no_think.prompt
        assert "'take apple 1 from countertop 1'" in no_think.prompt and "'help'" not in no_think.prompt


def test_step_limit_ends_unsuccessful(game_by_task):
    from holder_nemo.alfworld.env import AlfworldEpisode
    from holder_nemo.alfworld.protocol import ProtocolConfig

    with AlfworldEpisode(ProtocolConfig(max_steps=3)) as env:
        env.reset(game_by_task["pick_heat_then_place_in_recep"])
        results = [env.step(_respond("look")) for _ in range(3)]
        assert [r.done for r in results] == [False, False, True]
        assert results[-1].truncated and not results[-1].won
        with pytest.raises(RuntimeError):
            env.step(_respond("look"))
        env.reset(game_by_task["pick_heat_then_place_in_recep"])  # reset starts a fresh episode
        assert env.state.steps == 0 and env.state.history == []
    with pytest.raises(FileNotFoundError, match="game_file"):
        AlfworldEpisode().reset("/nonexistent/game.tw-pddl")


def test_game_files_have_the_alfredtwenv_layout(offline_root):
    for split in ("train", "valid_seen", "valid_unseen"):
        games = sorted((offline_root / split).rglob("game.tw-pddl"))
        assert len(games) == 6
        for game in games:
            data = json.loads(game.read_text())
            assert data["solvable"] is True and "UNKNOWN GOAL" not in data["grammar"]
            traj = json.loads((game.parent / "traj_data.json").read_text())
            assert game.parent.parent.name.startswith(traj["task_type"] + "-")
            assert (game.parent / "initial_state.pddl").read_text().startswith("(define (problem")


def test_alfworld_alfredtwenv_loads_the_tree_and_plays_to_success(offline_root, tmp_path):
    """alfworld's own loader (the class verl-agent wraps): collects the split, filters, plays through textworld.gym."""
    from alfworld.agents.environment import get_environment

    from holder_nemo.alfworld.data import alfred_tw_config, list_games
    from holder_nemo.alfworld.games import write_game

    # a game AlfredTWEnv must skip: unsolvable
    bad = write_game(tmp_path, "valid_unseen", SPECS["pick_and_place_simple"], trial=9)
    data = json.loads(bad.read_text())
    data["solvable"] = False
    bad.write_text(json.dumps(data))
    assert len(list_games(tmp_path, "valid_unseen")) == 0
    assert len(list_games(offline_root, "eval_out_of_distribution")) == 6
    assert len(list_games(offline_root, "valid_seen", task_types=(1, 6))) == 2

    config = alfred_tw_config(offline_root, task_types=(5,), max_steps=50)  # cool only: one game
    env = get_environment("AlfredTWEnv")(config, train_eval="eval_out_of_distribution").init_env(batch_size=1)
    try:
        env.seed(0)
        obs, infos = env.reset()
        assert "Your task is to: put a cool tomato in shelf." in obs[0]
        assert "cool" in infos["extra.gamefile"][0]
        for command in SPECS["pick_cool_then_place_in_recep"].expert_plan:
            assert command in infos["admissible_commands"][0]
            obs, scores, dones, infos = env.step([command])
        assert infos["won"][0] and dones[0] and scores[0] == 1
    finally:
        env.close()
