"""Driver-contract tier: every GPU recipe through NeMo RL v0.7.0's real driver code, on CPU.

Our entry point (``holder_nemo.nemo_rl.run_grpo.main``) runs unmodified against NeMo RL's real ``MasterConfig``,
``configure_generation_config``, ``setup_response_data``, ``grpo.setup`` (``RayVirtualCluster`` placement groups,
``Policy.__init__``'s backend / parallelism checks, ``VllmGeneration``'s checks, ``CheckpointManager``, dataloader
restore), ``grpo_train`` (rollout, rewards from our ``holder_math`` Ray actor, advantages, refit, the save / stop /
resume branch), ``Policy.save_checkpoint``'s format rule, ``Policy.train``'s sharding and metric aggregation, and
our stop contract. Faked, because they need GPUs: the policy and vLLM worker *actors* (``fake_actors.py``); the Hub
(``fake_hub.py``, no network). Ray itself is real, on 127.0.0.1 with fake GPU resources.

Each test states the operational overrides it adds (checkpoint / log directories, the data file, one reward worker,
no GPU monitor: ``conftest.run_driver``); what is trained is the recipe's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from holder_nemo.core import PSchedule

pytestmark = [pytest.mark.nemo_rl, pytest.mark.slow]

MATHS_RECIPES = [
    "holderpo_qwen2.5-math-7b.yaml",
    "holderpo_qwen2.5-math-1.5b.yaml",
    "holderpo_deepseek-r1-distill-qwen-7b.yaml",
    "holderpo_qwen3-4b-base.yaml",
    "holderpo_qwen3-8b-base.yaml",
    "holderpo_qwen2.5-32b-4n8g.yaml",
]
EXIT_STOPPED, EXIT_BAD_CONFIG = 75, 2
# Size-only overrides for tests about the stop contract rather than a recipe: 4 prompts x 4 generations per step in
# two optimizer updates of 8, validation on 8 prompts.
SMALL_STEPS = (
    "grpo.num_prompts_per_step=4",
    "grpo.num_generations_per_prompt=4",
    "policy.train_global_batch_size=8",
    "grpo.max_val_samples=8",
    "grpo.val_batch_size=8",
)


def schedule_of(run) -> PSchedule:
    record = json.loads((run.run_dir / "ckpt" / "holderpo_recipe.json").read_text())
    return PSchedule.from_dict(record["loss_fn"]["holder"]["schedule"])


def assert_ok(run, code: int) -> None:
    assert run.code == code, f"exit {run.code} (wanted {code}); {run.trace.get('exception')}\n{run.log[-4000:]}"


def nemo_rl_checkpoint(run, step: int) -> dict:
    """NeMo RL's own record of a complete checkpoint (CheckpointManager renamed tmp_step_N -> step_N)."""
    path = run.run_dir / "ckpt" / f"step_{step}"
    assert (path / "config.yaml").is_file() and (path / "train_dataloader.pt").is_file(), sorted(path.iterdir())
    return json.loads((path / "training_info.json").read_text())


@pytest.mark.parametrize("recipe", MATHS_RECIPES)
def test_recipe_checkpoints_stops_and_resumes_through_nemo_rl(recipe, run_driver, tmp_path):
    # Job 1: a SIGUSR1 (as Slurm sends) during step 2 -> NeMo RL saves step_2 through Policy.save_checkpoint -> 75.
    first = run_driver(tmp_path, recipe, signal_at_step=2)
    assert_ok(first, EXIT_STOPPED)
    assert [t["step"] for t in first.trace["train"]] == [1, 2]
    assert nemo_rl_checkpoint(first, 2)["total_steps"] == 2
    (save,) = first.trace["save_checkpoint"]
    assert save["weights_path"].endswith("tmp_step_2/policy/weights")
    # Job 2 (the requeue): grpo.setup finds step_2, Policy.__init__ gets its weights / optimizer, p continues.
    second = run_driver(tmp_path, recipe, signal_at_step=3)
    assert_ok(second, EXIT_STOPPED)
    (init,) = second.trace["policy_init"]
    assert init["weights_path"].endswith("ckpt/step_2/policy/weights")
    assert init["optimizer_path"] is not None, "the optimizer state was not found on resume"
    assert init["theta"] == first.trace["train"][-1]["theta"]
    assert init["optimizer_steps"] == first.trace["train"][-1]["optimizer_steps"]
    schedule = schedule_of(second)
    assert [(t["step"], t["p"]) for t in second.trace["train"]] == [(3, schedule(3))]
    assert nemo_rl_checkpoint(second, 3)["total_steps"] == 3
    # Refit happened before every generation: vLLM's log-probs equal the trainer's (NeMo RL's own diagnostic).
    mult_error = second.tensorboard("train/token_mult_prob_error")
    assert mult_error and all(v == pytest.approx(1.0, abs=1e-6) for v in mult_error.values()), mult_error
    assert second.tensorboard("holder/p") == {3: pytest.approx(schedule(3))}


