"""Rollouts in NeMo RL's data layout: sample G responses per prompt, score them, group-normalise the advantages.

Layout (NeMo RL ``BatchedDataDict`` keys, as plain tensors; B = prompts x G rows, S = longest prompt + response):
    input_ids                  [B, S]  prompt tokens then response tokens, right-padded with pad_token_id
    input_lengths              [B]     prompt + response length of each row
    token_mask                 [B, S]  1 on response tokens (including the <eos> the model emitted), 0 elsewhere
    sample_mask                [B]     1 for rows that take part in the loss
    advantages                 [B, S]  the row's group-normalised advantage, repeated on every position
    generation_logprobs        [B, S]  log-prob of token t under the sampler (position 0 unused, 0)
    prev_logprobs              [B, S]  same under the policy before the update (recomputed, not the sampler's)
    reference_policy_logprobs  [B, S]  same under the reference policy
so ``next_token_logprobs[:, t]`` (shape [B, S-1]) pairs with ``prev_logprobs[:, t + 1]``, as in NeMo RL's losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from holder_nemo.reference.tasks import Example


@torch.no_grad()
def sample_groups(
    model: torch.nn.Module,
    tokenizer,
    examples: list[Example],
    group_size: int,
    *,
    temperature: float,
    max_new_tokens: int,
) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """Sample ``group_size`` responses per prompt with plain temperature sampling (top-k/top-p off).

    Returns (prompt_ids [B, P] left-padded, response_ids [B, N] padded after <eos>, response_logprobs [B, N]
    under the sampler, prompt_lengths) with B = len(examples) * group_size, rows grouped by prompt.
    """
    prompts = [ex.prompt for ex in examples for _ in range(group_size)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    out = model.generate(
        **enc,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        return_dict_in_generate=True,
        output_scores=True,
    )
    prompt_len = enc["input_ids"].shape[1]
    response_ids = out.sequences[:, prompt_len:]  # [B, N]
    scores = torch.stack(out.scores, dim=1).float()  # [B, N, V] logits after the temperature warper
    response_logprobs = torch.log_softmax(scores, -1).gather(-1, response_ids[..., None]).squeeze(-1)
    prompt_lengths = enc["attention_mask"].sum(-1).tolist()
    return enc["input_ids"].cpu(), response_ids.cpu(), response_logprobs.cpu(), prompt_lengths


def decode_responses(
    tokenizer, response_ids: Tensor, response_lengths: Tensor, finished: Tensor, *, skip_special_tokens: bool = True
) -> list[str]:
    """Response texts without the trailing <eos> and the padding after it.

    ``skip_special_tokens=False`` keeps special tokens the model emitted *inside* its response (e.g. "<bos>"), so a
    reward that counts tokens cannot be gamed by emitting tokens that decoding would otherwise drop.
    """
    ends = (response_lengths - finished.long()).tolist()
    return [
        tokenizer.decode(row[:end], skip_special_tokens=skip_special_tokens)
        for row, end in zip(response_ids, ends, strict=True)
    ]


def build_batch(
    prompt_ids: Tensor,
    response_ids: Tensor,
    response_logprobs: Tensor,
    prompt_lengths: list[int],
    pad_token_id: int,
    eos_token_id: int,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Concatenate the unpadded prompt and response of each row and right-pad.

    Returns (batch without advantages/prev/reference log-probs, finished [B] bool, response_lengths [B]).
    """
    rows, masks, gen_lps, finished, resp_lens = [], [], [], [], []
    for i, plen in enumerate(prompt_lengths):
        prompt = prompt_ids[i, prompt_ids.shape[1] - plen :]
        resp = response_ids[i]
        eos_at = (resp == eos_token_id).nonzero()
        n = int(eos_at[0]) + 1 if len(eos_at) else resp.shape[0]
        finished.append(bool(len(eos_at)))
        resp_lens.append(n)
        rows.append(torch.cat([prompt, resp[:n]]))
        masks.append(torch.cat([torch.zeros(plen), torch.ones(n)]))
        gen_lps.append(torch.cat([torch.zeros(plen), response_logprobs[i, :n]]))
    seq_len = max(len(r) for r in rows)
    bsz = len(rows)
    input_ids = torch.full((bsz, seq_len), pad_token_id, dtype=torch.long)
    token_mask = torch.zeros(bsz, seq_len)
    generation_logprobs = torch.zeros(bsz, seq_len)
    for i, (r, m, g) in enumerate(zip(rows, masks, gen_lps, strict=True)):
        input_ids[i, : len(r)], token_mask[i, : len(r)], generation_logprobs[i, : len(r)] = r, m, g
    batch = {
        "input_ids": input_ids,
        "input_lengths": torch.tensor([len(r) for r in rows]),
        "token_mask": token_mask,
        "sample_mask": torch.ones(bsz),
        "generation_logprobs": generation_logprobs,
    }
    return batch, torch.tensor(finished), torch.tensor(resp_lens)


def group_advantages(rewards: Tensor, group_size: int, *, normalize_std: bool) -> Tensor:
    """GRPO advantages [B]: (r - group mean) / (group std + 1e-8) (unbiased std, as oat); Dr.GRPO drops the std.

    rewards: [B] with B = prompts x group_size (>= 2, by the recipe schema), rows grouped by prompt.
    """
    grouped = rewards.view(-1, group_size)  # [prompts, G]
    centred = grouped - grouped.mean(-1, keepdim=True)
    if normalize_std:
        centred = centred / (grouped.std(-1, keepdim=True) + 1e-8)
    return centred.reshape(-1)


def next_token_logprobs(model: torch.nn.Module, input_ids: Tensor, input_lengths: Tensor, temperature: float) -> Tensor:
    """log pi(input_ids[:, t+1] | input_ids[:, :t+1]) at the sampling temperature: [B, S-1] (nats).

    Rows are right-padded, so causal attention never sees the padding of its own row.
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    attention_mask = (positions[None, :] < input_lengths[:, None]).long()
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # [B, S-1, V]
    logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


@torch.no_grad()
def full_logprobs(model: torch.nn.Module, batch: dict[str, Tensor], temperature: float, micro_batch: int) -> Tensor:
    """[B, S] log-probs in NeMo RL's convention (position 0 is 0), computed in micro-batches without grad."""
    out = torch.zeros(batch["input_ids"].shape)
    device = next(model.parameters()).device
    for start in range(0, out.shape[0], micro_batch):
        rows = slice(start, start + micro_batch)
        ids, lengths = batch["input_ids"][rows].to(device), batch["input_lengths"][rows].to(device)
        lps = next_token_logprobs(model, ids, lengths, temperature)
        out[start : start + micro_batch, 1:] = lps.cpu()
    return out
