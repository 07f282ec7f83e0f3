"""ALFWorld training on NeMo RL v0.7.0 with the paper's per-step sample layout, in place of ``grpo_train``.

The recipe names this module as ALFWorld's NeMo RL component (``env.alfworld._component_:
holder_nemo.alfworld.training``); ``python -m holder_nemo.nemo_rl.run_grpo`` then calls, in this order:

* ``check(config)``: every setting the loop reads, before Ray and the GPUs start (also ``holderpo recipe check``);
* ``training(config).datasets(config)``: the game files of ``data.{train,validation}.data_path``;
* NeMo RL's ``grpo.setup`` (policy, vLLM, logger, checkpointer, restored save state), as for any recipe;
* ``training(config).train(session, stop)``: ``PerStepLoop(...).run()``, below.

``grpo_train`` trains one row per episode; the paper trains one row per environment step (docs/alfworld.md,
"Sample layout"). Per training step k (= completed steps + 1) the loop

1. refits the generation weights from the policy when they are stale (NeMo RL's ``refit_policy_generation``),
   else ``policy_generation.prepare_for_generation()``;
2. draws ``grpo.num_prompts_per_step`` games with ``rollout.sample_games(train_games, n, seed=grpo.seed + k)`` (a
   pure function of the step, so a resumed run plays the games the uninterrupted run would), each played by
   ``grpo.num_generations_per_prompt`` environments in lock-step through ``rollout.nemo_rl_policy``;
3. builds per-step rows with verl-agent's GRPO advantage (``step_samples``), padded with masked rows
   (``sample_mask`` 0) to a multiple of ``policy.train_global_batch_size``: NeMo RL trains whole global batches;
4. computes ``prev_logprobs`` / ``reference_policy_logprobs`` from the policy, as ``grpo_train`` does;
5. trains with ``policy.train(train_data, loss_fn)``: HölderPO minus ``alfworld.entropy_coeff`` x the estimated
   token-mean entropy (``entropy.EntropyBonusLoss``); the step hook (``holder_nemo.nemo_rl.steps``) sets p(k);
6. validates every ``grpo.val_period`` steps under the paper's protocol (128 episodes on ``valid_seen`` at
   temperature 0.4, a new draw of verl-agent's validation environments each time);
7. saves through NeMo RL's ``CheckpointManager`` every ``checkpointing.save_period`` steps, at the last step and at a
   stop request (``holder_nemo.run_control.StopRequest``), after which it returns the reason.

Resume: ``grpo_save_state["total_steps"]`` restored by ``setup`` is the number of completed steps; the loop continues
at the next step with p(total_steps + 1), exactly as the uninterrupted run. Not honoured here (see docs): NeMo RL's
``checkpoint_must_save_by`` (use ``HOLDERPO_SLURM_SAVE_MARGIN_S``), the dataloader ``setup`` builds (games come
from ``sample_games``; it is still saved, because ``setup`` restores it on resume).

Importable without NeMo RL or Ray (``holderpo recipe check`` runs ``check`` offline).
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from holder_nemo.alfworld.protocol import ProtocolConfig
from holder_nemo.alfworld.rollout import nemo_rl_policy, run_episodes, sample_games, validation_games
from holder_nemo.alfworld.step_samples import (
    TokenizedBatch,
    build_step_samples,
    success_rate,
    to_nemo_rl_train_data,
    tokenize_step_samples,
)
from holder_nemo.config.errors import ConfigError, problems_from_pydantic
from holder_nemo.nemo_rl.components import COMPONENT_KEY

# ------------------------------------------------------------------------------------------------ 1. settings
# The recipe's ``alfworld`` section holds the protocol settings NeMo RL's GRPO config has no key for; every other
# setting comes from NeMo RL's own sections, read as required keys (NeMo RL's ``MasterConfig`` requires them; no
# default is restated here). Settings the loop would ignore are errors naming the key.

ALFWORLD_KEYS = ("advantage_stats_over", "entropy_coeff", "val_temperature", "val_seed", "task_types")
# The defaults of the alfworld section (verl-agent's values); None in the recipe means these.
STATS_OVER, ENTROPY_COEFF, VAL_SEED = "steps", 0.0, 1000
# GRPO settings the loop does not read (it computes verl-agent's advantage itself): only these values agree.
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


def lookup(config: Any, dotted: str) -> Any:
    """``config[a][b][c]`` for ``"a.b.c"`` (None where absent); the top level may be a pydantic ``MasterConfig``."""
    *parents, leaf = dotted.split(".")
    node: Any = config
    for part in parents:
        node = section(node, part)
    return node.get(leaf) if isinstance(node, Mapping) else getattr(node, leaf, None)


def _check_alfworld_section(alfworld: Mapping[str, Any]) -> None:
    if "sample_layout" in alfworld:  # the key that chose the per-episode layout, removed
        raise ConfigError(
            "alfworld.sample_layout",
            "no longer a setting: ALFWorld always trains one row per environment step "
            "(the paper's layout); NeMo RL v0.7's per-episode multi-turn rollout cannot train it "
            f"(docs/alfworld.md, 'Sample layout'); delete the key, got {alfworld['sample_layout']!r}",
        )
    unknown = sorted(set(alfworld) - set(ALFWORLD_KEYS))
    if unknown:
        raise ConfigError("alfworld", f"unknown keys {unknown}; allowed {list(ALFWORLD_KEYS)}")


def _protocol(config: Any) -> ProtocolConfig:
    """``env.alfworld`` as the protocol (the ``_component_`` key names the code, not a setting)."""
    env = {k: v for k, v in (section(config, "env").get("alfworld") or {}).items() if k != COMPONENT_KEY}
    return ProtocolConfig.from_dict(env)


def _context_parallel(policy: Mapping[str, Any]) -> int:
    cp = int((policy.get("dtensor_cfg") or {}).get("context_parallel_size") or 1)
    megatron = policy.get("megatron_cfg") or {}
    return max(cp, int(megatron.get("context_parallel_size") or 1)) if megatron.get("enabled") else cp


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
        """Read and check every setting; ``ConfigError`` naming the key for one the loop would ignore or reject."""
        alfworld = section(config, "alfworld")
        _check_alfworld_section(alfworld)
        for key, value in PER_STEP_FIXED.items():
            got = lookup(config, key)
            if got is not None and got != value:
                raise ConfigError(
                    key,
                    f"must be {value} for ALFWorld's per-step layout (the loop computes verl-agent's "
                    f"advantage itself and would ignore it), got {got!r}",
                )
        grpo, policy, ckpt = section(config, "grpo"), section(config, "policy"), section(config, "checkpointing")
        generation = policy["generation"]

        def given(key: str, default: Any) -> Any:
            return default if alfworld.get(key) is None else alfworld[key]

        settings = cls(
            num_games=int(grpo["num_prompts_per_step"]),
            group_size=int(grpo["num_generations_per_prompt"]),
            max_num_steps=int(grpo["max_num_steps"]),
            seed=int(grpo["seed"]),
            val_period=int(grpo["val_period"]),
            val_at_start=bool(grpo["val_at_start"]),
            val_at_end=bool(grpo["val_at_end"]),
            max_val_samples=int(grpo["max_val_samples"] or 0),
            skip_reference_logprobs=bool(grpo.get("skip_reference_policy_logprobs_calculation")),
            protocol=_protocol(config),
            stats_over=str(given("advantage_stats_over", STATS_OVER)),
            entropy_coeff=float(given("entropy_coeff", ENTROPY_COEFF)),
            train_temperature=float(generation["temperature"]),
            val_temperature=float(given("val_temperature", generation["temperature"])),
            val_seed=int(given("val_seed", VAL_SEED)),
            log_dir=section(config, "logger").get("log_dir"),
            max_prompt_tokens=int(section(config, "data")["max_input_seq_length"]),
            max_response_tokens=int(generation["max_new_tokens"]),
            train_global_batch_size=int(policy["train_global_batch_size"]),
            sequence_multiple=int(policy["make_sequence_length_divisible_by"]),
            colocated=bool((generation.get("colocated") or {}).get("enabled")),
            checkpointing_enabled=bool(ckpt["enabled"]),
            save_period=int(ckpt["save_period"]),
        )
        settings._validate(policy)
        return settings

    def _validate(self, policy: Mapping[str, Any]) -> None:
        # The step's counts (grpo.num_prompts_per_step, ...) are the NeMo RL pre-flight's (check_counts), which runs
        # before this check and before training: checking them here too printed each error twice.
        if self.sequence_multiple < 1:
            raise ConfigError("policy.make_sequence_length_divisible_by", f"must be >= 1, got {self.sequence_multiple}")
        if self.stats_over not in ("steps", "episodes"):
            raise ConfigError(
                "alfworld.advantage_stats_over", f"must be 'steps' or 'episodes', got {self.stats_over!r}"
            )
        if not self.entropy_coeff >= 0:
            raise ConfigError("alfworld.entropy_coeff", f"must be >= 0, got {self.entropy_coeff}")
        if not self.val_temperature > 0:
            raise ConfigError("alfworld.val_temperature", f"must be > 0 or null, got {self.val_temperature}")
        if self.validating and self.max_val_samples < 1:
            raise ConfigError("grpo.max_val_samples", f"validation episodes must be >= 1, got {self.max_val_samples}")
        # the entropy estimate needs each row's next-token log-probs whole: CP and packing hand the loss a shard
        whole_rows = _context_parallel(policy) == 1 and not (policy.get("sequence_packing") or {}).get("enabled")
        if self.entropy_coeff > 0 and not whole_rows:
            raise ConfigError(
                "alfworld.entropy_coeff",
                "> 0 needs whole rows in the loss: context_parallel_size 1 and policy.sequence_packing.enabled false",
            )

    @property
    def validating(self) -> bool:
        return self.val_period > 0 or self.val_at_start or self.val_at_end

    def validation_round(self, step: int) -> int:
        """How many validations an uninterrupted run makes before the one at ``step`` (verl-agent's validation
        environments move to their next game at every validation, so the draw depends on it)."""
        points = sorted(
            ({0} if self.val_at_start else set())
            | {k for k in range(1, self.max_num_steps + 1) if self.val_period > 0 and k % self.val_period == 0}
            | ({self.max_num_steps} if self.val_at_end else set())
        )
        return points.index(step) if step in points else len([k for k in points if k < step])


# ---------------------------------------------------------------------------------------------------- 2. data


class GameFileDataset(torch.utils.data.Dataset):
    """Game files as NeMo RL ``DatumSpec`` rows (``rl_collate_fn`` accepts them), so ``setup()`` gets a dataset
    without a NeMo RL dataset name. The loop draws games itself; the rows carry the file in
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
        raise ConfigError(
            "data.*.data_path",
            f"no such directory {str(path)!r} (run `holderpo data prepare alfworld DIR` and set ALFWORLD_DATA, or "
            "`python -m holder_nemo.alfworld make-games DIR` for the offline games)",
        )
    types = tuple(task_types) if task_types else tuple(TASK_TYPES)
    return GameFileDataset(list_games(path.parent, path.name, types))


