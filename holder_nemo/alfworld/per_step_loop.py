"""NeMo RL training loop for ALFWorld with the paper's per-step sample layout (``alfworld.sample_layout: per_step``).

``grpo_train`` (NeMo RL v0.7.0) trains one row per episode; the paper trains one row per environment step
(``docs/alfworld.md``, "Sample layout"). This loop replaces ``grpo_train`` for that layout (the ALFWorld component,
``nemo_rl_component.py``, hands it to ``run_grpo``) and takes the objects ``nemo_rl.algorithms.grpo.setup`` returns.
Per training step k (= completed steps + 1):

1. refit the generation weights from the policy when they are stale (NeMo RL's ``refit_policy_generation``, passed
   in as ``refit``), else ``policy_generation.prepare_for_generation()``;
2. ``grpo.num_prompts_per_step`` games drawn with ``rollout.sample_games(train_games, n, seed=grpo.seed + k)``
   (a pure function of the step, so a resumed run plays the games the uninterrupted run would), each played by
   ``grpo.num_generations_per_prompt`` environments in lock-step through ``rollout.nemo_rl_policy``;
3. per-step rows with verl-agent's GRPO advantage (``step_samples.build_step_samples`` -> ``tokenize_step_samples``
   -> ``to_nemo_rl_train_data``), padded with masked rows (``sample_mask`` 0) to a multiple of
   ``policy.train_global_batch_size`` because NeMo RL's ``policy.train`` shards whole global batches;
4. ``prev_logprobs`` / ``reference_policy_logprobs`` from the policy, as ``grpo_train`` computes them;
5. ``policy.train(train_data, loss_fn)``, the loss being HölderPO minus ``alfworld.entropy_coeff`` x the estimated
   token-mean entropy (``entropy.EntropyBonusLoss``); the step hook (``holder_nemo.nemo_rl.steps``) sets p(k);
6. validation every ``grpo.val_period`` steps (``validation.py``);
7. a checkpoint through NeMo RL's ``CheckpointManager`` every ``checkpointing.save_period`` steps, at the last step,
   and at a stop request (``holder_nemo.nemo_rl.stop.StopRequest``), after which the loop returns the reason.

Resume: ``grpo_save_state["total_steps"]`` restored by ``setup`` is the number of completed steps; the loop continues
at the next step with p(total_steps + 1), exactly as the uninterrupted run. Not honoured here (see docs): NeMo RL's
``checkpoint_must_save_by`` (use ``HOLDERPO_SLURM_SAVE_MARGIN_S``), the dataloader ``setup`` builds (games come
from ``sample_games``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from holder_nemo.alfworld.per_step_settings import PerStepSettings, section
from holder_nemo.alfworld.rollout import nemo_rl_policy, run_episodes, sample_games
from holder_nemo.alfworld.step_samples import (
    TokenizedBatch,
    build_step_samples,
    success_rate,
    to_nemo_rl_train_data,
    tokenize_step_samples,
)
from holder_nemo.alfworld.validation import Validator


def pad_rows(train_data: dict[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
    """Append copies of row 0 with ``sample_mask`` and ``token_mask`` zeroed until the row count is a multiple of
    ``multiple``: NeMo RL divides the data into whole global batches, and masked rows add nothing to the loss
    (``HolderPOLossFn`` normalises by the global count of valid rows)."""
    rows = int(train_data["input_ids"].shape[0])
    extra = -rows % multiple
    if extra == 0:
        return train_data
    out = {}
    for key, value in train_data.items():
        filler = value[:1].expand(extra, *value.shape[1:])
        if key in ("sample_mask", "token_mask"):
            filler = torch.zeros_like(filler)
        out[key] = torch.cat([value, filler], dim=0)
    return out


def pad_columns(train_data: dict[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
    """Pad every [B, T] tensor with zeros to a width that is a multiple of ``multiple`` (NeMo RL's
    ``make_sequence_length_divisible_by``, as ``batched_message_log_to_flat_message`` pads for ``grpo_train``);
    ``input_lengths`` is unchanged, so the padding is never attended to or trained on."""
    width = int(train_data["input_ids"].shape[1])
    extra = -width % multiple
    if extra == 0:
        return train_data
    return {
        k: torch.nn.functional.pad(v, (0, extra)) if v.dim() == 2 and v.shape[1] == width else v
        for k, v in train_data.items()
    }


def _batched(data: dict) -> Any:
    try:  # NeMo RL's container where available (policy.train / get_logprobs shard it); else the plain mapping
        from nemo_rl.distributed.batched_data_dict import BatchedDataDict
    except ImportError:
        return data
    return BatchedDataDict(data)


def save_checkpoint(
    policy, checkpointer, grpo_save_state: dict, master_config: Any, step: int, dataloader: Any = None
) -> str:
    """``grpo_train``'s checkpoint block: tmp dir with ``training_info.json``, policy weights / optimizer /
    tokenizer, ``train_dataloader.pt`` (``setup``'s dataloader: NeMo RL's ``setup`` restores it on resume and fails
    without the file, although this loop draws its games itself), then the atomic rename by ``finalize_checkpoint``."""
    policy.prepare_for_training()
    run_config = master_config if hasattr(master_config, "model_dump") else None  # run_config.yaml needs pydantic
    path = checkpointer.init_tmp_checkpoint(step, grpo_save_state, run_config)
    policy.save_checkpoint(
        weights_path=os.path.join(path, "policy", "weights"),
        optimizer_path=os.path.join(path, "policy", "optimizer") if checkpointer.save_optimizer else None,
        tokenizer_path=os.path.join(path, "policy", "tokenizer"),
        checkpointing_cfg=dict(section(master_config, "checkpointing")),
    )
    if dataloader is not None:
        torch.save(dataloader.state_dict(), os.path.join(path, "train_dataloader.pt"))
    checkpointer.finalize_checkpoint(path)
    return str(path)


class PerStepLoop:
    """One run of the loop (``alfworld_per_step_train`` documents the arguments)."""

    def __init__(self, policy, generation, tokenizer, loss_fn, logger, checkpointer, state, config, **kw) -> None:
        from holder_nemo.alfworld.entropy import EntropyBonusLoss
        from holder_nemo.nemo_rl.steps import StepScheduledTrain, install_step_schedule

        self.settings = PerStepSettings.from_config(config)
        self.policy, self.generation, self.tokenizer, self.logger = policy, generation, tokenizer, logger
        self.checkpointer, self.state, self.config = checkpointer, state, config
        self.loss_fn = (
            EntropyBonusLoss(loss_fn, self.settings.entropy_coeff) if self.settings.entropy_coeff else loss_fn
        )
        self.refit, self.stop, self.dataloader = kw["refit"], kw.get("stop"), kw.get("dataloader")
        self.progress = kw.get("progress")
        self.train_games = list(kw["train_games"])
        if not self.train_games:
            raise ValueError("train_games: empty")
        self.validator = Validator(self.settings, generation, tokenizer, list(kw.get("val_games") or ()), logger,
                                   kw.get("set_temperature"))  # fmt: skip
        schedule = policy.train if isinstance(policy.train, StepScheduledTrain) else None
        schedule = schedule or install_step_schedule(policy, loss_fn, state, logger)
        self.total_steps = int(state.get("total_steps", 0))
        if schedule.completed_steps != self.total_steps:
            raise RuntimeError(
                f"step hook at {schedule.completed_steps} completed steps, save state at {self.total_steps}"
            )
        self.generation_stale = True
        self.iteration_times: list[float] = []

    def generate_mode(self) -> None:
        """Weights into the generation engine when stale (refit), else wake it as ``grpo_train`` does."""
        if self.generation_stale:
            self.refit(self.policy, self.generation)
            self.generation_stale = False
            return
        if self.settings.colocated:
            self.policy.offload_after_refit()  # as grpo_train: free the optimizer's memory for generation
        self.generation.prepare_for_generation()

    def validate(self, step: int) -> None:
        self.generate_mode()
        self.validator.run(step, self.state)
        if self.progress is not None:
            self.progress.completed("validation", step)

    def rows(self, step: int) -> tuple[list, TokenizedBatch, dict]:
        """Play the step's games; (episodes, tokenized per-step rows, NeMo RL train data with log-probs)."""
        s = self.settings
        self.generate_mode()
        games = sample_games(self.train_games, s.num_games, seed=s.seed + step)
        player = nemo_rl_policy(self.generation, self.tokenizer, max_prompt_tokens=s.max_prompt_tokens)
        episodes = run_episodes(player, games, group_size=s.group_size, config=s.protocol)
        self.generation.finish_generation()
        samples = build_step_samples(
            episodes, invalid_action_penalty=s.protocol.invalid_action_penalty, stats_over=s.stats_over
        )
        batch = tokenize_step_samples(
            samples, self.tokenizer, max_prompt_tokens=s.max_prompt_tokens, max_response_tokens=s.max_response_tokens
        )
        data = pad_rows(to_nemo_rl_train_data(batch), s.train_global_batch_size)
        data = _batched(pad_columns(data, s.sequence_multiple))
        logprob_data = _batched({k: data[k] for k in ("input_ids", "input_lengths", "token_mask", "sample_mask")})
        self.policy.prepare_for_lp_inference()
        data["prev_logprobs"] = self.policy.get_logprobs(logprob_data)["logprobs"]
        if s.skip_reference_logprobs:
            data["reference_policy_logprobs"] = torch.zeros_like(data["prev_logprobs"])
        else:
            reference = self.policy.get_reference_policy_logprobs(logprob_data)
            data["reference_policy_logprobs"] = reference["reference_logprobs"]
        return episodes, batch, data

    def step(self, step: int) -> str | None:
        """One training step (module docstring); returns the stop reason, if a stop was requested."""
        s, started = self.settings, time.monotonic()
        episodes, batch, data = self.rows(step)
        self.policy.prepare_for_training()
        self.generation_stale = True
        results = self.policy.train(data, self.loss_fn)  # the step hook sets p(step) on loss_fn first
        self.total_steps = step
        is_last = step >= s.max_num_steps
        if (s.val_period > 0 and step % s.val_period == 0) or (s.val_at_end and is_last):
            self.validate(step)
        self.iteration_times.append(time.monotonic() - started)
        state = self.state
        state["total_steps"] = state["current_step"] = step
        state["consumed_samples"] = int(state.get("consumed_samples", 0)) + s.num_games
        valid_tokens = int(batch.response_mask.sum())
        state["total_valid_tokens"] = int(state.get("total_valid_tokens", 0)) + valid_tokens
        why = self.stop.reason(statistics.fmean(self.iteration_times)) if self.stop is not None else None
        if why is not None:
            self.stop.fired = why
        periodic = s.save_period > 0 and step % s.save_period == 0
        if s.checkpointing_enabled and (is_last or why is not None or periodic):
            save_checkpoint(self.policy, self.checkpointer, state, self.config, step, self.dataloader)
        self.log(step, episodes, batch, data, results)
        return why

    def log(self, step: int, episodes: list, batch: TokenizedBatch, data: dict, results: dict) -> None:
        s, rows = self.settings, len(batch.advantages)
        metrics = {
            "loss": float(results.get("loss", float("nan"))),
            "grad_norm": float(results.get("grad_norm", float("nan"))),
            "p": float(self.loss_fn.p),
            "success_rate": success_rate(episodes),
            "episode_steps_mean": statistics.fmean(len(ep.steps) for ep in episodes),
            "invalid_action_frac": sum(ep.num_invalid for ep in episodes) / rows,
            "rows": rows,
            "padded_rows": int(data["input_ids"].shape[0]) - rows,
            "advantage_abs_mean": float(batch.advantages.abs().mean()),
            "updates": int(data["input_ids"].shape[0]) // s.train_global_batch_size,
            "response_tokens": int(batch.response_mask.sum()),
            "step_time_s": self.iteration_times[-1],
        }
        self.logger.log_metrics(metrics, step, prefix="train")
        print(
            f"holder_nemo alfworld step {step}/{s.max_num_steps}: p={metrics['p']:.4f} "
            f"success={metrics['success_rate']:.3f} rows={rows} loss={metrics['loss']:.4g}",
            flush=True,
        )

    def run(self) -> str | None:
        if self.settings.val_at_start and self.total_steps == 0:
            self.validate(0)
        while self.total_steps < self.settings.max_num_steps:
            why = self.step(self.total_steps + 1)
            if why is not None:
                print(f"holder_nemo: stopping after step {self.total_steps} ({why})", flush=True)
                return why
        return None