def test_alfworld_recipe_checkpoints_and_resumes_through_nemo_rl(alfworld_games, run_driver, tmp_path):
    """The ALFWorld recipe (DTensor v2, per-step layout, our loop instead of grpo_train) through grpo.setup, offline
    games played in the driver, validation at the recipe's temperature, the v2 save (format and
    consolidation passed on), and the resume that NeMo RL's setup performs (it restores train_dataloader.pt too).
    One operational override: episodes of 2 environment steps (the fake vLLM plays invalid actions, so every
    episode would run the recipe's 50)."""
    recipe, games = "holderpo_alfworld_qwen2.5-1.5b.yaml", {"train": alfworld_games / "train",
                                                            "validation": alfworld_games / "valid_seen"}  # fmt: skip
    first = run_driver(tmp_path, recipe, "grpo.max_rollout_turns=2", signal_at_step=1, data=games)
    assert_ok(first, EXIT_STOPPED)
    (save,) = first.trace["save_checkpoint"]
    assert "checkpointing_cfg" in save["kwargs"]  # Policy.save_checkpoint passes the format on for DTensor v2
    assert (tmp_path / "ckpt" / "step_1" / "train_dataloader.pt").is_file()
    temperatures = {(g["temperature"], g["greedy"]) for g in first.trace["generate"]}
    assert temperatures == {(0.4, False), (1.0, False)}  # validation at start (paper 0.4), training rollouts 1.0
    second = run_driver(tmp_path, recipe, "grpo.max_rollout_turns=2", signal_at_step=2, data=games)
    assert_ok(second, EXIT_STOPPED)
    (init,) = second.trace["policy_init"]
    assert init["fqn"].endswith("DTensorPolicyWorkerV2") and init["weights_path"].endswith("ckpt/step_1/policy/weights")
    assert init["theta"] == first.trace["train"][-1]["theta"]
    assert [(t["step"], t["p"]) for t in second.trace["train"]] == [(2, schedule_of(second)(2))]


def test_resume_is_exact_against_an_uninterrupted_run(run_driver, tmp_path):
    """Stop at step 2 + requeue to step 4 == one job to step 4: same weights, losses and logged metrics."""
    recipe = "holderpo_qwen2.5-math-7b.yaml"
    straight = run_driver(tmp_path / "straight", recipe, signal_at_step=4)
    assert_ok(straight, EXIT_STOPPED)
    run_driver(tmp_path / "split", recipe, signal_at_step=2)
    resumed = run_driver(tmp_path / "split", recipe, signal_at_step=4)
    assert_ok(resumed, EXIT_STOPPED)
    assert straight.trace["train"][2:] == resumed.trace["train"]
    for tag in ("train/loss", "train/reward", "holder/p", "train/holder/log_rho", "train/probs_ratio"):
        uninterrupted = straight.tensorboard(tag)
        assert uninterrupted, tag
        assert {k: v for k, v in uninterrupted.items() if k > 2} == resumed.tensorboard(tag), tag


def test_first_periodic_save_of_the_recipe(run_driver, tmp_path):
    """No stop request: the recipe's own checkpointing.save_period (10) writes step_10 through NeMo RL."""
    run = run_driver(tmp_path, "holderpo_qwen2.5-math-1.5b.yaml", signal_at_step=11)
    assert_ok(run, EXIT_STOPPED)
    assert nemo_rl_checkpoint(run, 10)["total_steps"] == 10
    assert nemo_rl_checkpoint(run, 11)["total_steps"] == 11
    assert len(run.trace["save_checkpoint"]) == 2


