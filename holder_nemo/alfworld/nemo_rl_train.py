"""NeMo RL training loop for ALFWorld with the paper's per-step sample layout (``alfworld.sample_layout: per_step``).

``grpo_train`` (NeMo RL v0.7.0) trains one row per episode; the paper trains one row per environment step
(``docs/alfworld.md``, "Sample layout"). ``alfworld_per_step_train`` replaces ``grpo_train`` for that layout and
takes the objects ``nemo_rl.algorithms.grpo.setup`` returns. Per training step k (= completed steps + 1):

1. refit the generation weights from the policy when they are stale (NeMo RL's ``refit_policy_generation``, passed
   in as ``refit``), else ``policy_generation.prepare_for_generation()``;
2. ``grpo.num_prompts_per_step`` games drawn with ``rollout.sample_games(train_games, n, seed=grpo.seed + k)``
   (a pure function of the step, so a resumed run plays the games the uninterrupted run would), each played by
   ``grpo.num_generations_per_prompt`` environments in lock-step through ``rollout.nemo_rl_policy``;
3. per-step rows with verl-agent's GRPO advantage (``layout.build_step_samples`` -> ``tokenize_step_samples`` ->
   ``to_nemo_rl_train_data``), padded with masked rows (``sample_mask`` 0) to a multiple of
   ``policy.train_global_batch_size`` because NeMo RL's ``policy.train`` shards whole global batches;
4. ``prev_logprobs`` / ``reference_policy_logprobs`` from the policy, as ``grpo_train`` computes them;
5. ``policy.train(train_data, loss_fn)``, the loss being HölderPO minus ``alfworld.entropy_coeff`` x the estimated
   token-mean entropy (``entropy.EntropyBonusLoss``); the step hook (``holder_nemo.nemo_rl.steps``) sets p(k);
6. validation every ``grpo.val_period`` steps: ``grpo.max_val_samples`` (128) episodes on games drawn from the
   validation split as verl-agent's validation environments draw them (``rollout.validation_games``, seeded by
   ``alfworld.val_seed``, a new draw each validation), sampled at ``alfworld.val_temperature`` (0.4); success
   overall and per task type with counts, the best validation so far, one JSON line per validation in
   ``<logger.log_dir>/alfworld_validation.jsonl``;
7. a checkpoint through NeMo RL's ``CheckpointManager`` every ``checkpointing.save_period`` steps, at the last step,
   and at a stop request (``holder_nemo.nemo_rl.stop.StopRequest``), after which the loop returns the reason.

Resume: ``grpo_save_state["total_steps"]`` restored by ``setup`` is the number of completed steps; the loop continues
at the next step with p(total_steps + 1), exactly as the uninterrupted run. Not honoured here (see docs): NeMo RL's
``checkpoint_must_save_by`` (use ``HOLDERPO_SLURM_SAVE_MARGIN_S``), the dataloader ``setup`` builds (games come
from ``sample_games``). Settings this loop would ignore are errors (``check_alfworld_section``, ``PerStepSettings``).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from holder_nemo.alfworld.layout import (
    build_step_samples,
    success_rate,
    to_nemo_rl_train_data,
    tokenize_step_samples,
)
from holder_nemo.alfworld.protocol import ProtocolConfig
from holder_nemo.alfworld.rollout import nemo_rl_policy, run_episodes, sample_games, validation_games

PER_STEP, PER_EPISODE = "per_step", "per_episode"
# The recipe's ``alfworld`` section: protocol settings NeMo RL's GRPO config has no key for. All but sample_layout are
# read only by the per-step loop; with NeMo RL's own rollout (per_episode) they must be null (0 for the bonus).
ALFWORLD_KEYS = ("sample_layout", "advantage_stats_over", "entropy_coeff", "val_temperature", "val_seed", "task_types")
# GRPO settings the per-step loop does not read (it computes verl-agent's advantage itself): only these values agree.
PER_STEP_FIXED = {
    "grpo.normalize_rewards": True,
    "grpo.use_leave_one_out_baseline": False,
    "grpo.overlong_filtering": False,
    "grpo.use_dynamic_sampling": False,
    "grpo.reward_shaping.enabled": False,
    "grpo.reward_scaling.enabled": False,
}


def section(config: Any, name: str) -> Mapping[str, Any]:
    """``config[name]`` for a mapping or a pydantic ``MasterConfig`` (extra sections such as ``alfworld`` included)."""
    value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
    return value or {}


def _lookup(config: Any, dotted: str) -> Any:
    """``config[a][b][c]`` for ``"a.b.c"`` (None where absent); the top level may be a pydantic ``MasterConfig``."""
    *parents, leaf = dotted.split(".")
    node: Any = config
    for part in parents:
        node = section(node, part)
    return node.get(leaf) if isinstance(node, Mapping) else getattr(node, leaf, None)


def _int_or(value: Any, default: int) -> int:
    return default if value is None else int(value)


def check_alfworld_section(config: Any) -> str:
    """The layout (``alfworld.sample_layout``, ``per_episode`` when absent), after checking the ``alfworld`` section:
    unknown keys are errors, and so are per-step-only keys set under NeMo RL's own rollout (nothing would read them).
    """
    alfworld = dict(section(config, "alfworld"))
    unknown = sorted(set(alfworld) - set(ALFWORLD_KEYS))
    if unknown:
        raise ValueError(f"alfworld: unknown keys {unknown}; allowed {list(ALFWORLD_KEYS)}")
    layout = alfworld.get("sample_layout", PER_EPISODE)
    if layout not in (PER_STEP, PER_EPISODE):
        raise ValueError(f"alfworld.sample_layout: must be {PER_STEP!r} or {PER_EPISODE!r}, got {layout!r}")
    if layout == PER_EPISODE:
        harmless = {"entropy_coeff": 0}  # no bonus is what NeMo RL's rollout does anyway
        unused = [k for k in ALFWORLD_KEYS[1:] if alfworld.get(k) is not None and alfworld.get(k) != harmless.get(k)]
        if unused:
            raise ValueError(
                f"alfworld.{unused[0]}: read only with alfworld.sample_layout per_step; NeMo RL's own rollout "
                f"(per_episode) would ignore {['alfworld.' + k for k in unused]}: set them to null"
            )
    return layout


def sample_layout(config: Any) -> str:
    """``alfworld.sample_layout`` of a recipe (``per_episode`` when absent: NeMo RL's own rollout), after checking the
    ``alfworld`` section and, for ``per_step`` given a whole recipe (with ``grpo``), every setting the loop reads
    (``PerStepSettings``), so that a bad value fails before Ray and the GPUs start."""
    layout = check_alfworld_section(config)
    if layout == PER_STEP and section(config, "grpo"):
        PerStepSettings.from_config(config)
    return layout


class GameFileDataset(torch.utils.data.Dataset):
    """Game files as NeMo RL ``DatumSpec`` rows (``rl_collate_fn`` accepts them), so ``setup()`` gets a dataset
    without a NeMo RL dataset name. The per-step loop draws games itself; the rows carry the file in
    ``extra_env_info["game_file"]`` and an empty message log (no prompt is rendered here)."""

    def __init__(self, game_files: Sequence[str | os.PathLike], task_name: str = "alfworld") -> None:
        if not game_files:
            raise ValueError("game_files: empty (no ALFWorld games found)")
        self.game_files = [str(f) for f in game_files]
        self.task_name = task_name

    def __len__(self) -> int:
        return len(self.game_files)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {
            "message_log": [],
            "length": 0,
            "loss_multiplier": 1.0,
            "extra_env_info": {"game_file": self.game_files[idx]},
            "idx": idx,
            "task_name": self.task_name,
        }


def game_file_dataset(data_path: str | os.PathLike, task_types: Sequence[int] | None = None) -> GameFileDataset:
    """The games of ``data_path`` = ``<json_2.1.1 root>/<split>`` (``data.train.data_path`` of the recipe), selected
    by alfworld's own ``collect_game_files`` (``data.list_games``)."""
    from holder_nemo.alfworld.data import TASK_TYPES, list_games

    path = Path(data_path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"data.*.data_path: no such directory {str(path)!r} (run `holderpo data prepare alfworld DIR` and set "
            "ALFWORLD_DATA, or `python -m holder_nemo.alfworld make-games DIR` for the offline games)"
        )
    types = tuple(task_types) if task_types else tuple(TASK_TYPES)
    return GameFileDataset(list_games(path.parent, path.name, types))


@dataclass(frozen=True)
class PerStepSettings:
    """What the loop reads from the master config (names = recipe keys)."""

    num_games: int  # grpo.num_prompts_per_step
    group_size: int  # grpo.num_generations_per_prompt
    max_num_steps: int  # grpo.max_num_steps
    seed: int  # grpo.seed
    val_period: int  # grpo.val_period
    val_at_start: bool
    val_at_end: bool
    max_val_samples: int  # grpo.max_val_samples: validation episodes (verl-agent val_data_size 128)
    skip_reference_logprobs: bool  # grpo.skip_reference_policy_logprobs_calculation
    protocol: ProtocolConfig  # env.alfworld
    stats_over: str  # alfworld.advantage_stats_over
    entropy_coeff: float  # alfworld.entropy_coeff (verl actor.entropy_coeff 0.001)
    train_temperature: float  # policy.generation.temperature
    val_temperature: float  # alfworld.val_temperature (null: the training temperature)
    val_seed: int  # alfworld.val_seed: environment 0's seed of verl-agent's validation draw (env.seed + 1000)
    log_dir: str | None  # logger.log_dir: where alfworld_validation.jsonl goes
    max_prompt_tokens: int  # data.max_input_seq_length
    max_response_tokens: int  # policy.generation.max_new_tokens
    train_global_batch_size: int  # policy.train_global_batch_size: rows are padded to a multiple of it
    sequence_multiple: int  # policy.make_sequence_length_divisible_by: columns are padded to a multiple of it
    colocated: bool  # policy.generation.colocated.enabled
    checkpointing_enabled: bool
    save_period: int

    @classmethod
    def from_config(cls, config: Any) -> PerStepSettings:
        if check_alfworld_section(config) != PER_STEP:
            raise ValueError("alfworld.sample_layout: the per-step loop needs per_step")
        grpo, policy, ckpt = section(config, "grpo"), section(config, "policy"), section(config, "checkpointing")
        alfworld = section(config, "alfworld")
        for key, value in PER_STEP_FIXED.items():
            got = _lookup(config, key)
            if got is not None and got != value:
                raise ValueError(
                    f"{key}: must be {value} with alfworld.sample_layout per_step (the loop computes verl-agent's "
                    f"advantage itself and would ignore it), got {got!r}"
                )
        env = dict(section(config, "env").get("alfworld") or {})
        nemo_env_keys = sorted({"turn_template", "num_workers"} & set(env))
        if nemo_env_keys:  # the Ray environment's keys: the per-step loop plays the games itself
            raise ValueError(
                f"env.alfworld.{nemo_env_keys[0]}: read only by NeMo RL's rollout (sample_layout per_episode); "
                "the per-step loop would ignore it"
            )
        generation = policy.get("generation") or {}
        train_temperature = float(generation.get("temperature", 1.0))
        val_temperature = alfworld.get("val_temperature")
        settings = cls(
            num_games=int(grpo["num_prompts_per_step"]),
            group_size=int(grpo["num_generations_per_prompt"]),
            max_num_steps=int(grpo["max_num_steps"]),
            seed=int(grpo.get("seed", 42)),
            val_period=int(grpo.get("val_period", 0) or 0),
            val_at_start=bool(grpo.get("val_at_start", False)),
            val_at_end=bool(grpo.get("val_at_end", False)),
            max_val_samples=int(grpo.get("max_val_samples", 0) or 0),
            skip_reference_logprobs=bool(grpo.get("skip_reference_policy_logprobs_calculation", False)),
            protocol=ProtocolConfig.from_dict(env),
            stats_over=str(alfworld.get("advantage_stats_over") or "steps"),
            entropy_coeff=float(alfworld.get("entropy_coeff") or 0.0),
            train_temperature=train_temperature,
            val_temperature=train_temperature if val_temperature is None else float(val_temperature),
            val_seed=int(alfworld["val_seed"]) if alfworld.get("val_seed") is not None else 1000,
            log_dir=section(config, "logger").get("log_dir"),
            max_prompt_tokens=int(section(config, "data").get("max_input_seq_length") or 2048),
            max_response_tokens=int((policy.get("generation") or {}).get("max_new_tokens") or 512),
            train_global_batch_size=_int_or(policy.get("train_global_batch_size"), 1),
            sequence_multiple=_int_or(policy.get("make_sequence_length_divisible_by"), 1),
            colocated=bool(((policy.get("generation") or {}).get("colocated") or {}).get("enabled", False)),
            checkpointing_enabled=bool(ckpt.get("enabled", False)),
            save_period=int(ckpt.get("save_period") or 0),
        )
        fields = {
            "num_games": "grpo.num_prompts_per_step",
            "group_size": "grpo.num_generations_per_prompt",
            "max_num_steps": "grpo.max_num_steps",
            "train_global_batch_size": "policy.train_global_batch_size",
            "sequence_multiple": "policy.make_sequence_length_divisible_by",
        }
        for name, key in fields.items():
            if getattr(settings, name) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(settings, name)}")
        if settings.stats_over not in ("steps", "episodes"):
            raise ValueError(
                f"alfworld.advantage_stats_over: must be 'steps' or 'episodes', got {settings.stats_over!r}"
            )
        if not settings.entropy_coeff >= 0:
            raise ValueError(f"alfworld.entropy_coeff: must be >= 0, got {settings.entropy_coeff}")
        if not settings.val_temperature > 0:
            raise ValueError(f"alfworld.val_temperature: must be > 0 or null, got {settings.val_temperature}")
        validating = settings.val_period > 0 or settings.val_at_start or settings.val_at_end
        if validating and settings.max_val_samples < 1:
            raise ValueError(f"grpo.max_val_samples: validation episodes must be >= 1, got {settings.max_val_samples}")
        if settings.entropy_coeff > 0:
            cp = int((policy.get("dtensor_cfg") or {}).get("context_parallel_size") or 1)
            megatron = policy.get("megatron_cfg") or {}
            if megatron.get("enabled"):
                cp = max(cp, int(megatron.get("context_parallel_size") or 1))
            if cp > 1 or (policy.get("sequence_packing") or {}).get("enabled"):
                raise ValueError(
                    "alfworld.entropy_coeff: > 0 needs whole rows in the loss: context_parallel_size 1 and "
                    "policy.sequence_packing.enabled false"
                )
        return settings

    def validation_round(self, step: int) -> int:
        """How many validations an uninterrupted run makes before the one at ``step`` (verl-agent's validation
        environments move to their next game at every validation, so the draw depends on it)."""
        points = sorted(
            ({0} if self.val_at_start else set())
            | {k for k in range(1, self.max_num_steps + 1) if self.val_period > 0 and k % self.val_period == 0}
            | ({self.max_num_steps} if self.val_at_end else set())
        )
        return points.index(step) if step in points else len([k for k in points if k < step])


