"""Lock-step multi-environment rollout under the verl-agent protocol, for any text policy.

``run_episodes`` plays ``group_size`` episodes on each of several game files (verl-agent: 16 games x 8 = 128
environments per training step; same game within a group), batching every step's prompts into one policy call, and
returns :class:`~holder_nemo.alfworld.step_samples.Episode` records that ``step_samples.build_step_samples`` turns
into training rows. A policy is ``Callable[[list[str]], list[str | Generation]]`` mapping protocol prompts to responses.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from holder_nemo.alfworld.env import AlfworldEpisode
from holder_nemo.alfworld.protocol import ProtocolConfig
from holder_nemo.alfworld.step_samples import Episode, StepRecord, check_prompt_lengths


@dataclass(frozen=True)
class Generation:
    """A response with (optionally) the exact token ids the generator produced, to train on those ids."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # generator log-probs of token_ids (NeMo RL / vLLM), if available


Policy = Callable[[list[str]], Sequence["str | Generation"]]


def sample_games(game_files: Sequence[str | Path], num_games: int, seed: int) -> list[str]:
    """``num_games`` distinct games for one step (with replacement only when there are fewer games than asked)."""
    rng = random.Random(seed)
    files = [str(f) for f in game_files]
    if num_games <= len(files):
        return rng.sample(files, num_games)
    return [rng.choice(files) for _ in range(num_games)]


def validation_games(game_files: Sequence[str | Path], num_episodes: int, seed: int, round_index: int = 0) -> list[str]:
    """The games of ``num_episodes`` validation episodes, drawn the way verl-agent's validation environments draw them.

    verl-agent builds ``val_data_size`` (128) environments, environment i seeded ``env.seed + 1000 + i``; each one's
    TextWorld gym env shuffles the split's games with ``numpy.random.RandomState(its seed)`` and plays them in that
    order, one per validation, reshuffling with the same generator after each full pass (``shuffled_cycle``). So
    episode i of validation round r plays element r of environment i's cycle: draws are independent across
    episodes (a game can appear twice in one validation, another not at all) and differ from round to round.
    ``seed`` is environment 0's seed (verl-agent: ``env.seed`` 0 + 1000); the games are sorted first (TextWorld
    keeps the directory-walk order, which depends on the file system).
    """
    import numpy as np

    if round_index < 0:
        raise ValueError(f"round_index must be >= 0, got {round_index}")
    files = sorted(str(f) for f in game_files)
    passes, position = divmod(round_index, len(files))
    games = []
    for episode in range(num_episodes):
        rng = np.random.RandomState(seed + episode)
        order = list(files)
        rng.shuffle(order)
        for _ in range(passes):
            rng.shuffle(order)
        games.append(order[position])
    return games


def run_episodes(
    policy: Policy,
    game_files: Sequence[str | Path],
    *,
    group_size: int = 8,
    config: ProtocolConfig | None = None,
) -> list[Episode]:
    """Play ``group_size`` episodes per game in lock-step until every one is done (won or ``max_steps``).

    Episode ``group_id`` is the index of its game in ``game_files``; ``episode_id`` is its position in the output.
    """
    config = config or ProtocolConfig()
    envs: list[AlfworldEpisode] = []
    episodes: list[Episode] = []
    prompts: list[str] = []
    try:
        for g, game in enumerate(game_files):
            for _ in range(group_size):
                env = AlfworldEpisode(config)
                prompts.append(env.reset(game))
                envs.append(env)
                episodes.append(Episode(group_id=g, episode_id=len(episodes), game_file=str(game)))
        active = list(range(len(envs)))
        while active:
            outputs = list(policy([prompts[i] for i in active]))
            if len(outputs) != len(active):
                raise ValueError(f"policy returned {len(outputs)} responses for {len(active)} prompts")
            still_active = []
            for i, out in zip(active, outputs, strict=True):
                gen = out if isinstance(out, Generation) else Generation(text=str(out))
                result = envs[i].step(gen.text)
                episodes[i].steps.append(
                    StepRecord(
                        prompt=prompts[i],
                        response=gen.text,
                        valid=result.valid,
                        env_reward=result.env_reward,
                        response_token_ids=gen.token_ids,
                        response_logprobs=gen.logprobs,
                    )
                )
                episodes[i].won = result.won
                prompts[i] = result.prompt
                if not result.done:
                    still_active.append(i)
            active = still_active
    finally:
        for env in envs:
            env.close()
    return episodes