@pytest.mark.parametrize(
    ("recipe", "overrides", "nemo_rl_error"),
    [
        (  # failure 1 of the production-path issue: every GPU recipe set a save format without DTensor v2.
            # Policy.save_checkpoint raises only when policy.dtensor_cfg._v2 is false, whatever the backend: the
            # base recipe sets _v2 true, with which the Megatron worker takes the format and ignores it.
            "holderpo_qwen2.5-math-7b.yaml",
            ("policy.dtensor_cfg._v2=false", "checkpointing.model_save_format=safetensors"),
            "model_save_format must be None or omitted if using DTensorPolicyWorker (_v2=False)",
        ),
        (  # failure 2: the 32B recipe computed log-probs at another batch size than training with TP 4
            "holderpo_qwen2.5-32b-4n8g.yaml",
            ("policy.logprob_batch_size=2",),
            "known batch-variant accuracy issue with TP>=4",
        ),
    ],
)
def test_nemo_rl_itself_rejects_what_our_preflight_rejects(recipe, overrides, nemo_rl_error, run_driver, tmp_path):
    """Our pre-flight refuses these settings before Ray (exit 2, key named); without it NeMo RL's own code refuses
    them later (the first save, or Policy.__init__): the pre-flight mirrors a real rule, and must keep doing so."""
    ours = run_driver(tmp_path / "ours", recipe, *overrides)
    assert_ok(ours, EXIT_BAD_CONFIG)
    key = overrides[-1].split("=")[0]
    assert key in ours.log and "Setting up compute cluster" not in ours.log
    theirs = run_driver(
        tmp_path / "theirs", recipe, *overrides, signal_at_step=2, env={"HOLDERPO_TEST_SKIP_RECIPE_CHECK": "1"}
    )
    assert theirs.code == 1, theirs.log[-3000:]
    assert nemo_rl_error in theirs.log
    assert not (tmp_path / "theirs" / "ckpt" / "step_2").exists()


