"""Held-out accuracy of a SmolLM2 reference run before and after training: greedy answers to problems it never saw.

The training reward of `recipes/smollm2_135m_arith_cpu.yaml` is measured on 16 sampled answers per step, so its
start/end values are noisy; this scores the initial model and the run's final checkpoint on the same held-out
problems (seed 10_000, never a training seed) with greedy decoding and the task's reward (math-verify on the last
\\boxed{}), i.e. `holderpo eval`'s protocol on the task's own prompts. Usage (after the run):

    python benchmarks/smollm2_heldout.py runs/smollm2_arith                 # 64 problems
    python benchmarks/smollm2_heldout.py runs/smollm2_arith --problems 128
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from holder_nemo.reference.checkpoint import MODEL_FILE, latest_checkpoint
from holder_nemo.reference.model import load_hf_policy
from holder_nemo.reference.rollout import build_batch, decode_responses
from holder_nemo.reference.tasks import ArithmeticWordTask
from holder_nemo.reference.train import load_config

HELDOUT_SEED = 10_000


@torch.no_grad()
def greedy_reward(model, tokenizer, task: ArithmeticWordTask, n: int, max_new_tokens: int, batch: int = 16):
    """(mean reward, fraction finished) of greedy answers to problems 0..n-1 of ``task``."""
    rewards, finished_all = [], []
    for start in range(0, n, batch):
        examples = task.prompts(start, min(batch, n - start))
        enc = tokenizer([e.prompt for e in examples], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        response_ids = out[:, enc["input_ids"].shape[1] :]
        dummy = torch.zeros(response_ids.shape)
        _, finished, lengths = build_batch(
            enc["input_ids"], response_ids, dummy, enc["attention_mask"].sum(-1).tolist(),
            tokenizer.pad_token_id, tokenizer.eos_token_id,
        )  # fmt: skip
        texts = decode_responses(tokenizer, response_ids, lengths, finished)
        rewards += [task.reward(e, t, bool(f)) for e, t, f in zip(examples, texts, finished, strict=True)]
        finished_all += finished.tolist()
    return sum(rewards) / len(rewards), sum(finished_all) / len(finished_all)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--problems", type=int, default=64)
    ns = parser.parse_args(argv)
    checkpoint = latest_checkpoint(ns.run_dir)
    if checkpoint is None:
        raise SystemExit(f"no checkpoint in {ns.run_dir}")
    cfg, _ = load_config(checkpoint / "config.yaml", [])
    if cfg.data.task != "arith_words":
        raise SystemExit(f"{ns.run_dir} is not an arith_words run (data.task: {cfg.data.task})")
    if cfg.reference.num_threads:
        torch.set_num_threads(cfg.reference.num_threads)
    model, tokenizer = load_hf_policy(cfg.policy.model_name)
    model.eval()
    task = ArithmeticWordTask(HELDOUT_SEED, tokenizer)
    max_new = cfg.policy.generation.max_new_tokens
    before = greedy_reward(model, tokenizer, task, ns.problems, max_new)
    model.load_state_dict(torch.load(checkpoint / MODEL_FILE, map_location="cpu", weights_only=True))
    after = greedy_reward(model, tokenizer, task, ns.problems, max_new)
    result = {
        "checkpoint": str(checkpoint),
        "problems": ns.problems,
        "greedy_reward_before": before[0],
        "greedy_reward_after": after[0],
        "finished_before": before[1],
        "finished_after": after[1],
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