def hf_sampling_config(
    model, tokenizer, *, max_new_tokens: int, temperature: float, top_p: float = 1.0, greedy: bool = False
):
    """``eval.backends.full_distribution_config`` for one policy, validated: sampling as verl-agent's vLLM rollouts
    (no flag from the checkpoint's ``generation_config.json``); stops at the tokenizer's EOS and the checkpoint's."""
    from holder_nemo.eval.backends import full_distribution_config, stop_token_ids

    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return full_distribution_config(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        greedy=greedy,
        eos_token_id=stop_token_ids(tokenizer, getattr(model, "generation_config", None)),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )


def hf_policy(
    model,
    tokenizer,
    *,
    max_new_tokens: int = 512,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    max_prompt_tokens: int | None = None,
) -> Policy:
    """A policy backed by a Hugging Face causal LM: chat template, left-padded batch ``generate`` on the model's
    device, every sampling setting explicit (``hf_sampling_config``), token ids kept (cut after the first stop
    token, which is kept: the policy learns to stop). Prompts over ``max_prompt_tokens`` raise ``PromptTooLong``.

    For CPU smoke runs and ``holderpo eval-alfworld``; training rollouts use NeMo RL's vLLM generation.
    """
    import torch

    from holder_nemo.alfworld.step_samples import render_chat_prompt

    config = hf_sampling_config(
        model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, greedy=greedy
    )
    stops = set(config.eos_token_id)

    def generate(prompts: list[str]) -> list[Generation]:
        texts = [render_chat_prompt(tokenizer, p) for p in prompts]
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tokenizer.padding_side = side
        check_prompt_lengths(enc["attention_mask"].sum(-1).tolist(), max_prompt_tokens)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        with torch.no_grad():
            out = model.generate(**enc, generation_config=config)
        new = out[:, enc["input_ids"].shape[1] :]
        gens = []
        for row in new.tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), None)
            if cut is not None:
                row = row[: cut + 1]
            gens.append(Generation(text=tokenizer.decode(row, skip_special_tokens=True), token_ids=row))
        return gens

    return generate


def nemo_rl_policy(
    policy_generation, tokenizer, *, greedy: bool = False, max_prompt_tokens: int | None = None
) -> Policy:
    """A policy backed by NeMo RL's ``GenerationInterface`` (vLLM in production): per call, the chat-templated
    prompts go to ``policy_generation.generate`` as right-padded ``input_ids`` + ``input_lengths`` (the layout
    NeMo RL's rollouts use); each reply keeps its token ids and the generator's log-probs, so per-step rows train on
    exactly the sampled tokens and ``generation_logprobs`` is filled. Stop strings: none (EOS ends a reply, as in
    verl-agent). Prompts over ``max_prompt_tokens`` raise ``PromptTooLong`` before anything is generated."""
    import torch

    from holder_nemo.alfworld.step_samples import render_chat_prompt

    try:  # NeMo RL's own container type where available; the contract is the mapping of these keys
        from nemo_rl.distributed.batched_data_dict import BatchedDataDict as _Batch
    except ImportError:  # pragma: no cover - exercised without NeMo RL in the tests
        _Batch = dict

    def generate(prompts: list[str]) -> list[Generation]:
        ids = [tokenizer(render_chat_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
        check_prompt_lengths([len(x) for x in ids], max_prompt_tokens)
        lengths = torch.tensor([len(x) for x in ids])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(ids), int(lengths.max())), pad, dtype=torch.int64)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.int64)
        data = _Batch({"input_ids": input_ids, "input_lengths": lengths, "stop_strings": [None] * len(ids)})
        out = policy_generation.generate(data, greedy=greedy)
        gens = []
        for i in range(len(ids)):
            start, end = int(lengths[i]), int(out["unpadded_sequence_lengths"][i])
            token_ids = out["output_ids"][i, start:end].tolist()
            logprobs = out["logprobs"][i, start:end].tolist() if "logprobs" in out else None
            text = tokenizer.decode(token_ids, skip_special_tokens=True)
            gens.append(Generation(text=text, token_ids=token_ids, logprobs=logprobs))
        return gens

    return generate
