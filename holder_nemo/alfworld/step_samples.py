"""The per-step training-sample layout of the verl-agent protocol, with the episode's group-normalised advantage.

verl-agent trains on one row per environment step: the row's prompt is that step's protocol prompt (task, current
observation, admissible actions, last N steps) and its response is the model's reply at that step. Every row of an
episode carries the same episode-level GRPO advantage, so HölderPO's Hölder mean runs over the tokens of ONE step's
response (<= 512 tokens), as in the paper (§4.5 / its verl fork).

The advantage is verl-agent's ``compute_grpo_outcome_advantage`` with its defaults
(``compute_mean_std_cross_all_data=True``, ``norm_adv_by_std_in_grpo=True``, epsilon 1e-6):

* each row's score = episode return from the environment (``10 * won``) minus ``invalid_action_penalty`` if THAT
  row's response was malformed (``apply_invalid_action_penalty`` acts on the row's last response token);
* mean and (unbiased) standard deviation are taken over the rows of the group (all steps of the group's episodes,
  so longer episodes weigh more: ``stats_over="steps"``) or over one score per episode (``stats_over="episodes"``,
  verl-agent's ``compute_mean_std_cross_all_data=False``; the episode's first row gives its score there);
* a group with a single entry gets mean 0 and std 1; advantage = (score - mean) / (std + epsilon).

Pure Python + torch; no NeMo RL, no Ray.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class StepRecord:
    """One environment step: the prompt shown, the response text (and its token ids when the generator kept them)."""

    prompt: str
    response: str
    valid: bool
    env_reward: float
    response_token_ids: list[int] | None = None
    response_logprobs: list[float] | None = None  # generator log-probs of response_token_ids (vLLM), if kept


@dataclass
class Episode:
    """One episode of one environment in a group (the group = the ``group_size`` episodes on the same game)."""

    group_id: Hashable
    episode_id: int
    game_file: str
    steps: list[StepRecord] = field(default_factory=list)
    won: bool = False

    @property
    def env_return(self) -> float:
        """Sum of environment rewards (verl-agent ``episode_rewards``; 10 if won else 0)."""
        return float(sum(s.env_reward for s in self.steps))

    @property
    def num_invalid(self) -> int:
        return sum(not s.valid for s in self.steps)


@dataclass(frozen=True)
class StepSample:
    """One training row: prompt + response of one step with its advantage and bookkeeping ids."""

    prompt: str
    response: str
    advantage: float
    score: float
    group_id: Hashable
    episode_id: int
    step_index: int
    response_token_ids: list[int] | None = None
    response_logprobs: list[float] | None = None


def step_scores(episode: Episode, invalid_action_penalty: float) -> list[float]:
    """Per-row scores of an episode: its environment return minus the penalty on malformed rows."""
    base = episode.env_return
    return [base - invalid_action_penalty * float(not s.valid) for s in episode.steps]


def build_step_samples(
    episodes: Sequence[Episode],
    *,
    invalid_action_penalty: float = 0.1,
    stats_over: str = "steps",
    epsilon: float = 1e-6,
) -> list[StepSample]:
    """Flatten episodes into per-step rows with verl-agent's GRPO advantage (see module docstring).

    Rows come out in episode order then step order. Episodes with no steps contribute no rows.
    """
    scores = {id(ep): step_scores(ep, invalid_action_penalty) for ep in episodes}
    pooled: dict[Hashable, list[float]] = defaultdict(list)
    for ep in episodes:
        rows = scores[id(ep)]
        if not rows:
            continue
        pooled[ep.group_id].extend(rows if stats_over == "steps" else rows[:1])
    stats: dict[Hashable, tuple[float, float]] = {}
    for group, values in pooled.items():
        if len(values) == 1:
            stats[group] = (0.0, 1.0)
        else:
            t = torch.tensor(values, dtype=torch.float64)
            stats[group] = (t.mean().item(), t.std(unbiased=True).item())
    samples: list[StepSample] = []
    for ep in episodes:
        mean, std = stats.get(ep.group_id, (0.0, 1.0))
        for k, (step, score) in enumerate(zip(ep.steps, scores[id(ep)], strict=True)):
            adv = (score - mean) / (std + epsilon)
            samples.append(
                StepSample(
                    prompt=step.prompt,
                    response=step.response,
                    advantage=adv,
                    score=score,
                    group_id=ep.group_id,
                    episode_id=ep.episode_id,
                    step_index=k,
                    response_token_ids=step.response_token_ids,
                    response_logprobs=step.response_logprobs,
                )
            )
    return samples


@dataclass
class TokenizedBatch:
    """Right-padded training tensors of step samples.

    input_ids [B, T] int64 (prompt then response, pad after), response_mask [B, T] bool (response tokens only),
    advantages [B] float32, prompt_lengths [B], lengths [B] (prompt + response tokens), generation_logprobs [B, T]
    float32 (the generator's log-prob of token t at column t where the sample kept them, else 0).
    """

    input_ids: torch.Tensor
    response_mask: torch.Tensor
    advantages: torch.Tensor
    prompt_lengths: torch.Tensor
    lengths: torch.Tensor
    generation_logprobs: torch.Tensor


class PromptTooLong(ValueError):
    """A protocol prompt is longer than the prompt budget (verl-agent ``data.truncation='error'`` raises too)."""


def check_prompt_lengths(prompt_token_counts: Sequence[int], max_prompt_tokens: int | None) -> None:
    """Raise :class:`PromptTooLong` if any prompt exceeds ``max_prompt_tokens`` (None: no limit).

    The paper's run (verl-agent, ``data.max_prompt_length=2048``, ``data.truncation='error'``) stops on such a prompt
    rather than cutting it, so neither does this: a cut prompt would differ between generation and training."""
    if max_prompt_tokens is None:
        return
    too_long = [(i, n) for i, n in enumerate(prompt_token_counts) if n > max_prompt_tokens]
    if too_long:
        index, count = too_long[0]
        raise PromptTooLong(
            f"{len(too_long)} prompt(s) longer than data.max_input_seq_length = {max_prompt_tokens} tokens "
            f"(first: prompt {index}, {count} tokens); raise data.max_input_seq_length and "
            "policy.max_total_sequence_length (the paper's run stops here too: verl-agent truncation='error')"
        )


def render_chat_prompt(tokenizer, prompt: str) -> str:
    """The prompt text the policy is conditioned on: one user message through the chat template (verl-agent)."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )


def tokenize_step_samples(
    samples: Sequence[StepSample],
    tokenizer,
    *,
    max_prompt_tokens: int = 2048,
    max_response_tokens: int = 512,
) -> TokenizedBatch:
    """Tokenise rows: chat-templated prompt + response token ids (the generator's ids when kept, else the
    re-tokenised text), truncated to ``max_response_tokens``. A prompt longer than ``max_prompt_tokens`` is an error
    (:class:`PromptTooLong`), as in the paper's run (verl-agent ``data.truncation='error'``)."""

    if not samples:
        raise ValueError("samples: empty")
    if max_prompt_tokens < 1 or max_response_tokens < 1:
        raise ValueError(
            f"max_prompt_tokens/max_response_tokens must be >= 1, got {max_prompt_tokens}/{max_response_tokens}"
        )
    rows: list[tuple[list[int], list[int]]] = []
    gen_lps: list[list[float] | None] = []
    for s in samples:
        prompt_ids = tokenizer(render_chat_prompt(tokenizer, s.prompt), add_special_tokens=False)["input_ids"]
        check_prompt_lengths([len(prompt_ids)], max_prompt_tokens)
        response_ids = (
            list(s.response_token_ids)
            if s.response_token_ids is not None
            else tokenizer(s.response, add_special_tokens=False)["input_ids"]
        )
        rows.append((prompt_ids, response_ids[:max_response_tokens]))
        if s.response_logprobs is not None and len(s.response_logprobs) != len(response_ids):
            raise ValueError(
                f"row {len(rows) - 1}: {len(s.response_logprobs)} response_logprobs for {len(response_ids)} tokens"
            )
        gen_lps.append(None if s.response_logprobs is None else list(s.response_logprobs)[:max_response_tokens])
    width = max(len(p) + len(r) for p, r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    response_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    generation_logprobs = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (p, r) in enumerate(rows):
        input_ids[i, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.int64)
        response_mask[i, len(p) : len(p) + len(r)] = True
        if gen_lps[i] is not None:
            generation_logprobs[i, len(p) : len(p) + len(r)] = torch.tensor(gen_lps[i], dtype=torch.float32)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    if not torch.isfinite(advantages).all():
        raise ValueError(f"advantages: non-finite values {advantages.tolist()}")
    return TokenizedBatch(
        input_ids=input_ids,
        response_mask=response_mask,
        advantages=advantages,
        prompt_lengths=torch.tensor([len(p) for p, _ in rows]),
        lengths=torch.tensor([len(p) + len(r) for p, r in rows]),
        generation_logprobs=generation_logprobs,
    )


def to_nemo_rl_train_data(batch: TokenizedBatch) -> dict:
    """Per-step rows in NeMo RL's GRPO ``train_data`` contract (what ``grpo_train`` hands the policy's ``train``).

    Keys: ``input_ids`` [B, T], ``input_lengths`` [B], ``token_mask`` [B, T] (1.0 on response tokens),
    ``sample_mask`` [B] (1.0), ``advantages`` [B, T] (the row's advantage on every position, as NeMo RL stores
    per-token advantages), ``generation_logprobs`` [B, T] (the generator's log-prob of token t at column t where
    the rollout kept them, 0 elsewhere). Add ``prev_logprobs`` / ``reference_policy_logprobs`` the way
    ``grpo_train`` does.
    """
    shape = batch.input_ids.shape
    return {
        "input_ids": batch.input_ids,
        "input_lengths": batch.lengths.clone(),
        "token_mask": batch.response_mask.to(torch.float32),
        "sample_mask": torch.ones(shape[0], dtype=torch.float32),
        "advantages": batch.advantages[:, None].expand(shape).contiguous(),
        "generation_logprobs": batch.generation_logprobs,
    }


def success_rate(episodes: Sequence[Episode]) -> float:
    """Fraction of episodes won (nan for none)."""
    return sum(ep.won for ep in episodes) / len(episodes) if episodes else math.nan
