"""Evaluation settings (pydantic), defaulting to the paper's protocol (paper §4.1, docs/eval.md).

Paper protocol: qwen_math prompt, greedy decoding (temperature 0), 4,096 new tokens, one sample per question,
Pass@1; vLLM bf16 with ``max_model_len`` 5,120. The Qwen3 tables (paper App. F) report AIME25 as Pass@8 at
temperature 0.7 (top-p 1.0): ``pass_k_benchmarks=["aime25"]``, or the ``qwen3`` preset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Benchmark name (its file in the data directory is <name>.jsonl, as `holderpo data prepare` writes it, which also
# owns the row counts) -> column title in the paper's tables.
BENCHMARKS: dict[str, str] = {
    "aime24": "AIME24",
    "amc": "AMC",
    "math500": "MATH500",
    "minerva": "Minerva",
    "olympiadbench": "Oly.",
    "aime25": "AIME25",
}

PAPER_BENCHMARKS = ["aime24", "amc", "math500", "minerva", "olympiadbench"]  # Tables 1, 2, 4, 5 column order
QWEN3_BENCHMARKS = ["math500", "aime25", "amc", "minerva", "olympiadbench"]  # Tables 6, 7 column order

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"benchmarks": PAPER_BENCHMARKS, "pass_k_benchmarks": []},
    "qwen3": {"benchmarks": QWEN3_BENCHMARKS, "pass_k_benchmarks": ["aime25"]},
}


class EvalConfig(BaseModel):
    """All settings of one ``holderpo eval`` run. Defaults = the paper's Pass@1 protocol."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Hugging Face model directory or NeMo RL checkpoint (step_N) directory")
    data_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("HOLDERPO_DATA_DIR", "data")),
        description="directory of <benchmark>.jsonl files {problem, answer}; default $HOLDERPO_DATA_DIR or ./data",
    )
    output_dir: Path | None = Field(None, description="where results go; default <model>/eval or ./eval_results")
    benchmarks: list[str] = Field(default_factory=lambda: list(PAPER_BENCHMARKS))
    backend: Literal["vllm", "hf"] = "vllm"
    prompt_template: Literal["qwen_math", "no"] = "qwen_math"
    # Pass@1 protocol
    max_new_tokens: int = Field(4096, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n_samples: int = Field(1, ge=1)
    # Pass@k protocol for the benchmarks listed here (Qwen3 tables: AIME25 Pass@8 at temperature 0.7)
    pass_k_benchmarks: list[str] = Field(default_factory=list)
    pass_k: int = Field(8, ge=1)
    pass_k_temperature: float = Field(0.7, ge=0.0)
    pass_k_top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    limit: int | None = Field(None, ge=1, description="evaluate only the first N problems of each benchmark")
    # engine
    # "auto": bfloat16 on GPU (the paper's vLLM bf16), float32 for the HF backend on CPU
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "auto"
    max_model_len: int = Field(5120, ge=2)
    # Qwen2.5-Math models declare max_position_embeddings 4,096 < the paper's max_model_len 5,120; vLLM refuses
    # that unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, which this sets (both backends then run past 4,096 positions).
    allow_long_context: bool = False
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    hf_batch_size: int = Field(8, ge=1, description="prompts per generate() call in the HF backend")
    trust_remote_code: bool = False
    # NeMo RL checkpoint conversion
    hf_export_dir: Path | None = Field(None, description="where a NeMo RL checkpoint is converted; default <step>/hf")
    base_model: str | None = Field(None, description="HF name/dir of the base model, for checkpoint conversion")

    @field_validator("benchmarks", "pass_k_benchmarks")
    @classmethod
    def _known_benchmarks(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; allowed: {sorted(BENCHMARKS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark listed twice in {names}")
        return names

    @field_validator("benchmarks")
    @classmethod
    def _not_empty(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError(f"at least one benchmark is needed; allowed: {sorted(BENCHMARKS)}")
        return names

    @model_validator(mode="after")
    def _pass_k_subset(self) -> EvalConfig:
        extra = [n for n in self.pass_k_benchmarks if n not in self.benchmarks]
        if extra:
            raise ValueError(f"pass_k_benchmarks {extra} are not in benchmarks {self.benchmarks}")
        return self

    def sampling_for(self, benchmark: str) -> tuple[int, float, float]:
        """(n, temperature, top_p) of one benchmark: the Pass@k settings for ``pass_k_benchmarks``, else Pass@1's."""
        if benchmark in self.pass_k_benchmarks:
            return self.pass_k, self.pass_k_temperature, self.pass_k_top_p
        return self.n_samples, self.temperature, self.top_p