def alfworld_game_datasets(config: Any) -> tuple[GameFileDataset, GameFileDataset | None]:
    """(train, validation) game-file datasets from ``data.train.data_path`` / ``data.validation.data_path`` (the
    split folders of the ALFWorld data); validation is None when the recipe has no validation dataset."""
    data = section(config, "data")
    task_types = section(config, "alfworld").get("task_types")
    out = []
    for split in ("train", "validation"):
        entry = data.get(split)
        if entry is None and split == "validation":
            out.append(None)
            continue
        if not isinstance(entry, dict) or not entry.get("data_path"):
            raise ConfigError(f"data.{split}.data_path", "ALFWorld training needs one ALFWorld split folder")
        out.append(game_file_dataset(entry["data_path"], task_types))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------- 3. rows for NeMo RL


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


# ---------------------------------------------------------------------------------- 4. validation temperature


def vllm_temperature_setter(policy_generation: Any) -> Callable[[float], float]:
    """``set(temperature) -> previous temperature`` for NeMo RL's ``VllmGeneration`` (every worker actor).

    NeMo RL v0.7.0's ``VllmGeneration.generate(data, greedy)`` takes no sampling settings: each vLLM worker actor
    builds its ``SamplingParams`` at every call from its own config (``_build_sampling_params`` reads
    ``self.cfg["temperature"]``). So the entry is written on every worker actor through Ray's ``__ray_call__`` (run
    a function on the actor instance) and on the driver's copy. This relies on two v0.7.0 internals
    (``worker_group.workers`` and the worker's ``cfg``), checked in NeMo RL's source by a ``nemo_rl``-marked test; a
    backend without them (Megatron inference) is refused rather than validating at the training temperature.
    """
    workers = getattr(getattr(policy_generation, "worker_group", None), "workers", None)
    if not workers:
        raise TypeError(
            f"alfworld.val_temperature: cannot change the sampling temperature of {type(policy_generation).__name__} "
            "(no vLLM worker actors); use the vLLM generation backend or set alfworld.val_temperature to "
            "policy.generation.temperature"
        )

    # Nested, so Ray pickles it by value: the vLLM worker's venv need not import holder_nemo.alfworld.
    def swap(worker: Any, temperature: float) -> float:
        previous = float(worker.cfg["temperature"])
        worker.cfg["temperature"] = float(temperature)
        return previous

    def set_temperature(temperature: float) -> float:
        import ray

        previous = ray.get([w.__ray_call__.remote(swap, temperature) for w in workers])
        if isinstance(getattr(policy_generation, "cfg", None), dict):
            policy_generation.cfg["temperature"] = float(temperature)
        return previous[0]

    return set_temperature