# (recipe, overrides, what NeMo RL's own code says) for each start-up assertion preflight.py mirrors that a recipe
# of ours can trip; the pre-flight's refusal of the same overrides is tests/recipes/test_recipe_check.py's BROKEN list.
NEMO_RL_ASSERTIONS = [
    (  # grpo.setup, non-colocated generation on one node
        "holderpo_qwen2.5-math-7b.yaml",
        ["policy.generation.colocated.enabled=false"],
        "policy.generation.colocated.resources.gpus_per_node must be explicitly set to a value > 0",
    ),
    (  # grpo.setup, dynamic sampling
        "holderpo_qwen2.5-math-7b.yaml",
        ["grpo.batch_multiplier=2"],
        "batch_multiplier>1 can only be used if use_dynamic_sampling=True",
    ),
    (  # grpo.setup, vLLM FP8
        "holderpo_qwen2.5-math-7b.yaml",
        ["policy.generation.vllm_cfg.precision=fp8"],
        "Importance sampling must be enabled for vLLM FP8 generation",
    ),
    (  # Policy.__init__
        "holderpo_qwen2.5-math-7b.yaml",
        ["policy.megatron_cfg.pipeline_model_parallel_size=2", "policy.sequence_packing.enabled=false",
         "policy.dynamic_batching.enabled=true", "+policy.dynamic_batching.train_mb_tokens=4096",
         "+policy.dynamic_batching.sequence_length_round=64"],
        "Dynamic batching is only supported for single pipeline parallel stage",
    ),
    (  # VllmGeneration.__init__
        "holderpo_qwen2.5-math-7b.yaml",
        ["policy.generation.vllm_cfg.pipeline_parallel_size=2"],
        "When pipeline_parallel_size > 1, async_engine must be set to True",
    ),
    (  # VllmGeneration.__init__
        "holderpo_qwen2.5-math-7b.yaml",
        ["policy.generation.vllm_cfg.tensor_parallel_size=2", "policy.generation.vllm_cfg.expert_parallel_size=3"],
        "EP must be a multiple of TP",
    ),
    (  # VllmGeneration.__init__
        "holderpo_qwen2.5-math-7b.yaml",
        ["policy.generation.top_k=0"],
        "top_k valid values",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("recipe", "overrides", "nemo_rl_error"), NEMO_RL_ASSERTIONS, ids=lambda v: str(v)[:60])
def test_nemo_rl_itself_asserts_what_the_preflight_mirrors(recipe, overrides, nemo_rl_error, run_driver, tmp_path):
    """Without the pre-flight, NeMo RL's own code (grpo.setup, Policy, VllmGeneration) refuses the recipe after Ray is
    up; with it, the same overrides fail `holderpo recipe check` (and run_grpo, the same rule set) naming the key."""
    from holder_nemo.recipe_check.cli import main as recipe_check

    recipe_path = str(Path(__file__).resolve().parents[2] / "recipes" / recipe)
    assert recipe_check(["check", recipe_path, *overrides, "--no-config", "--nemo-rl", "off"]) == EXIT_BAD_CONFIG
    theirs = run_driver(tmp_path, recipe, *overrides, env={"HOLDERPO_TEST_SKIP_RECIPE_CHECK": "1"})
    assert theirs.code == 1, theirs.log[-3000:]
    assert nemo_rl_error in theirs.log, theirs.log[-3000:]
    assert not list((tmp_path / "ckpt").glob("step_*"))


def test_the_preflight_refuses_async_grpo_before_ray(run_driver, tmp_path):
    """Async GRPO: this entry point runs grpo_train; it said so after Ray started, now before (and recipe check)."""
    run = run_driver(tmp_path, "holderpo_qwen2.5-math-1.5b.yaml", "grpo.async_grpo.enabled=true")
    assert_ok(run, EXIT_BAD_CONFIG)
    assert "grpo.async_grpo.enabled: must be false" in run.log and "Setting up compute cluster" not in run.log
    assert "Traceback" not in run.log


def test_a_loss_section_without_token_level_loss_fails_before_ray(run_driver, tmp_path):
    """NeMo RL's ClippedPGLossConfig defaults token_level_loss to true; the loss grpo_train gets is built from it."""
    run = run_driver(tmp_path, "holderpo_qwen2.5-math-1.5b.yaml", "~loss_fn.token_level_loss")
    assert_ok(run, EXIT_BAD_CONFIG)
    assert "loss_fn.token_level_loss" in run.log
    assert "Setting up compute cluster" not in run.log


def test_resume_refuses_a_changed_recipe_unless_accepted(run_driver, tmp_path):
    recipe = "holderpo_qwen2.5-math-1.5b.yaml"
    assert_ok(run_driver(tmp_path, recipe, signal_at_step=1), EXIT_STOPPED)
    changed = run_driver(tmp_path, recipe, "loss_fn.holder.schedule.p_min=-1.0", "policy.train_micro_batch_size=2")
    assert_ok(changed, EXIT_BAD_CONFIG)
    assert "loss_fn.holder.schedule.p_min: -2.0 (stored) -> -1.0 (now)" in changed.log
    assert "policy.train_micro_batch_size: 1 (stored) -> 2 (now)" in changed.log
    assert "Setting up compute cluster" not in changed.log
    # Operational keys may change freely (a different log directory, checkpoint retention).
    relaxed = run_driver(tmp_path, recipe, "checkpointing.keep_top_k=5", signal_at_step=2)
    assert_ok(relaxed, EXIT_STOPPED)
    accepted = run_driver(tmp_path, recipe, "loss_fn.holder.schedule.p_min=-1.0", "--accept-config-change",
                          signal_at_step=3)  # fmt: skip
    assert_ok(accepted, EXIT_STOPPED)
    assert [(t["step"], t["p"]) for t in accepted.trace["train"]] == [(3, schedule_of(accepted)(3))]
    assert schedule_of(accepted).p_min == -1.0
    (log_line,) = (tmp_path / "ckpt" / "holderpo_config_changes.jsonl").read_text().splitlines()
    expected = {"key": "loss_fn.holder.schedule.p_min", "stored": -2.0, "current": -1.0}
    assert json.loads(log_line)["changes"] == [expected]


def test_completed_run_and_extending_it(run_driver, tmp_path):
    recipe = "holderpo_qwen2.5-math-1.5b.yaml"
    done = run_driver(tmp_path, recipe, "grpo.max_num_steps=2")
    assert_ok(done, 0)
    assert (tmp_path / "ckpt" / "COMPLETED").is_file()
    assert nemo_rl_checkpoint(done, 2)["total_steps"] == 2  # NeMo RL saves the last step
    again = run_driver(tmp_path, recipe, "grpo.max_num_steps=2")
    assert_ok(again, 0)
    assert "already complete" in again.log and "Setting up compute cluster" not in again.log
    # Asking for more steps changes the run (the schedule follows grpo.max_num_steps): refused unless accepted.
    more = run_driver(tmp_path, recipe, "grpo.max_num_steps=3")
    assert_ok(more, EXIT_BAD_CONFIG)
    assert "grpo.max_num_steps: 2 (stored) -> 3 (now)" in more.log
    extended = run_driver(tmp_path, recipe, "grpo.max_num_steps=3", "--accept-config-change")
    assert_ok(extended, 0)
    assert [t["step"] for t in extended.trace["train"]] == [3]


def test_a_stop_during_the_final_step_completes_the_run(run_driver, tmp_path):
    """Issue 21, defect 5: a SIGUSR1 during the last step (2 of 2). NeMo RL saves step_2 (it would anyway) and
    returns; the run is complete: exit 0 with COMPLETED, not 75 and one more attempt (Ray, model load, vLLM) only to
    write it. The progress record the batch shell's watchdog reads is written by the hooks on NeMo RL's grpo_train."""
    progress = tmp_path / "progress.json"
    run = run_driver(tmp_path, "holderpo_qwen2.5-math-1.5b.yaml", "grpo.max_num_steps=2", *SMALL_STEPS,
                     signal_at_step=2, env={"HOLDERPO_PROGRESS_FILE": str(progress)})  # fmt: skip
    assert_ok(run, 0)
    assert "SIGUSR1 received" in run.log and "during the final step: the run is complete" in run.log
    assert (tmp_path / "ckpt" / "COMPLETED").is_file()
    assert nemo_rl_checkpoint(run, 2)["total_steps"] == 2
    assert [t["step"] for t in run.trace["train"]] == [1, 2] and len(run.trace["save_checkpoint"]) == 1
    record = json.loads(progress.read_text())
    # Two steps; validation at the end (val_at_end); the final checkpoint renamed last.
    assert record["counts"] == {"step": 2, "validation": 1, "checkpoint": 1}
    assert record["last"]["kind"] == "checkpoint" and record["last"]["step"] == 2
    assert record["training_started"] >= record["started"] and record["first_step_s"] > 0
    assert record["timeout_s"] >= record["longest_gap_s"] > 0


def test_a_failed_save_leaves_the_previous_checkpoint_to_resume_from(run_driver, tmp_path):
    """A worker that dies while writing step 2 (a genuine crash): exit 1, step_1 stays the newest complete
    checkpoint (the partial save is NeMo RL's ignored tmp_step_2), and the next job resumes from step 1."""
    recipe = "holderpo_qwen2.5-math-1.5b.yaml"
    assert_ok(run_driver(tmp_path, recipe, signal_at_step=1), EXIT_STOPPED)
    crashed = run_driver(tmp_path, recipe, signal_at_step=2, env={"HOLDERPO_TEST_CRASH_AT_SAVE": "1"})
    assert crashed.code == 1, crashed.log[-3000:]
    assert not (tmp_path / "ckpt" / "step_2").exists()
    resumed = run_driver(tmp_path, recipe, signal_at_step=2)
    assert_ok(resumed, EXIT_STOPPED)
    (init,) = resumed.trace["policy_init"]
    assert init["weights_path"].endswith("ckpt/step_1/policy/weights")
    assert [t["step"] for t in resumed.trace["train"]] == [2]
