"""ALFWorld as a NeMo RL component (``env.alfworld._component_: holder_nemo.alfworld.nemo_rl_component``).

What ``holder_nemo.nemo_rl.run_grpo`` gets from it (the protocol is ``holder_nemo.nemo_rl.components``):

* ``register``: the ``alfworld`` environment (``nemo_rl_env.AlfworldEnvironment``, a Ray actor run with the driver's
  Python, so ALFWorld/TextWorld must be installed there) and the ``alfworld`` data processor, for NeMo RL's own
  multi-turn rollout (``alfworld.sample_layout: per_episode``);
* ``check``: the ``alfworld`` section and, for ``per_step``, every setting the per-step loop reads
  (``per_step_settings``), offline and before Ray;
* ``training``: with ``alfworld.sample_layout: per_step`` (the paper's layout), the per-step loop
  (``per_step_loop``) instead of ``grpo_train``, on game-file datasets listed from
  ``data.{train,validation}.data_path``.

Importable without NeMo RL or Ray (``holderpo recipe check`` runs ``check`` offline).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from holder_nemo.alfworld.per_step_settings import PER_STEP, sample_layout, section

ACTOR_FQN = "holder_nemo.alfworld.nemo_rl_env.AlfworldEnvironment"
PROCESSOR = "alfworld"


def register(env_name: str, config: Any) -> list[str]:
    """The environment under ``env_name`` and the ``alfworld`` data processor, in NeMo RL's registries."""
    from holder_nemo.alfworld.nemo_rl_adapter import alfworld_data_processor
    from holder_nemo.nemo_rl.components import register_data_processor, register_environment

    return [register_environment(env_name, ACTOR_FQN), register_data_processor(PROCESSOR, alfworld_data_processor)]


def check(config: Any) -> list[tuple[str, str]]:
    """The ``alfworld`` section and the per-step loop's settings, as (dotted key, message)."""
    try:
        sample_layout(config)
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        return [(key if message else "alfworld", message or str(exc))]
    return []


def training(config: Any) -> PerStepTraining | None:
    """The per-step loop for ``alfworld.sample_layout: per_step``, else None (NeMo RL's own rollout)."""
    return PerStepTraining() if sample_layout(config) == PER_STEP else None


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
            raise ValueError(f"data.{split}.data_path: alfworld.sample_layout per_step needs one ALFWorld split folder")
        out.append(game_file_dataset(entry["data_path"], task_types))
    return out[0], out[1]


class PerStepTraining:
    """``components.Training`` for the per-step layout: game-file datasets, then ``alfworld_per_step_train``."""

    def datasets(self, config: Any) -> tuple[GameFileDataset, GameFileDataset | None, dict, dict]:
        train, validation = alfworld_game_datasets(config)
        return train, validation, {}, {}

    def train(self, session: Any, stop: Any) -> None:
        from nemo_rl.algorithms.grpo import refit_policy_generation

        from holder_nemo.alfworld.per_step_loop import alfworld_per_step_train

        config = session.master_config
        generation = config.policy["generation"]
        alfworld_per_step_train(
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
        )