# ----------------------------------------------------------------------------------------------- 5. checkpoint


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


# ----------------------------------------------------------------------------------------------------- 6. loop


class PerStepLoop:
    """One run of the per-step loop on the objects ``nemo_rl.algorithms.grpo.setup`` returns (module docstring).

    Args:
        policy: NeMo RL ``ColocatablePolicyInterface`` (``get_logprobs``, ``get_reference_policy_logprobs``,
            ``train``, ``prepare_for_*``, ``save_checkpoint``); its ``train`` is wrapped by the step hook here
            unless already wrapped (``install_step_schedule``).
        generation: NeMo RL ``GenerationInterface`` (vLLM): ``generate``, ``prepare_for_generation``,
            ``finish_generation``.
        loss_fn: ``HolderPOLossFn`` (anything with ``set_step`` / ``p``).
        logger: NeMo RL ``Logger`` (``log_metrics(metrics, step, prefix=...)``).
        checkpointer: NeMo RL ``CheckpointManager``.
        state: ``setup``'s restored ``GRPOSaveState`` (updated in place).
        config: the master config (a mapping or NeMo RL's ``MasterConfig``).
        train_games / val_games: game files (``alfworld_game_datasets``).
        refit: ``refit(policy, generation)`` pushes the policy weights into the generation engine
            (``nemo_rl.algorithms.grpo.refit_policy_generation`` with the run's colocation settings).
        stop: ``holder_nemo.run_control.StopRequest`` checked at every step boundary (``stop.fired`` is set).
        set_temperature: ``set(t) -> previous`` for the generation's sampling temperature, used around validation
            when ``alfworld.val_temperature`` differs from ``policy.generation.temperature``; default: NeMo RL's
            vLLM workers (``vllm_temperature_setter``, resolved now so a missing hook fails at start-up).
        dataloader: ``setup``'s train dataloader, saved with every checkpoint because ``setup`` restores it when a
            run resumes.
        progress: ``holder_nemo.nemo_rl.progress.ProgressRecorder``; each validation is recorded there (steps and
            checkpoints are recorded by the entry point's own hooks).
    """

    def __init__(
        self,
        policy: Any,
        generation: Any,
        tokenizer: Any,
        loss_fn: Any,
        logger: Any,
        checkpointer: Any,
        state: dict,
        config: Any,
        *,
        train_games: Sequence[str],
        val_games: Sequence[str] = (),
        refit: Callable[[Any, Any], None],
        stop: Any = None,
        set_temperature: Callable[[float], float] | None = None,
        dataloader: Any = None,
        progress: Any = None,
    ) -> None:
        from holder_nemo.alfworld.entropy import EntropyBonusLoss
        from holder_nemo.nemo_rl.steps import StepScheduledTrain, install_step_schedule

        self.settings = s = PerStepSettings.from_config(config)
        self.policy, self.generation, self.tokenizer, self.logger = policy, generation, tokenizer, logger
        self.checkpointer, self.state, self.config = checkpointer, state, config
        self.refit, self.stop, self.dataloader, self.progress = refit, stop, dataloader, progress
        self.loss_fn = EntropyBonusLoss(loss_fn, s.entropy_coeff) if s.entropy_coeff else loss_fn
        self.train_games, self.val_games = list(train_games), list(val_games)
        if not self.train_games:
            raise ValueError("train_games: empty")
        if s.validating and not self.val_games:
            raise ValueError("validation is on (grpo.val_period / val_at_start / val_at_end) but val_games is empty")
        self.switch_temperature = s.val_temperature != s.train_temperature
        if set_temperature is None and self.switch_temperature:
            set_temperature = vllm_temperature_setter(generation)
        self.set_temperature = set_temperature
        schedule = policy.train if isinstance(policy.train, StepScheduledTrain) else None
        schedule = schedule or install_step_schedule(policy, loss_fn, state, logger)
        self.total_steps = int(state.get("total_steps", 0))
        if schedule.completed_steps != self.total_steps:
            raise RuntimeError(
                f"step hook at {schedule.completed_steps} completed steps, save state at {self.total_steps}"
            )
        self.generation_stale = True
        self.iteration_times: list[float] = []

    def generate_mode(self) -> None:
        """Weights into the generation engine when stale (refit), else wake it as ``grpo_train`` does."""
        if self.generation_stale:
            self.refit(self.policy, self.generation)
            self.generation_stale = False
            return
        if self.settings.colocated:
            self.policy.offload_after_refit()  # as grpo_train: free the optimizer's memory for generation
        self.generation.prepare_for_generation()

    def rows(self, step: int) -> tuple[list, TokenizedBatch, dict]:
        """Play the step's games; (episodes, tokenized per-step rows, NeMo RL train data with log-probs)."""
        s = self.settings
        self.generate_mode()
        games = sample_games(self.train_games, s.num_games, seed=s.seed + step)
        player = nemo_rl_policy(self.generation, self.tokenizer, max_prompt_tokens=s.max_prompt_tokens)
        episodes = run_episodes(player, games, group_size=s.group_size, config=s.protocol)
        self.generation.finish_generation()
        samples = build_step_samples(
            episodes, invalid_action_penalty=s.protocol.invalid_action_penalty, stats_over=s.stats_over
        )
        batch = tokenize_step_samples(
            samples, self.tokenizer, max_prompt_tokens=s.max_prompt_tokens, max_response_tokens=s.max_response_tokens
        )
        data = pad_rows(to_nemo_rl_train_data(batch), s.train_global_batch_size)
        data = _batched(pad_columns(data, s.sequence_multiple))
        logprob_data = _batched({k: data[k] for k in ("input_ids", "input_lengths", "token_mask", "sample_mask")})
        self.policy.prepare_for_lp_inference()
        data["prev_logprobs"] = self.policy.get_logprobs(logprob_data)["logprobs"]
        if s.skip_reference_logprobs:
            data["reference_policy_logprobs"] = torch.zeros_like(data["prev_logprobs"])
        else:
            reference = self.policy.get_reference_policy_logprobs(logprob_data)
            data["reference_policy_logprobs"] = reference["reference_logprobs"]
        return episodes, batch, data

    def step(self, step: int) -> str | None:
        """One training step (module docstring); returns the stop reason, if a stop was requested."""
        s, started = self.settings, time.monotonic()
        episodes, batch, data = self.rows(step)
        self.policy.prepare_for_training()
        self.generation_stale = True
        results = self.policy.train(data, self.loss_fn)  # the step hook sets p(step) on loss_fn first
        self.total_steps = step
        is_last = step >= s.max_num_steps
        if (s.val_period > 0 and step % s.val_period == 0) or (s.val_at_end and is_last):
            self.validate(step)
        self.iteration_times.append(time.monotonic() - started)
        state = self.state
        state["total_steps"] = state["current_step"] = step
        state["consumed_samples"] = int(state.get("consumed_samples", 0)) + s.num_games
        valid_tokens = int(batch.response_mask.sum())
        state["total_valid_tokens"] = int(state.get("total_valid_tokens", 0)) + valid_tokens
        why = self.stop.reason(statistics.fmean(self.iteration_times)) if self.stop is not None else None
        if why is not None:
            self.stop.fired = why
        periodic = s.save_period > 0 and step % s.save_period == 0
        if s.checkpointing_enabled and (is_last or why is not None or periodic):
            save_checkpoint(self.policy, self.checkpointer, state, self.config, step, self.dataloader)
        self.log(step, episodes, batch, data, results)
        return why

    def validate(self, step: int) -> None:
        """``grpo.max_val_samples`` episodes on games drawn as verl-agent's validation environments draw them (round
        = validations before this one), at ``alfworld.val_temperature``; success overall and per Table 3 column
        with counts, the best validation so far (kept in the save state, so a resumed run keeps it), one JSON line
        in ``<logger.log_dir>/alfworld_validation.jsonl``, the table printed."""
        from holder_nemo.alfworld.evaluate import format_table, nan_to_none, summarize

        s = self.settings
        self.generate_mode()
        round_index = s.validation_round(step)
        games = validation_games(self.val_games, s.max_val_samples, s.val_seed, round_index)
        player = nemo_rl_policy(self.generation, self.tokenizer, max_prompt_tokens=s.max_prompt_tokens)
        if self.switch_temperature:
            self.set_temperature(s.val_temperature)
        try:
            episodes = run_episodes(player, games, group_size=1, config=s.protocol)
        finally:
            if self.switch_temperature:
                self.set_temperature(s.train_temperature)
        self.generation.finish_generation()
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
        best = self.state.get("alfworld_val_best")
        if best is None or metrics["success_rate"] > best["success_rate"]:
            best = {"step": step, "success_rate": metrics["success_rate"], "summary": nan_to_none(summary)}
            self.state["alfworld_val_best"] = best  # saved with the checkpoint: resumes keep the best
        metrics.update({"success_rate_best": best["success_rate"], "best_step": best["step"]})
        self.logger.log_metrics(metrics, step, prefix="validation")
        if s.log_dir:
            record = {"step": step, "round": round_index, "temperature": s.val_temperature, **summary}
            path = Path(s.log_dir) / "alfworld_validation.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(nan_to_none(record), allow_nan=False) + "\n")
        rows = {f"validation step {step}": summary, f"best so far (step {best['step']})": best["summary"]}
        print(format_table(rows, with_paper=False), flush=True)
        if self.progress is not None:
            self.progress.completed("validation", step)

    def log(self, step: int, episodes: list, batch: TokenizedBatch, data: dict, results: dict) -> None:
        s, rows = self.settings, len(batch.advantages)
        metrics = {
            "loss": float(results.get("loss", float("nan"))),
            "grad_norm": float(results.get("grad_norm", float("nan"))),
            "p": float(self.loss_fn.p),
            "success_rate": success_rate(episodes),
            "episode_steps_mean": statistics.fmean(len(ep.steps) for ep in episodes),
            "invalid_action_frac": sum(ep.num_invalid for ep in episodes) / rows,
            "rows": rows,
            "padded_rows": int(data["input_ids"].shape[0]) - rows,
            "advantage_abs_mean": float(batch.advantages.abs().mean()),
            "updates": int(data["input_ids"].shape[0]) // s.train_global_batch_size,
            "response_tokens": int(batch.response_mask.sum()),
            "step_time_s": self.iteration_times[-1],
        }
        self.logger.log_metrics(metrics, step, prefix="train")
        print(
            f"holder_nemo alfworld step {step}/{s.max_num_steps}: p={metrics['p']:.4f} "
            f"success={metrics['success_rate']:.3f} rows={rows} loss={metrics['loss']:.4g}",
            flush=True,
        )

    def run(self) -> str | None:
        """Train until ``grpo.max_num_steps`` or a stop request; returns the stop reason or None."""
        if self.settings.val_at_start and self.total_steps == 0:
            self.validate(0)
        while self.total_steps < self.settings.max_num_steps:
            why = self.step(self.total_steps + 1)
            if why is not None:
                print(f"holder_nemo: stopping after step {self.total_steps} ({why})", flush=True)
                return why
        return None