def pad_rows(train_data: dict[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
    """Append copies of row 0 with ``sample_mask`` and ``token_mask`` zeroed until the row count is a multiple of
    ``multiple``: NeMo RL divides the data into whole global batches, and masked rows add nothing to the loss
    (``HolderPOLossFn`` normalises by the global count of valid rows)."""
    rows = int(train_data["input_ids"].shape[0])
    extra = -rows % multiple
    if extra == 0:
        return train_data
    out = {}
    for key, value in train_data.items():
        filler = value[:1].expand(extra, *value.shape[1:])
        if key in ("sample_mask", "token_mask"):
            filler = torch.zeros_like(filler)
        out[key] = torch.cat([value, filler], dim=0)
    return out


def pad_columns(train_data: dict[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
    """Pad every [B, T] tensor with zeros to a width that is a multiple of ``multiple`` (NeMo RL's
    ``make_sequence_length_divisible_by``, as ``batched_message_log_to_flat_message`` pads for ``grpo_train``);
    ``input_lengths`` is unchanged, so the padding is never attended to or trained on."""
    width = int(train_data["input_ids"].shape[1])
    extra = -width % multiple
    if extra == 0:
        return train_data
    return {
        k: torch.nn.functional.pad(v, (0, extra)) if v.dim() == 2 and v.shape[1] == width else v
        for k, v in train_data.items()
    }


def _batched(data: dict) -> Any:
    try:  # NeMo RL's container where available (policy.train / get_logprobs shard it); else the plain mapping
        from nemo_rl.distributed.batched_data_dict import BatchedDataDict
    except ImportError:
        return data
    return BatchedDataDict(data)


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


def save_checkpoint(
    policy, checkpointer, grpo_save_state: dict, master_config: Any, step: int, dataloader: Any = None
) -> str:
    """``grpo_train``'s checkpoint block: tmp dir with ``training_info.json``, policy weights / optimizer /
    tokenizer, ``train_dataloader.pt`` (``setup``'s dataloader: NeMo RL's ``setup`` restores it on resume and fails
    without the file, although this loop draws its games itself), then the atomic rename by ``finalize_checkpoint``."""
    policy.prepare_for_training()
    run_config = master_config if hasattr(master_config, "model_dump") else None  # run_config.yaml needs pydantic
    path = checkpointer.init_tmp_checkpoint(step, grpo_save_state, run_config)
    policy.save_checkpoint(
        weights_path=os.path.join(path, "policy", "weights"),
        optimizer_path=os.path.join(path, "policy", "optimizer") if checkpointer.save_optimizer else None,
        tokenizer_path=os.path.join(path, "policy", "tokenizer"),
        checkpointing_cfg=dict(section(master_config, "checkpointing")),
    )
    if dataloader is not None:
        torch.save(dataloader.state_dict(), os.path.join(path, "train_dataloader.pt"))
    checkpointer.finalize_checkpoint(path)
    return str(path)


def alfworld_per_step_train(
    policy,
    policy_generation,
    tokenizer,
    loss_fn,
    logger,
    checkpointer,
    grpo_save_state: dict,
    master_config: Any,
    *,
    train_games: Sequence[str],
    val_games: Sequence[str] = (),
    refit: Callable[[Any, Any], None],
    stop=None,
    set_temperature: Callable[[float], float] | None = None,
    dataloader: Any = None,
) -> str | None:
    """Train until ``grpo.max_num_steps`` or a stop request (module docstring); returns the stop reason or None.

    Args:
        policy: NeMo RL ``ColocatablePolicyInterface`` (``get_logprobs``, ``get_reference_policy_logprobs``,
            ``train``, ``prepare_for_*``, ``save_checkpoint``); its ``train`` is wrapped by the step hook here
            unless already wrapped (``install_step_schedule``).
        policy_generation: NeMo RL ``GenerationInterface`` (vLLM): ``generate``, ``prepare_for_generation``,
            ``finish_generation``.
        loss_fn: ``HolderPOLossFn`` (anything with ``set_step`` / ``p``).
        logger: NeMo RL ``Logger`` (``log_metrics(metrics, step, prefix=...)``).
        checkpointer: NeMo RL ``CheckpointManager``.
        grpo_save_state: ``setup``'s restored ``GRPOSaveState`` (updated in place).
        refit: ``refit(policy, policy_generation)`` pushes the policy weights into the generation engine
            (``nemo_rl.algorithms.grpo.refit_policy_generation`` with the run's colocation settings).
        stop: ``holder_nemo.nemo_rl.stop.StopRequest`` checked at every step boundary (``stop.fired`` is set).
        set_temperature: ``set(t) -> previous`` for the generation's sampling temperature, used around validation
            when ``alfworld.val_temperature`` differs from ``policy.generation.temperature``; default: NeMo RL's
            vLLM workers (``generation_settings.vllm_temperature_setter``).
        dataloader: ``setup``'s train dataloader, saved with every checkpoint because ``setup`` restores it when a
            run resumes (the run entry point passes it).
    """
    from holder_nemo.alfworld.entropy import EntropyBonusLoss
    from holder_nemo.alfworld.evaluate import format_table, nan_to_none
    from holder_nemo.alfworld.generation_settings import vllm_temperature_setter
    from holder_nemo.nemo_rl.steps import StepScheduledTrain, install_step_schedule

    settings = PerStepSettings.from_config(master_config)
    if settings.entropy_coeff > 0:
        loss_fn = EntropyBonusLoss(loss_fn, settings.entropy_coeff)
    if set_temperature is None and settings.val_temperature != settings.train_temperature:
        set_temperature = vllm_temperature_setter(policy_generation)  # fails now, not at the first validation
    if not train_games:
        raise ValueError("train_games: empty")
    if (settings.val_period or settings.val_at_start or settings.val_at_end) and not val_games:
        raise ValueError("validation is on (grpo.val_period / val_at_start / val_at_end) but val_games is empty")
    schedule = policy.train if isinstance(policy.train, StepScheduledTrain) else None
    if schedule is None:
        schedule = install_step_schedule(policy, loss_fn, grpo_save_state, logger)
    total_steps = int(grpo_save_state.get("total_steps", 0))
    if schedule.completed_steps != total_steps:
        raise RuntimeError(f"step hook at {schedule.completed_steps} completed steps, save state at {total_steps}")
    generation_stale = True
    iteration_times: list[float] = []

    def generate_mode() -> None:
        nonlocal generation_stale
        if generation_stale:
            refit(policy, policy_generation)
            generation_stale = False
        else:
            if settings.colocated:
                policy.offload_after_refit()  # as grpo_train: free the optimizer's memory for generation
            policy_generation.prepare_for_generation()

    def run_validation(step: int) -> None:
        generate_mode()
        round_index = settings.validation_round(step)
        switch = settings.val_temperature != settings.train_temperature
        if switch:
            set_temperature(settings.val_temperature)
        try:
            metrics, summary = validate_per_step(policy_generation, tokenizer, val_games, settings, round_index)
        finally:
            if switch:
                set_temperature(settings.train_temperature)
        policy_generation.finish_generation()
        best = grpo_save_state.get("alfworld_val_best")
        if best is None or metrics["success_rate"] > best["success_rate"]:
            best = {"step": step, "success_rate": metrics["success_rate"], "summary": nan_to_none(summary)}
            grpo_save_state["alfworld_val_best"] = best  # saved with the checkpoint: resumes keep the best
        metrics.update({"success_rate_best": best["success_rate"], "best_step": best["step"]})
        logger.log_metrics(metrics, step, prefix="validation")
        record = {"step": step, "round": round_index, "temperature": settings.val_temperature, **summary}
        if settings.log_dir:
            _append_json_line(Path(settings.log_dir) / "alfworld_validation.jsonl", record)
        rows = {f"validation step {step}": summary, f"best so far (step {best['step']})": best["summary"]}
        print(format_table(rows, with_paper=False), flush=True)

    if settings.val_at_start and total_steps == 0:
        run_validation(0)

    while total_steps < settings.max_num_steps:
        step = total_steps + 1
        started = time.monotonic()
        generate_mode()
        games = sample_games(train_games, settings.num_games, seed=settings.seed + step)
        episodes = run_episodes(
            nemo_rl_policy(policy_generation, tokenizer, max_prompt_tokens=settings.max_prompt_tokens),
            games,
            group_size=settings.group_size,
            config=settings.protocol,
        )
        policy_generation.finish_generation()

        samples = build_step_samples(
            episodes, invalid_action_penalty=settings.protocol.invalid_action_penalty, stats_over=settings.stats_over
        )
        batch = tokenize_step_samples(
            samples,
            tokenizer,
            max_prompt_tokens=settings.max_prompt_tokens,
            max_response_tokens=settings.max_response_tokens,
        )
        rows = len(samples)
        train_data = pad_rows(to_nemo_rl_train_data(batch), settings.train_global_batch_size)
        train_data = _batched(pad_columns(train_data, settings.sequence_multiple))
        logprob_data = _batched({k: train_data[k] for k in ("input_ids", "input_lengths", "token_mask", "sample_mask")})
        policy.prepare_for_lp_inference()
        train_data["prev_logprobs"] = policy.get_logprobs(logprob_data)["logprobs"]
        if settings.skip_reference_logprobs:
            train_data["reference_policy_logprobs"] = torch.zeros_like(train_data["prev_logprobs"])
        else:
            reference = policy.get_reference_policy_logprobs(logprob_data)["reference_logprobs"]
            train_data["reference_policy_logprobs"] = reference
        policy.prepare_for_training()
        generation_stale = True
        train_results = policy.train(train_data, loss_fn)  # the step hook sets p(step) on loss_fn first
        total_steps = step

        is_last = total_steps >= settings.max_num_steps
        if (settings.val_period > 0 and total_steps % settings.val_period == 0) or (settings.val_at_end and is_last):
            run_validation(total_steps)

        iteration_times.append(time.monotonic() - started)
        grpo_save_state["total_steps"] = grpo_save_state["current_step"] = total_steps
        grpo_save_state["consumed_samples"] = int(grpo_save_state.get("consumed_samples", 0)) + settings.num_games
        grpo_save_state["total_valid_tokens"] = int(grpo_save_state.get("total_valid_tokens", 0)) + int(
            batch.response_mask.sum()
        )
        why = stop.reason(statistics.fmean(iteration_times)) if stop is not None else None
        if why is not None:
            stop.fired = why
        saving = settings.checkpointing_enabled and (
            is_last or why is not None or (settings.save_period > 0 and total_steps % settings.save_period == 0)
        )
        if saving:
            save_checkpoint(policy, checkpointer, grpo_save_state, master_config, total_steps, dataloader)

        metrics = {
            "loss": float(train_results["loss"]) if "loss" in train_results else float("nan"),
            "grad_norm": float(train_results["grad_norm"]) if "grad_norm" in train_results else float("nan"),
            "p": float(loss_fn.p),
            "success_rate": success_rate(episodes),
            "episode_steps_mean": statistics.fmean(len(ep.steps) for ep in episodes),
            "invalid_action_frac": sum(ep.num_invalid for ep in episodes) / rows,
            "rows": rows,
            "padded_rows": int(train_data["input_ids"].shape[0]) - rows,
            "advantage_abs_mean": float(batch.advantages.abs().mean()),
            "updates": int(train_data["input_ids"].shape[0]) // settings.train_global_batch_size,
            "response_tokens": int(batch.response_mask.sum()),
            "step_time_s": iteration_times[-1],
        }
        logger.log_metrics(metrics, total_steps, prefix="train")
        print(
            f"holder_nemo alfworld step {total_steps}/{settings.max_num_steps}: p={metrics['p']:.4f} "
            f"success={metrics['success_rate']:.3f} rows={rows} loss={metrics['loss']:.4g}",
            flush=True,
        )
        if why is not None:
            print(f"holder_nemo: stopping after step {total_steps} ({why})", flush=True)
            return why
    return None
