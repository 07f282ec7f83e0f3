"""Run by test_plugin_nemo_rl_real.py (needs nemo_rl): NeMo RL's real ``grpo_train`` loop, on CPU, with our step
hook, our loss object and the stop contract, across a stop request and a restart.

Stand-ins (as in NeMo RL's own CPU tests of ``grpo_train``, tests/unit/algorithms/test_grpo.py): the policy, the
generation backend, the environment, the logger, the checkpointer and the memory tracker (which queries Ray) are
``MagicMock``s and the rollout is patched, because the real ones need GPUs, vLLM and Ray. The policy's ``train``
ships the loss object through cloudpickle, as Ray does, and records the p the "worker" sees. Prints one JSON line.

Then a fresh run stopped during its final step, which must complete (exit 0, ``COMPLETED``), not exit 75.

Usage: python grpo_train_driver.py STOP_FILE
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from unittest.mock import MagicMock, patch

import typing_extensions

if sys.version_info < (3, 12):  # NeMo RL's config TypedDicts need this form under pydantic on Python < 3.12
    typing.TypedDict = typing_extensions.TypedDict

import torch
from nemo_rl.algorithms import grpo
from nemo_rl.algorithms.loss import ClippedPGLossConfig
from nemo_rl.distributed.batched_data_dict import BatchedDataDict
from nemo_rl.models.generation.megatron import MegatronGeneration
from ray import cloudpickle

from holder_nemo.nemo_rl import HolderPOLossFn, install_step_schedule
from holder_nemo.run_control import StopRequest, exit_code_after_training, final_step, patched_timeout_checker

MAX_STEPS = 6


def batch() -> BatchedDataDict:
    return BatchedDataDict(
        {
            "message_log": [[{"role": "user", "content": "1+1?", "token_ids": torch.tensor([1, 2, 3])}]],
            "task_name": ["math"],
            "extra_env_info": [{}],
            "loss_multiplier": torch.tensor([1.0]),
            "idx": torch.tensor([0]),
            "length": torch.tensor([3]),
            "total_reward": torch.tensor([1.0]),
        }
    )


def master_config(checkpoint_dir: str):
    return grpo.MasterConfig.model_construct(
        grpo={
            "max_num_steps": MAX_STEPS,
            "max_num_epochs": 1,
            "num_prompts_per_step": 1,
            "num_generations_per_prompt": 1,
            "max_rollout_turns": 1,
            "val_period": 0,
            "val_batch_size": 1,
            "val_at_start": False,
            "val_at_end": False,
            "max_val_samples": 1,
            "seed": 1,
            "use_leave_one_out_baseline": False,
            "normalize_rewards": False,
            "overlong_filtering": False,
            "advantage_clip_low": None,
            "advantage_clip_high": None,
            "reward_scaling": {"enabled": False},
            "reward_shaping": {"enabled": False},
            "use_dynamic_sampling": False,
            "async_grpo": {"enabled": False, "max_trajectory_age_steps": 1},
            "seq_logprob_error_threshold": None,
            "adv_estimator": {"name": "grpo", "use_leave_one_out_baseline": False, "normalize_rewards": False},
        },
        policy={
            "train_global_batch_size": 1,
            "train_micro_batch_size": 1,
            "max_total_sequence_length": 64,
            "make_sequence_length_divisible_by": 1,
            "generation": {
                "temperature": 1.0,
                "top_p": 1.0,
                "top_k": None,
                "backend": "vllm",
                "colocated": {"enabled": True},
                "vllm_cfg": {"async_engine": False},
            },
        },
        loss_fn=ClippedPGLossConfig(token_level_loss=False, holder={"schedule": {"steps": 4}}),
        checkpointing={
            "enabled": True,
            "checkpoint_dir": checkpoint_dir,
            "checkpoint_must_save_by": None,
            "save_period": 100,
            "metric_name": None,
        },
        cluster={"num_nodes": 1, "gpus_per_node": 1},
        logger={"num_val_samples_to_print": 0},
        data={"use_multiple_dataloader": False},
        env={},
    )


def one_job(stop_file: Path, save_state: dict, stop_after_step: int | None) -> dict:
    """One Slurm job: fresh objects, resume from ``save_state``, run grpo_train under our hooks."""
    cfg = master_config(str(stop_file.parent / "ckpt"))
    seen: list[tuple[int, float]] = []

    def worker_train(data, loss_fn, eval_mode=False, gbs=None, mbs=None, timer=None):
        on_worker = cloudpickle.loads(cloudpickle.dumps(loss_fn))
        seen.append((on_worker.step, on_worker.p))
        if stop_after_step is not None and on_worker.step == stop_after_step:
            stop_file.touch()  # someone asks for a stop while this step runs
        return {
            "loss": torch.tensor(0.5),
            "grad_norm": torch.tensor(1.0),
            "all_mb_metrics": {"loss": [0.5], "global_valid_toks": [10], "token_mult_prob_error": [1.0],
                               "gen_kl_error": [0.0]},
        }  # fmt: skip

    policy = MagicMock()
    policy.train = worker_train
    loader = MagicMock()
    loader.__iter__ = lambda self: iter([batch()] * MAX_STEPS)
    loader.__len__ = MagicMock(return_value=MAX_STEPS)
    generation = MagicMock(spec=MegatronGeneration)
    generation.requires_kv_scale_sync = False
    generation.get_logger_metrics.return_value = {}
    env = MagicMock()
    env.global_post_process_and_metrics.return_value = (batch(), {})
    logger, checkpointer = MagicMock(), MagicMock()
    checkpointer.init_tmp_checkpoint.return_value = str(stop_file.parent / "tmp_step")
    tokenizer = MagicMock()
    tokenizer.pad_token_id = 0

    loss_fn = HolderPOLossFn(cfg.loss_fn)
    schedule = install_step_schedule(policy, loss_fn, save_state, logger)
    stop = StopRequest(stop_file=stop_file)
    rollout = (batch(), {"mean_gen_tokens_per_sample": 2.0, "max_gen_tokens": 2, "min_gen_tokens": 2})
    seq_err = dict.fromkeys(
        ["max_seq_mult_prob_error", "mean_seq_mult_prob_error", "min_seq_mult_prob_error",
         "max_seq_mult_prob_error_after_mask", "mean_seq_mult_prob_error_after_mask",
         "min_seq_mult_prob_error_after_mask", "num_masked_seqs", "masked_correct_pct"], 0.0,
    )  # fmt: skip
    with (
        patch("nemo_rl.algorithms.grpo.run_multi_turn_rollout", return_value=rollout),
        patch("nemo_rl.algorithms.grpo.compute_and_apply_seq_logprob_error_masking", return_value=seq_err),
        patch("torch.save"),  # the dataloader state is a MagicMock here
        patch("nemo_rl.algorithms.grpo.MemoryTracker"),  # it queries a running Ray cluster
        patched_timeout_checker(grpo, stop),
    ):
        grpo.grpo_train(
            policy, generation, loader, None, tokenizer, loss_fn, {"math": env}, {"math": env},
            logger, checkpointer, save_state, cfg,
        )  # fmt: skip
    saves = [call.args[0] for call in checkpointer.init_tmp_checkpoint.call_args_list]
    holder_p_logged = [
        (call.args[1], call.args[0]["p"])
        for call in logger.log_metrics.call_args_list
        if call.kwargs.get("prefix") == "holder"
    ]
    finished = schedule.completed_steps >= final_step(cfg, loader, own_loop=False)  # as run_grpo.main
    code = exit_code_after_training(stop.fired, cfg.checkpointing, finished=finished)
    return {"seen": seen, "saves": saves, "fired": stop.fired, "exit": code, "logged": holder_p_logged,
            "state": dict(save_state)}  # fmt: skip


def main() -> None:
    stop_file = Path(sys.argv[1])
    first = one_job(stop_file, grpo._default_grpo_save_state(), stop_after_step=3)
    stop_file.unlink()
    # the requeued job resumes from what the checkpoint recorded (grpo_train filled save_state before saving)
    second = one_job(stop_file, dict(first["state"]), stop_after_step=None)
    completed = (stop_file.parent / "ckpt" / "COMPLETED").exists()
    # Another run, stopped during its final step: grpo_train saves that step (it would anyway) and returns.
    (stop_file.parent / "ckpt" / "COMPLETED").unlink()
    final = one_job(stop_file, grpo._default_grpo_save_state(), stop_after_step=MAX_STEPS)
    final["completed"] = (stop_file.parent / "ckpt" / "COMPLETED").exists()
    print(json.dumps({"first": first, "second": second, "completed": completed, "stopped_at_final_step": final}))


if __name__ == "__main__":
    main()
