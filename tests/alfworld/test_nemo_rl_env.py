"""The NeMo RL environment logic (pure adapter) and, where NeMo RL + Ray are installed, the Ray actor itself."""

from __future__ import annotations

import importlib.util

import pytest

from holder_nemo.alfworld.games import SPECS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)


def _assistant(command: str, think: bool = True) -> dict:
    body = f"<think>ok</think><action>{command}</action>" if think else f"<action>{command}</action>"
    return {"role": "assistant", "content": body}


def test_turn_processor_runs_an_episode_like_nemo_rl_multi_turn_rollout(game_by_task):
    from holder_nemo.alfworld.nemo_rl_adapter import AlfworldTurnProcessor, first_prompt, initial_metadata

    game = str(game_by_task["pick_two_obj_and_place"])
    plan = SPECS["pick_two_obj_and_place"].expert_plan
    processor = AlfworldTurnProcessor()
    log = [{"role": "user", "content": first_prompt(game)}]
    meta = initial_metadata(game)
    total = 0.0
    for k, command in enumerate(plan):
        log.append(_assistant(command, think=k != 0))  # first reply malformed (no <think>) -> -0.1
        out = processor.process_turn(log, meta)
        total += out.reward
        log.append(out.observation)
        last = k == len(plan) - 1
        assert out.terminated is last and out.won is last
        if not last:
            assert out.metadata["turn"] == k + 1 and out.metadata["game_file"] == game
            assert k == 0 or out.metadata["episode_key"] == meta["episode_key"]
            assert out.observation["content"].startswith("<|im_end|>\n<|im_start|>user\n\nYou are an expert agent")
            assert out.observation["content"].endswith("<|im_end|>\n<|im_start|>assistant\n")
            meta = out.metadata
        else:
            assert out.metadata is None and out.observation["content"] == ""
    assert total == pytest.approx(10.0 - 0.1)
    assert processor.live_episodes() == 0


def test_turn_processor_interleaves_episodes_and_validates(game_by_task):
    from holder_nemo.alfworld.nemo_rl_adapter import AlfworldTurnProcessor, initial_metadata, success_metrics
    from holder_nemo.alfworld.protocol import ProtocolConfig

    processor = AlfworldTurnProcessor(ProtocolConfig(max_steps=2))
    # NeMo RL gives the group's samples identical (deep-copied) metadata: each must still get its own episode
    meta = initial_metadata(str(game_by_task["pick_and_place_simple"]))
    out_a = processor.process_turn([_assistant("go to countertop 1")], dict(meta))
    out_b = processor.process_turn([_assistant("look")], dict(meta))
    assert processor.live_episodes() == 2
    assert out_a.metadata["episode_key"] != out_b.metadata["episode_key"]
    assert "You arrive at countertop 1." in out_a.observation["content"]
    assert "You arrive at countertop 1." not in out_b.observation["content"]
    final = processor.process_turn([_assistant("look")], out_a.metadata)
    assert final.terminated and not final.won and final.metadata is None  # step limit 2
    with pytest.raises(ValueError, match="game_file"):
        processor.process_turn([_assistant("look")], {"turn": 0})
    with pytest.raises(RuntimeError, match="not live"):
        processor.process_turn([_assistant("look")], {**out_a.metadata})  # finished episode
    with pytest.raises(ValueError, match="invalid_action_penalty"):
        AlfworldTurnProcessor(ProtocolConfig(invalid_action_penalty=1.0, max_steps=10))
    processor.close()

    games = [str(game_by_task[t]) for t in ("pick_and_place_simple", "pick_and_place_simple", "look_at_obj_in_light")]
    metrics = success_metrics([9.9, -0.3, 10.0], games)
    assert metrics["alfworld/success_rate"] == pytest.approx(2 / 3)
    assert metrics["alfworld/success_rate/pick"] == pytest.approx(0.5)
    assert metrics["alfworld/success_rate/look"] == 1.0


def _nemo_rl_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("ray", "nemo_rl"))


@pytest.mark.nemo_rl
@pytest.mark.skipif(not _nemo_rl_available(), reason="needs ray and nemo_rl importable (NGC NeMo RL image)")
@pytest.mark.usefixtures("local_ray")  # a Ray cluster of this module's own (tests/conftest.py)
def test_ray_actor_implements_nemo_rl_environment_interface(game_by_task):
    import ray
    import torch
    from nemo_rl.distributed.batched_data_dict import BatchedDataDict
    from nemo_rl.environments.interfaces import EnvironmentReturn

    from holder_nemo.alfworld.nemo_rl_adapter import first_prompt, initial_metadata
    from holder_nemo.alfworld.nemo_rl_env import AlfworldEnvironment

    env = AlfworldEnvironment.remote({"max_steps": 50, "history_length": 2})
    game = str(game_by_task["look_at_obj_in_light"])
    log = [{"role": "user", "content": first_prompt(game)}]
    meta = initial_metadata(game)
    for command in SPECS["look_at_obj_in_light"].expert_plan:
        log.append(_assistant(command))
        ret = ray.get(env.step.remote([log], [meta]))
        assert isinstance(ret, EnvironmentReturn)
        log.append(ret.observations[0])
        meta = ret.metadata[0]
    assert ret.terminateds.tolist() == [True] and ret.rewards.tolist() == [10.0]
    batch = BatchedDataDict({"total_reward": torch.tensor([10.0]), "extra_env_info": [initial_metadata(game)]})
    _, metrics = ray.get(env.global_post_process_and_metrics.remote(batch))
    assert metrics["alfworld/success_rate"] == 1.0
    ray.get(env.shutdown.remote())
