"""NeMo RL's own ``run_multi_turn_rollout`` driving the ALFWorld Ray environment (per-episode layout).

Needs ray + nemo_rl (NGC NeMo RL image, or a v0.7.0 source tree on PYTHONPATH); skipped elsewhere. The policy is a
scripted stand-in for vLLM generation (which cannot run on CPU): it reads the protocol prompt it is given and answers
the planner's command for that step on one game, and "look" on the other, so one group wins and one times out.
"""

from __future__ import annotations

import importlib.util
import string

import pytest
import torch
from alfworld_doubles import CHAT_TEMPLATE, ScriptedGeneration

from holder_nemo.alfworld.games import SPECS, task_description

pytestmark = [
    pytest.mark.nemo_rl,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) is not None for m in ("alfworld", "ray", "nemo_rl")),
        reason="needs alfworld, ray and nemo_rl importable (NGC NeMo RL image)",
    ),
]


@pytest.mark.usefixtures("local_ray")  # a Ray cluster of this module's own (tests/conftest.py)
def test_nemo_rl_multi_turn_rollout_with_alfworld_environment(game_by_task):
    import ray
    from nemo_rl.distributed.batched_data_dict import BatchedDataDict
    from nemo_rl.experience.rollouts import run_multi_turn_rollout

    from holder_nemo.alfworld.nemo_rl_adapter import alfworld_data_processor
    from holder_nemo.alfworld.nemo_rl_env import AlfworldEnvironment
    from holder_nemo.reference.model import build_char_tokenizer

    tokenizer = build_char_tokenizer(string.printable)
    tokenizer.chat_template = CHAT_TEMPLATE
    win, lose = "look_at_obj_in_light", "pick_and_place_simple"
    datums = [
        alfworld_data_processor({"game_file": str(game_by_task[t])}, None, tokenizer, 100_000, idx=i)
        for i, t in enumerate((win, lose))
    ]
    batch = BatchedDataDict({k: [d[k] for d in datums] for k in datums[0]})
    batch["loss_multiplier"] = torch.tensor(batch["loss_multiplier"])
    batch = batch.repeat_interleave(2)  # group size 2, identical (deep-copied) metadata within a group

    # the observation closes the assistant turn and opens the next user turn in this tokenizer's chat format
    env = AlfworldEnvironment.remote({"max_steps": 6, "turn_template": "</assistant><user>{prompt}</user><assistant>"})
    generation = ScriptedGeneration(tokenizer, {task_description(SPECS[win]) + ".": SPECS[win].expert_plan})
    final, metrics = run_multi_turn_rollout(
        generation, batch, tokenizer, {"alfworld": env}, max_seq_len=200_000, max_rollout_turns=6
    )
    assert final["total_reward"].tolist() == [10.0, 10.0, 0.0, 0.0]
    turns = [sum(m["role"] == "assistant" for m in log) for log in final["message_log"]]
    assert turns == [4, 4, 6, 6]  # won at step 4; step limit 6
    assert metrics["natural_termination_rate"] == 1.0
    log = final["message_log"][0]
    assert log[2]["role"] == "environment" and "You are now at step 2" in log[2]["content"]
    assert "[Observation 1: '-= Welcome to TextWorld, ALFRED! =-" in log[2]["content"]
    _, env_metrics = ray.get(env.global_post_process_and_metrics.remote(final))
    assert env_metrics["alfworld/success_rate"] == 0.5
    assert env_metrics["alfworld/success_rate/look"] == 1.0 and env_metrics["alfworld/success_rate/pick"] == 0.0
    ray.get(env.shutdown.remote())