def alfworld_per_step_train(
    policy,
    policy_generation,
    tokenizer,
    loss_fn,
    logger,
    checkpointer,
    grpo_save_state: dict,
    master_config: Any,
    *,
    train_games: Sequence[str],
    val_games: Sequence[str] = (),
    refit: Callable[[Any, Any], None],
    stop=None,
    set_temperature: Callable[[float], float] | None = None,
    dataloader: Any = None,
    progress: Any = None,
) -> str | None:
    """Train until ``grpo.max_num_steps`` or a stop request (module docstring); returns the stop reason or None.

    Args:
        policy: NeMo RL ``ColocatablePolicyInterface`` (``get_logprobs``, ``get_reference_policy_logprobs``,
            ``train``, ``prepare_for_*``, ``save_checkpoint``); its ``train`` is wrapped by the step hook here
            unless already wrapped (``install_step_schedule``).
        policy_generation: NeMo RL ``GenerationInterface`` (vLLM): ``generate``, ``prepare_for_generation``,
            ``finish_generation``.
        loss_fn: ``HolderPOLossFn`` (anything with ``set_step`` / ``p``).
        logger: NeMo RL ``Logger`` (``log_metrics(metrics, step, prefix=...)``).
        checkpointer: NeMo RL ``CheckpointManager``.
        grpo_save_state: ``setup``'s restored ``GRPOSaveState`` (updated in place).
        refit: ``refit(policy, policy_generation)`` pushes the policy weights into the generation engine
            (``nemo_rl.algorithms.grpo.refit_policy_generation`` with the run's colocation settings).
        stop: ``holder_nemo.nemo_rl.stop.StopRequest`` checked at every step boundary (``stop.fired`` is set).
        set_temperature: ``set(t) -> previous`` for the generation's sampling temperature, used around validation
            when ``alfworld.val_temperature`` differs from ``policy.generation.temperature``; default: NeMo RL's
            vLLM workers (``generation_settings.vllm_temperature_setter``).
        dataloader: ``setup``'s train dataloader, saved with every checkpoint because ``setup`` restores it when a
            run resumes (the run entry point passes it).
        progress: ``holder_nemo.nemo_rl.progress.ProgressRecorder``; each validation is recorded there (steps and
            checkpoints are recorded by the entry point's own hooks).
    """
    loop = PerStepLoop(
        policy, policy_generation, tokenizer, loss_fn, logger, checkpointer, grpo_save_state, master_config,
        train_games=train_games, val_games=val_games, refit=refit, stop=stop, set_temperature=set_temperature,
        dataloader=dataloader, progress=progress,
    )  # fmt: skip
    return loop.run()
