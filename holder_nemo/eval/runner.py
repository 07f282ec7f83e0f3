"""One evaluation run: load benchmarks, resolve the model, generate, score, write the outputs.

Outputs in ``output_dir``: ``generations.jsonl`` (one line per sample: prompt, response, finish reason, extracted
answer, reward), ``results.json`` (config, model, per-benchmark metrics with counts, average, table) and
``results.md`` (the paper-layout table: benchmarks as columns, unweighted average last). Files are written to a
temporary name and renamed (atomic).
"""

from __future__ import annotations

import json
import time
from math import comb
from pathlib import Path
from typing import Any

from holder_nemo.eval.backends import HFBackend, SamplingSettings, VLLMBackend
from holder_nemo.eval.benchmarks import BenchmarkError, Problem, load_benchmark
from holder_nemo.eval.model_source import ModelSourceError, ResolvedModel, resolve_model
from holder_nemo.eval.prompts import apply_template
from holder_nemo.eval.scoring import score_response
from holder_nemo.eval.settings import BENCHMARKS, EvalConfig
from holder_nemo.files import atomic_write


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` >= ``k`` samples (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def markdown_table(label: str, per_benchmark: dict[str, dict[str, Any]], average: float) -> str:
    """Two-row table: scores in percent (1 decimal, as in the paper), then the counts behind them."""
    names = list(per_benchmark)
    titles = [BENCHMARKS[b] + ("†" if per_benchmark[b]["k"] > 1 else "") for b in names]  # †: Pass@k, k > 1
    lines = [
        "| Model | " + " | ".join(titles) + " | Avg. |",
        "|---|" + "---|" * (len(names) + 1),
        f"| {label} | " + " | ".join(f"{per_benchmark[b]['score']:.1f}" for b in names) + f" | {average:.1f} |",
        "| (correct / total) | " + " | ".join(per_benchmark[b]["count"] for b in names) + " | |",
    ]
    notes = [f"Pass@{per_benchmark[b]['k']}" for b in names if per_benchmark[b]["k"] > 1]
    metric_note = "Pass@1" + (f"; † = {notes[0]}" if notes else "")
    truncated = sum(per_benchmark[b]["num_truncated"] for b in names)
    samples = sum(per_benchmark[b]["num_samples"] for b in names)
    lines += [
        "",
        f"{metric_note}. {truncated} of {samples} generations hit the token limit (graded as they are, as in the "
        "authors' evaluation).",
    ]
    return "\n".join(lines) + "\n"


def check_context_length(cfg: EvalConfig, model: ResolvedModel) -> None:
    """Refuse (in both backends, as vLLM does) a max_model_len beyond the model's declared positions."""
    config_path = Path(model.model) / "config.json"
    if cfg.allow_long_context or not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    positions = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    if positions and cfg.max_model_len > int(positions):
        raise ModelSourceError(
            f"max_model_len={cfg.max_model_len} exceeds the model's max_position_embeddings={positions} "
            f"({config_path}). Either --set max_model_len={positions} (budget = {positions} - prompt tokens), or "
            "--set allow_long_context=true to keep the paper's 5,120 (vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)."
        )


def _sampling(tokenizer: Any, cfg: EvalConfig, name: str, problems: list[Problem]) -> tuple[list, list, Any]:
    """(prompts, prompt token ids, SamplingSettings) of one benchmark; each reply gets what its prompt leaves."""
    n, temperature, top_p = cfg.sampling_for(name)
    prompts = [apply_template(cfg.prompt_template, p.problem) for p in problems]
    # add_special_tokens=True: what vLLM does with a text prompt (oat passes text), e.g. BOS for R1-Distill.
    prompt_ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    budgets = [max(0, min(cfg.max_new_tokens, cfg.max_model_len - len(ids))) for ids in prompt_ids]
    too_long = [p.index for p, b in zip(problems, budgets, strict=True) if b == 0]
    if too_long:
        raise BenchmarkError(
            f"benchmark {name!r}: problems {too_long[:10]} have prompts of >= max_model_len={cfg.max_model_len} "
            "tokens; raise max_model_len"
        )
    settings = SamplingSettings(n, temperature, top_p, max_new_tokens=budgets, seed=cfg.seed)
    return prompts, prompt_ids, settings


def evaluate_benchmark(
    backend: HFBackend | VLLMBackend, cfg: EvalConfig, name: str, problems: list[Problem]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate and score one benchmark; returns (metrics, generation records)."""
    prompts, prompt_ids, settings = _sampling(backend.tokenizer, cfg, name, problems)
    n, k = settings.n, cfg.pass_k if name in cfg.pass_k_benchmarks else 1
    started = time.perf_counter()
    generations = backend.generate(prompt_ids, settings)
    elapsed = time.perf_counter() - started
    records: list[dict[str, Any]] = []
    per_problem_pass, counts = [], {"correct": 0, "solved": 0, "truncated": 0, "no_box": 0, "tokens": 0}
    for problem, prompt, samples in zip(problems, prompts, generations, strict=True):
        if len(samples) != n:
            raise RuntimeError(f"backend returned {len(samples)} samples for one prompt, expected {n}")
        correct = 0
        for sample_index, gen in enumerate(samples):
            score = score_response(gen.text, problem.answer)  # graded whatever the finish reason, as the authors
            correct += int(score.reward == 1.0)
            counts["truncated"] += int(gen.finish_reason != "stop")
            counts["no_box"] += int(score.extracted is None)
            counts["tokens"] += gen.num_tokens
            records.append(
                {
                    "benchmark": name,
                    "index": problem.index,
                    "sample": sample_index,
                    "problem": problem.problem,
                    "answer": problem.answer,
                    "prompt": prompt,
                    "response": gen.text,
                    "finish_reason": gen.finish_reason,
                    "num_tokens": gen.num_tokens,
                    "extracted": score.extracted,
                    "reward": score.reward,
                }
            )
        counts["correct"] += correct
        counts["solved"] += int(correct > 0)
        per_problem_pass.append(pass_at_k(n, correct, k))
    num_samples = len(problems) * n
    metrics = {
        "metric": f"pass@{k}",
        "k": k,
        "n": n,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "score": 100.0 * sum(per_problem_pass) / len(problems),
        "num_problems": len(problems),
        "num_samples": num_samples,
        "num_correct": counts["correct"],
        "num_solved": counts["solved"],
        "count": f"{counts['correct']}/{num_samples}" if k == 1 else f"{counts['solved']}/{len(problems)}",
        "num_truncated": counts["truncated"],
        "num_no_box": counts["no_box"],
        "mean_response_tokens": counts["tokens"] / num_samples,
        "generation_seconds": elapsed,
    }
    return metrics, records


def run_eval(cfg: EvalConfig, *, label: str | None = None) -> tuple[str, Path]:
    """Evaluate ``cfg.model`` on ``cfg.benchmarks``; write the results and return the table and where they went."""
    benchmarks = {name: load_benchmark(cfg.data_dir, name, cfg.limit) for name in cfg.benchmarks}  # fail fast
    model = resolve_model(cfg.model, hf_export_dir=cfg.hf_export_dir, base_model=cfg.base_model)
    check_context_length(cfg, model)
    backend = (HFBackend if cfg.backend == "hf" else VLLMBackend)(model, cfg)
    output_dir = cfg.output_dir  # default: <model>/eval, or eval_results/<org>__<name> for a hub id
    if output_dir is None:
        local = Path(cfg.model)
        output_dir = local / "eval" if local.is_dir() else Path("eval_results") / cfg.model.replace("/", "__")
    output_dir.mkdir(parents=True, exist_ok=True)
    label = label or (
        f"{Path(cfg.model).parent.name}/{Path(cfg.model).name}" if model.step is not None else Path(cfg.model).name
    )
    per_benchmark: dict[str, dict[str, Any]] = {}
    all_records: list[dict[str, Any]] = []
    for name, problems in benchmarks.items():
        metrics, records = evaluate_benchmark(backend, cfg, name, problems)
        per_benchmark[name] = metrics
        all_records += records
        print(f"[eval] {name}: {metrics['metric']} = {metrics['score']:.1f} ({metrics['count']})", flush=True)
    average = sum(m["score"] for m in per_benchmark.values()) / len(per_benchmark)
    table = markdown_table(label, per_benchmark, average)
    with atomic_write(output_dir / "generations.jsonl") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in all_records))
    summary = {
        "label": label,
        "model": model.__dict__,
        "config": json.loads(cfg.model_dump_json()),
        "benchmarks": per_benchmark,
        "average": average,
        "table_markdown": table,
    }
    with atomic_write(output_dir / "results.json") as fh:
        fh.write(json.dumps(summary, indent=2) + "\n")
    with atomic_write(output_dir / "results.md") as fh:
        fh.write(f"# Evaluation of {label}\n\n{table}")
    return table, output_dir
