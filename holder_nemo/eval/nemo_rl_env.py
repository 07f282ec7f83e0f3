"""NeMo RL (v0.7.0) math environment that grades exactly like ``holderpo eval`` (``holder_nemo.eval.scoring``).

Why: NeMo RL's own ``math`` environment (``math_verify_impl: hf_math_verify``) lets math-verify search the whole
response, so an answer without ``\\boxed{}`` ("The answer is 4.") scores 1 and a response with several boxes is
judged on all of them; the paper's grader (and ``holderpo eval``) reads only the last box, and accepts more forms
(MATH normalisation, PRM800K's sympy check). Training rewards and in-training validation would then disagree with the
final evaluation. This environment reuses NeMo RL's ``BaseMathEnvironment`` (verifier worker pool) and swaps in a
worker that calls ``score_response``.

Truncation: the authors give a training rollout cut by the token limit reward 0. NeMo RL v0.7.0 passes no finish
reason to an environment, so the environment recognises a cut from the token counts (``rollout_limits``), with the
limits from its config (the recipes interpolate them from ``policy.generation``); leave them out (null) to grade cut
replies like whole ones, as ``holderpo eval`` does.

Use: in the recipe, ``data.default.env_name: holder_math`` (or per dataset) and ``env.holder_math: {_component_:
holder_nemo.eval.nemo_rl_component, num_workers: 8, max_new_tokens: ..., max_model_len: ...}``; the entry point
registers the environment through that component (``holder_nemo.nemo_rl.components``).

Imports ray and nemo_rl: import this module only inside a NeMo RL run.
"""

from __future__ import annotations

from typing import Any, ClassVar

import ray
import torch
from nemo_rl.environments.interfaces import EnvironmentReturn
from nemo_rl.environments.math_environment import BaseMathEnvironment
from nemo_rl.environments.utils import chunk_list_to_workers

from holder_nemo.eval.rollout_limits import cut_by_length, length_limits
from holder_nemo.eval.scoring import score_response


@ray.remote  # pragma: no cover - runs in a Ray actor (its main thread, so the grading time limits work)
class PaperMathVerifyWorker:
    def verify(
        self, pred_responses: list[str], ground_truths: list[Any], return_extracted_answer: bool = False, **_: Any
    ) -> list[float] | tuple[list[float], list[str | None]]:
        """Rewards (1.0/0.0) of the responses against their gold answers (each a string, a number or a list of
        accepted answers), and the final boxed answers if asked (NeMo RL's verifier contract)."""
        scores = [score_response(r, g) for r, g in zip(pred_responses, ground_truths, strict=True)]
        rewards = [s.reward for s in scores]
        return (rewards, [s.extracted for s in scores]) if return_extracted_answer else rewards


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=1000)  # pragma: no cover
class PaperMathEnvironment(BaseMathEnvironment):
    """Single-turn maths environment: reward = ``score_response(assistant text, metadata["ground_truth"]).reward``, 0
    for a reply cut by a length limit."""

    WORKER_CLASS_DICT: ClassVar[dict[str, Any]] = {"math": PaperMathVerifyWorker}

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.max_new_tokens, self.max_model_len = length_limits(cfg)
        super().__init__(cfg)

    def step(
        self,
        message_log_batch: list[list[dict[str, Any]]],
        metadata: list[dict[str, Any]],
        return_extracted_answer: bool = False,
    ) -> EnvironmentReturn:
        responses = [
            "".join(str(m["content"]) for m in conversation if m["role"] == "assistant")
            for conversation in message_log_batch
        ]
        ground_truths = [m["ground_truth"] for m in metadata]
        futures = [
            worker.verify.remote(chunk, truths, return_extracted_answer)
            for worker, chunk, truths in zip(
                self.workers,
                chunk_list_to_workers(responses, self.num_workers),
                chunk_list_to_workers(ground_truths, self.num_workers),
                strict=True,
            )
        ]
        rewards: list[float] = []
        answers: list[str | None] | None = [] if return_extracted_answer else None
        for result in ray.get(futures):
            if return_extracted_answer:
                result, extracted = result
                answers.extend(extracted)
            rewards.extend(result)
        cut = [cut_by_length(c, self.max_new_tokens, self.max_model_len) for c in message_log_batch]
        rewards = [0.0 if was_cut else r for r, was_cut in zip(rewards, cut, strict=True)]
        observations = [
            {"role": "environment", "content": "Environment: correct" if r else "Environment: incorrect"}
            for r in rewards
        ]
        return EnvironmentReturn(
            observations=observations,
            metadata=metadata,
            next_stop_strings=[None] * len(rewards),
            rewards=torch.tensor(rewards, dtype=torch.float32),
            terminateds=torch.ones(len(rewards), dtype=torch.float32),
            answers=answers,
        )