# ------------------------------------------------------------------------- 7. the component run_grpo calls
# (protocol: holder_nemo.nemo_rl.components)


def register(env_name: str, config: Any) -> list[str]:
    """Nothing to register: the loop plays the games in the driver process, so NeMo RL builds no ALFWorld
    environment actor and no data processor."""
    return []


def check(config: Any) -> list[tuple[str, str]]:
    """Every setting the loop reads (``PerStepSettings``), as (dotted key, message), offline and before Ray."""
    from pydantic import ValidationError

    try:
        PerStepSettings.from_config(config)
    except ConfigError as exc:
        return list(exc.problems)
    except ValidationError as exc:  # env.alfworld, the protocol's own schema
        return problems_from_pydantic(exc, "env.alfworld")
    return []


def training(config: Any) -> PerStepTraining:
    """The per-step loop, in place of ``grpo_train``."""
    return PerStepTraining()


class PerStepTraining:
    """``components.Training`` for ALFWorld: game-file datasets, then ``PerStepLoop`` on ``run_grpo``'s session."""

    def datasets(self, config: Any) -> tuple[GameFileDataset, GameFileDataset | None, dict, dict]:
        train, validation = alfworld_game_datasets(config)
        return train, validation, {}, {}

    def train(self, session: Any, stop: Any) -> None:
        from nemo_rl.algorithms.grpo import refit_policy_generation

        config = session.master_config
        generation = config.policy["generation"]
        PerStepLoop(
            session.policy,
            session.policy_generation,
            session.tokenizer,
            session.loss_fn,
            session.logger,
            session.checkpointer,
            session.grpo_state,
            config,
            train_games=session.dataset.game_files,
            val_games=session.val_dataset.game_files if session.val_dataset is not None else (),
            refit=functools.partial(
                refit_policy_generation,
                colocated_inference=generation["colocated"]["enabled"],
                _refit_buffer_size_gb=config.policy.get("refit_buffer_size_gb"),
            ),
            stop=stop,
            dataloader=session.dataloader,
            progress=getattr(session, "progress", None),
        ).run()
