"""Validation inside the per-step ALFWorld loop: the paper's protocol (docs/alfworld.md, "Validation").

Every ``grpo.val_period`` steps: ``grpo.max_val_samples`` (128) episodes on games drawn from the validation split as
verl-agent's validation environments draw them (``rollout.validation_games``, seeded by ``alfworld.val_seed``, a new
draw each validation), sampled at ``alfworld.val_temperature`` (0.4); success overall and per task type with counts,
the best validation so far (kept in the GRPO save state, so a resumed run keeps it), one JSON line per validation in
``<logger.log_dir>/alfworld_validation.jsonl``.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from holder_nemo.alfworld.per_step_settings import PerStepSettings
from holder_nemo.alfworld.rollout import nemo_rl_policy, run_episodes, validation_games
from holder_nemo.alfworld.step_samples import success_rate


def validate_per_step(
    policy_generation, tokenizer, val_games: Sequence[str], settings: PerStepSettings, round_index: int = 0
) -> tuple[dict, dict]:
    """``grpo.max_val_samples`` episodes on games drawn as verl-agent's validation draws them (round
    ``round_index``), at the generation's current temperature. Returns (metrics, ``evaluate.summarize`` result):
    ``success_rate`` (fraction), ``episode_steps_mean``, ``num_episodes`` and, per Table 3 column,
    ``success_rate/<column>``, ``won/<column>``, ``episodes/<column>``."""
    from holder_nemo.alfworld.evaluate import summarize

    games = validation_games(val_games, settings.max_val_samples, settings.val_seed, round_index)
    policy = nemo_rl_policy(policy_generation, tokenizer, max_prompt_tokens=settings.max_prompt_tokens)
    episodes = run_episodes(policy, games, group_size=1, config=settings.protocol)
    summary = summarize(episodes)
    metrics = {
        "success_rate": success_rate(episodes),
        "episode_steps_mean": statistics.fmean(len(ep.steps) for ep in episodes),
        "num_episodes": len(episodes),
    }
    for column, cell in summary["per_task"].items():
        metrics[f"success_rate/{column}"] = cell["success"] / 100.0
        metrics[f"won/{column}"] = cell["won"]
        metrics[f"episodes/{column}"] = cell["total"]
    return metrics, summary


def _append_json_line(path: str | os.PathLike, record: dict) -> None:
    from holder_nemo.alfworld.evaluate import nan_to_none

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(nan_to_none(record), allow_nan=False) + "\n")


class Validator:
    """Runs, records and prints the validations of one run (the generation is awake when ``run`` is called).

    ``set_temperature(t) -> previous`` switches the sampling temperature around a validation when
    ``alfworld.val_temperature`` differs from the training one (default: NeMo RL's vLLM workers, resolved now so a
    missing hook fails at start-up, not at the first validation).
    """

    def __init__(
        self,
        settings: PerStepSettings,
        generation: Any,
        tokenizer: Any,
        val_games: Sequence[str],
        logger: Any,
        set_temperature: Callable[[float], float] | None = None,
    ) -> None:
        from holder_nemo.alfworld.generation_settings import vllm_temperature_setter

        if settings.validating and not val_games:
            raise ValueError("validation is on (grpo.val_period / val_at_start / val_at_end) but val_games is empty")
        self.switch = settings.val_temperature != settings.train_temperature
        if set_temperature is None and self.switch:
            set_temperature = vllm_temperature_setter(generation)
        self.settings, self.generation, self.tokenizer = settings, generation, tokenizer
        self.val_games, self.logger, self.set_temperature = list(val_games), logger, set_temperature

    def run(self, step: int, state: dict) -> None:
        """Validate at ``step``; the best result so far is kept in ``state["alfworld_val_best"]``."""
        from holder_nemo.alfworld.evaluate import format_table, nan_to_none

        s = self.settings
        round_index = s.validation_round(step)
        if self.switch:
            self.set_temperature(s.val_temperature)
        try:
            metrics, summary = validate_per_step(self.generation, self.tokenizer, self.val_games, s, round_index)
        finally:
            if self.switch:
                self.set_temperature(s.train_temperature)
        self.generation.finish_generation()
        best = state.get("alfworld_val_best")
        if best is None or metrics["success_rate"] > best["success_rate"]:
            best = {"step": step, "success_rate": metrics["success_rate"], "summary": nan_to_none(summary)}
            state["alfworld_val_best"] = best  # saved with the checkpoint: resumes keep the best
        metrics.update({"success_rate_best": best["success_rate"], "best_step": best["step"]})
        self.logger.log_metrics(metrics, step, prefix="validation")
        if s.log_dir:
            record = {"step": step, "round": round_index, "temperature": s.val_temperature, **summary}
            _append_json_line(Path(s.log_dir) / "alfworld_validation.jsonl", record)
        rows = {f"validation step {step}": summary, f"best so far (step {best['step']})": best["summary"]}
        print(format_table(rows, with_paper=False), flush=True)
