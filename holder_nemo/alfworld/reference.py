"""The paper-protocol ALFWorld training step on CPU: episodes -> per-step rows -> advantages -> HölderPO update.

``train_on_episodes`` is one GRPO step of the verl-agent protocol for a Hugging Face policy:

1. ``step_samples.build_step_samples``: one row per environment step, episode-level group-normalised advantage,
   invalid-format penalty on the malformed rows;
2. ``step_samples.tokenize_step_samples``: chat-templated prompt + response tokens, response mask;
3. old log-probs (the policy before the update: one PPO epoch, so ratios start at 1), reference log-probs;
4. p from the schedule (paper ALFWorld: linear_dec 1 -> -1 over 150 steps);
5. ``train_step.policy_update`` on mini-batches of ``mini_batch_rows`` rows.

Production runs do the same through NeMo RL (vLLM rollouts, Megatron/DTensor training); this path exists so the
protocol maths is executable and testable without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from holder_nemo.alfworld.step_samples import Episode, TokenizedBatch, build_step_samples, tokenize_step_samples
from holder_nemo.alfworld.train_step import UpdateConfig, frozen_logprobs, policy_update
from holder_nemo.core import PSchedule

PAPER_SCHEDULE = PSchedule("linear_dec", p_max=1.0, p_min=-1.0, steps=150)


def _rows(batch: TokenizedBatch, index: torch.Tensor) -> TokenizedBatch:
    return TokenizedBatch(
        input_ids=batch.input_ids[index],
        response_mask=batch.response_mask[index],
        advantages=batch.advantages[index],
        prompt_lengths=batch.prompt_lengths[index],
        lengths=batch.lengths[index],
        generation_logprobs=None if batch.generation_logprobs is None else batch.generation_logprobs[index],
    )


def train_on_episodes(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    tokenizer,
    episodes: Sequence[Episode],
    *,
    step: int,
    schedule: PSchedule = PAPER_SCHEDULE,
    invalid_action_penalty: float = 0.1,
    update: UpdateConfig | None = None,
    mini_batch_rows: int = 256,
    max_prompt_tokens: int = 2048,
    max_response_tokens: int = 512,
) -> dict[str, float]:
    """One training step (1-based ``step``, as the schedule counts) on already-collected episodes."""
    if mini_batch_rows < 1:
        raise ValueError(f"mini_batch_rows must be >= 1, got {mini_batch_rows}")
    samples = build_step_samples(episodes, invalid_action_penalty=invalid_action_penalty)
    if not samples:
        raise ValueError("episodes: no steps to train on")
    batch = tokenize_step_samples(
        samples, tokenizer, max_prompt_tokens=max_prompt_tokens, max_response_tokens=max_response_tokens
    )
    old = frozen_logprobs(model, batch)
    ref = frozen_logprobs(ref_model, batch) if ref_model is not None else None
    p = schedule(step)
    metrics: dict[str, float] = {}
    n_updates = 0
    for start in range(0, len(samples), mini_batch_rows):
        index = torch.arange(start, min(start + mini_batch_rows, len(samples)))
        out = policy_update(
            model,
            optimizer,
            _rows(batch, index),
            p=p,
            old_logprobs=old[index],
            ref_logprobs=ref[index] if ref is not None else None,
            config=update,
        )
        for k, v in out.items():
            metrics[k] = metrics.get(k, 0.0) + v
        n_updates += 1
    metrics = {k: v / n_updates for k, v in metrics.items()}
    metrics.update(
        {
            "p": p,
            "rows": float(len(samples)),
            "updates": float(n_updates),
            "success_rate": sum(ep.won for ep in episodes) / len(episodes),
            "advantage_abs_mean": float(batch.advantages.abs().mean()),
        }
    )
    return metrics
