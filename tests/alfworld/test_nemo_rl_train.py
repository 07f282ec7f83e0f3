"""The per-step ALFWorld training loop that replaces ``grpo_train`` (``holder_nemo.alfworld.training``), on CPU.

Real: the offline ALFWorld games, the recipe (loaded with holder_nemo.config, shrunk by overrides), a random tiny
Qwen2 that computes the log-probs and is trained, ``HolderPOLossFn``, the step hook, the stop contract, and NeMo RL's
``CheckpointManager`` where ``nemo_rl`` is importable. Stand-ins (GPU-only in NeMo RL, see ``alfworld_doubles``):
the Ray training worker group (``HFTrainPolicy``), vLLM generation (``AlternatingGeneration``: the planner's command
on even rows, "look" on odd ones, so a group on the 4-step game has one win and one loss), the weight refit (copies
a counter) and, without ``nemo_rl``, the checkpoint manager and the logger.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import signal
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from alfworld_doubles import (
    CHAT_TEMPLATE,
    AlternatingGeneration,
    DirCheckpointer,
    HFTrainPolicy,
    RecordingLogger,
)

from holder_nemo.config import ConfigError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)

WIN, LOSE = "look_at_obj_in_light", "pick_and_place_simple"  # 4-step plan (won at the step limit 4) / 5-step plan
STEPS = 3
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "holderpo_alfworld_qwen2.5-1.5b.yaml"


def _config(checkpoint_dir):
    from omegaconf import OmegaConf

    from holder_nemo.config import load_recipe

    cfg = load_recipe(
        RECIPE,
        [
            "grpo.num_prompts_per_step=2",
            "grpo.num_generations_per_prompt=2",
            f"grpo.max_num_steps={STEPS}",  # also the schedule length: p(k) = 1 - 2k/3
            "grpo.max_rollout_turns=4",
            "grpo.val_period=2",  # validation after step 2: 4 episodes drawn from the two games
            "grpo.val_at_start=false",
            "grpo.val_at_end=false",
            "grpo.max_val_samples=4",
            f"logger.log_dir={checkpoint_dir}/../logs",
            "policy.train_global_batch_size=6",  # 16 rows per step -> padded to 18 = 3 global batches
            "policy.generation.max_new_tokens=64",
            "policy.make_sequence_length_divisible_by=8",
            "data.max_input_seq_length=1536",  # char tokenizer: a prompt is ~1,250 tokens
            "checkpointing.enabled=true",
            f"checkpointing.checkpoint_dir={checkpoint_dir}",
            "checkpointing.save_period=10",
        ],
    )
    return OmegaConf.to_container(cfg, resolve=True)


def _checkpointer(config):
    if importlib.util.find_spec("nemo_rl") is not None:
        from holder_nemo.nemo_rl.master_config import typed_dict_for_old_python

        typed_dict_for_old_python()  # before any nemo_rl TypedDict exists (pydantic on Python < 3.12)
        from nemo_rl.utils.checkpoint import CheckpointManager

        return CheckpointManager(config["checkpointing"])
    return DirCheckpointer(config["checkpointing"]["checkpoint_dir"])


def _tokenizer():
    from holder_nemo.reference.model import build_char_tokenizer

    tokenizer = build_char_tokenizer(string.printable)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _model(tokenizer, weights=None):
    from tiny_qwen2 import tiny_qwen2
    from transformers import AutoModelForCausalLM

    if weights is not None:
        return AutoModelForCausalLM.from_pretrained(weights)
    torch.manual_seed(0)
    return tiny_qwen2(tokenizer)


class Run:
    """One process's worth of objects, as ``run_grpo`` gets them from ``setup()``."""

    def __init__(self, config, game_by_task, tokenizer, weights=None, grpo_save_state=None):
        from holder_nemo.alfworld.games import SPECS, task_description
        from holder_nemo.nemo_rl.loss import HolderPOLossFn

        self.config = config
        self.policy = HFTrainPolicy(_model(tokenizer, weights), tokenizer, config["policy"]["train_global_batch_size"])
        plans = {task_description(SPECS[WIN]) + ".": SPECS[WIN].expert_plan}
        self.generation = AlternatingGeneration(tokenizer, plans)
        self.generation.temperature = config["policy"]["generation"]["temperature"]
        self.temperatures: list[float] = []  # the sampling temperature of every generate call
        self.generation.prepare_for_generation = lambda *a, **k: None
        self.generation.finish_generation = lambda *a, **k: None
        self.loss_fn = HolderPOLossFn(config["loss_fn"])
        self.logger = RecordingLogger()
        self.checkpointer = _checkpointer(config)
        self.state = grpo_save_state or {"total_steps": 0, "current_step": 0, "consumed_samples": 0}
        self.refits = 0
        self.tokenizer = tokenizer
        self.games = [str(game_by_task[WIN]), str(game_by_task[LOSE])]

    def set_temperature(self, temperature: float) -> float:
        """What ``training.vllm_temperature_setter`` does to NeMo RL's vLLM workers, on the stand-in."""
        previous, self.generation.temperature = self.generation.temperature, temperature
        return previous

    def refit(self, policy, generation):
        assert policy is self.policy and generation is self.generation
        self.refits += 1

    def train(self, stop=None):
        from holder_nemo.alfworld.training import PerStepLoop

        return PerStepLoop(
            self.policy,
            self.generation,
            self.tokenizer,
            self.loss_fn,
            self.logger,
            self.checkpointer,
            self.state,
            self.config,
            train_games=self.games,
            val_games=self.games,
            refit=self.refit,
            stop=stop,
            set_temperature=self.set_temperature,
        ).run()


def p_at(step: int) -> float:
    return 1.0 - 2.0 * step / STEPS  # linear_dec 1 -> -1 over grpo.max_num_steps


def test_per_step_loop_trains_rows_with_holderpo_and_checkpoints_the_last_step(tmp_path, game_by_task):
    import json

    from holder_nemo.alfworld.entropy import EntropyBonusLoss
    from holder_nemo.alfworld.rollout import validation_games
    from holder_nemo.nemo_rl.loss import HolderPOLossFn

    config = _config(tmp_path / "ckpt")
    run = Run(config, game_by_task, _tokenizer())
    original_generate = run.generation.generate

    def generate(data, greedy=False):  # record the temperature each generate call samples at
        run.temperatures.append(run.generation.temperature)
        return original_generate(data, greedy)

    run.generation.generate = generate
    before = [p.detach().clone() for p in run.policy.model.parameters()]
    initial = copy.deepcopy(run.policy.model)
    assert run.train() is None

    assert [c["p"] for c in run.policy.train_calls] == pytest.approx([p_at(k) for k in (1, 2, 3)])
    for prefix in ("holder", "train"):  # the step hook's holder/p and the loop's train/p, logged at step k
        steps, values = zip(*run.logger.series(prefix, "p"), strict=True)
        assert steps == (1, 2, 3) and values == pytest.approx([p_at(k) for k in (1, 2, 3)])
    # stale generation is refitted before steps 1 and 2 and before the validation after step 2; step 3 reuses it
    assert run.refits == 3 and run.policy.events.count("offload_after_refit") == 1  # colocated, as grpo_train
    assert run.generation.calls == 3 * 4 + 4  # 4 lock-step environment steps per training step and validation
    # training samples at policy.generation.temperature (1.0), the validation after step 2 at val_temperature (0.4)
    assert run.temperatures == [1.0] * 8 + [0.4] * 4 + [1.0] * 4 and run.generation.temperature == 1.0
    # validation: 4 episodes on games drawn as verl-agent's validation environments draw them (seed 1000 + i);
    # even rows follow the plan, which wins on the 4-step game only
    drawn = validation_games(run.games, 4, 1000, 0)
    wins = [i % 2 == 0 and game == run.games[0] for i, game in enumerate(drawn)]
    assert run.logger.series("validation", "success_rate") == [(2, sum(wins) / 4)]
    (_, _, metrics), *_ = [r for r in run.logger.records if r[0] == "validation"]
    looks = sum(game == run.games[0] for game in drawn)
    assert (metrics["episodes/Look"], metrics["won/Look"], metrics["episodes/Pick"]) == (looks, sum(wins), 4 - looks)
    assert (metrics["success_rate_best"], metrics["best_step"]) == (sum(wins) / 4, 2)
    (line,) = (tmp_path / "logs" / "alfworld_validation.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert (record["step"], record["round"], record["temperature"]) == (2, 0, 0.4)
    assert record["overall"] == {"won": sum(wins), "total": 4, "success": 100.0 * sum(wins) / 4}
    assert run.state["alfworld_val_best"]["step"] == 2  # saved with the checkpoint: a resumed run keeps the best

    # 2 games x 2 episodes x 4 steps = 16 rows, padded to 18 for global batches of 6
    a = 5.0 / math.sqrt(8 * 25.0 / 7)  # group of the 4-step game: scores 10 x4, 0 x4 -> (s - 5) / unbiased std
    for call in run.policy.train_calls:
        data = call["data"]
        assert isinstance(call["loss_fn"], EntropyBonusLoss) and call["loss_fn"].coeff == 0.001
        assert isinstance(call["loss_fn"].inner, HolderPOLossFn)  # HölderPO minus 0.001 x the entropy estimate
        n, width = data["input_ids"].shape
        assert n == 18 and len(call["losses"]) == 3 and width % 8 == 0
        for key in ("token_mask", "advantages", "generation_logprobs", "prev_logprobs", "reference_policy_logprobs"):
            assert data[key].shape == (n, width), key
        assert data["sample_mask"].tolist() == [1.0] * 16 + [0.0] * 2
        assert data["token_mask"][16:].sum() == 0
        row_adv = [data["advantages"][i][data["token_mask"][i] > 0] for i in range(16)]
        assert all(len(r) > 0 and torch.all(r == r[0]) for r in row_adv)  # one advantage per row, on every token
        assert sorted(round(float(r[0]), 6) for r in row_adv) == sorted(
            [round(a, 6)] * 4 + [round(-a, 6)] * 4 + [0.0] * 8
        )
        # the generator's log-probs (stand-in: -0.5 - 0.01 j for reply token j) sit on the response tokens
        first = data["generation_logprobs"][0][data["token_mask"][0] > 0]
        assert first[:3].tolist() == pytest.approx([-0.5, -0.51, -0.52])
        assert all(math.isfinite(x) for x in call["losses"])
    success = [m for _, m in run.logger.series("train", "success_rate")]
    assert success == [0.25] * 3  # one of four episodes wins
    assert any(not torch.equal(b, p) for b, p in zip(before, run.policy.model.parameters(), strict=True))
    # the updates moved the policy towards the winning episodes' replies (positive advantage) and away from the rest
    data = run.policy.train_calls[0]["data"]
    tokens = data["token_mask"] > 0
    winning, losing = tokens & (data["advantages"] > 0), tokens & (data["advantages"] < 0)
    drift = run.policy._full_width(run.policy.model, data) - run.policy._full_width(initial, data)
    assert drift[winning].mean() > 0 > drift[losing].mean(), (drift[winning].mean(), drift[losing].mean())

    latest = run.checkpointer.get_latest_checkpoint_path()
    assert latest is not None and latest.endswith("step_3")  # last step saved (save_period 10)
    assert run.checkpointer.load_training_info(latest)["total_steps"] == 3


def test_stop_request_checkpoints_and_restart_resumes_with_exact_p(tmp_path, game_by_task):
    from holder_nemo.run_control import StopRequest

    config = _config(tmp_path / "ckpt")
    tokenizer = _tokenizer()
    stop_file = tmp_path / "STOP"
    stop_file.write_text("")
    first = Run(config, game_by_task, tokenizer)
    stop = StopRequest(stop_file=stop_file)
    assert first.train(stop) == f"stop file {stop_file}"
    assert stop.fired == f"stop file {stop_file}"
    assert [c["p"] for c in first.policy.train_calls] == pytest.approx([p_at(1)])
    latest = first.checkpointer.get_latest_checkpoint_path()
    assert latest is not None and latest.endswith("step_1")

    # a new process: weights and step from the checkpoint, as setup() restores them
    stop_file.unlink()
    state = dict(first.checkpointer.load_training_info(latest))
    assert state["total_steps"] == 1
    second = Run(config, game_by_task, tokenizer, weights=f"{latest}/policy/weights", grpo_save_state=state)
    for a, b in zip(first.policy.model.parameters(), second.policy.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert second.train(StopRequest(stop_file=stop_file)) is None
    assert [c["p"] for c in second.policy.train_calls] == pytest.approx([p_at(2), p_at(3)], abs=0, rel=0)
    assert second.logger.series("train", "p")[0][0] == 2
    assert second.checkpointer.get_latest_checkpoint_path().endswith("step_3")


def test_game_file_dataset_lists_the_split_and_collates_like_nemo_rl_rows(offline_root):
    from holder_nemo.alfworld.games import SPECS
    from holder_nemo.alfworld.training import GameFileDataset, game_file_dataset, pad_columns, pad_rows

    dataset = game_file_dataset(offline_root / "train")
    assert len(dataset) == len(SPECS)
    assert all(f.endswith("game.tw-pddl") and "/train/" in f for f in dataset.game_files)
    row = dataset[0]
    assert row["extra_env_info"] == {"game_file": dataset.game_files[0]} and row["idx"] == 0
    assert len(game_file_dataset(offline_root / "valid_seen", [1, 2])) == 2  # task types 1-2: pick, look
    with pytest.raises(ConfigError, match="data_path"):  # a recipe error: one line, exit 2 at the entry point
        game_file_dataset(offline_root / "nope")
    with pytest.raises(ValueError, match="empty"):
        GameFileDataset([])
    data = {"input_ids": torch.arange(6).view(3, 2), "sample_mask": torch.ones(3), "token_mask": torch.ones(3, 2)}
    wide = pad_columns(data, 4)
    assert wide["input_ids"].shape == (3, 4) and wide["token_mask"][:, 2:].sum() == 0
    assert wide["sample_mask"] is data["sample_mask"] and pad_columns(wide, 4) is wide
    padded = pad_rows(data, 4)
    assert padded["input_ids"].shape == (4, 2) and padded["sample_mask"].tolist() == [1, 1, 1, 0]
    assert padded["token_mask"][3].sum() == 0 and pad_rows(padded, 4) is padded


FRESH_ENV = "HOLDERPO_TEST_FRESH_INTERPRETER"


def _nemo_rl_typed_dicts_already_built() -> bool:
    return (
        sys.version_info < (3, 12)
        and not os.environ.get(FRESH_ENV)
        and "nemo_rl.algorithms.grpo" not in sys.modules
        and any(m.startswith("nemo_rl.") for m in sys.modules)
    )


@pytest.mark.nemo_rl
@pytest.mark.skipif(importlib.util.find_spec("nemo_rl") is None, reason="nemo_rl is not importable; needs v0.7.0")
def test_run_grpo_per_step_dispatch_with_nemo_rl_config_dataloader_and_checkpointer(tmp_path, offline_root):
    """What ``run_grpo`` does for ALFWorld before and after ``setup()`` (which needs GPUs): NeMo RL's loader and
    ``MasterConfig`` keep the sections the loop reads, the game-file datasets go through ``setup``'s
    ``StatefulDataLoader`` + ``rl_collate_fn``, and a checkpoint through the real ``CheckpointManager`` records the
    step and the run config."""
    if _nemo_rl_typed_dicts_already_built():
        # Python < 3.12: an earlier test imported NeMo RL config modules before ``typing.TypedDict`` was swapped, so
        # pydantic cannot build ``MasterConfig`` in this interpreter (not an issue on the container's Python 3.12+)
        name = "test_run_grpo_per_step_dispatch_with_nemo_rl_config_dataloader_and_checkpointer"
        result = subprocess.run(
            [sys.executable, "-m", "pytest", f"{__file__}::{name}", "-q", "-p", "no:cacheprovider"],
            env={**os.environ, FRESH_ENV: "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        return
    from holder_nemo.alfworld.training import PerStepSettings, alfworld_game_datasets, check, save_checkpoint
    from holder_nemo.nemo_rl.master_config import load_master_config, typed_dict_for_old_python

    typed_dict_for_old_python()
    from nemo_rl.algorithms import grpo as grpo_module
    from nemo_rl.data.collate_fn import rl_collate_fn
    from nemo_rl.utils.checkpoint import CheckpointManager
    from torchdata.stateful_dataloader import StatefulDataLoader

    overrides = [
        f"data.train.data_path={offline_root}/train",
        f"data.validation.data_path={offline_root}/valid_seen",
        f"checkpointing.checkpoint_dir={tmp_path / 'ckpt'}",
    ]
    config = grpo_module.MasterConfig(**load_master_config(str(RECIPE), overrides))
    assert check(config) == []
    per_episode = [*overrides, "+alfworld.sample_layout=per_episode"]  # the removed layout: an error naming the key
    ((key, message),) = check(grpo_module.MasterConfig(**load_master_config(str(RECIPE), per_episode)))
    assert key == "alfworld.sample_layout" and message.startswith("no longer a setting")
    settings = PerStepSettings.from_config(config)
    assert (settings.num_games, settings.group_size, settings.max_num_steps) == (16, 8, 150)
    assert settings.protocol.max_steps == 50 and settings.protocol.invalid_action_penalty == 0.1
    assert (settings.max_prompt_tokens, settings.max_response_tokens) == (2048, 512)
    assert (settings.train_global_batch_size, settings.entropy_coeff, settings.val_temperature) == (256, 0.001, 0.4)
    assert (settings.max_val_samples, settings.val_seed, settings.train_temperature) == (128, 1000, 1.0)

    train, val = alfworld_game_datasets(config)
    assert len(train) == 6 and len(val) == 6 and "/valid_seen/" in val.game_files[0]
    loader = StatefulDataLoader(train, batch_size=4, shuffle=True, collate_fn=rl_collate_fn, drop_last=True)
    batch = next(iter(loader))
    assert {info["game_file"] for info in batch["extra_env_info"]} <= set(train.game_files)
    assert batch["loss_multiplier"].tolist() == [1.0] * 4

    # the entry point lists the games before Ray starts: a missing split folder is a config error (exit 2)
    from holder_nemo.nemo_rl import run_grpo

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        assert run_grpo.main(["--config", str(RECIPE), f"data.train.data_path={tmp_path}/missing/train"]) == 2
    finally:  # main() installs the stop contract's signal handlers
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    tokenizer = _tokenizer()
    policy = HFTrainPolicy(_model(tokenizer), tokenizer, global_batch_size=1)
    checkpointer = CheckpointManager(config.checkpointing)
    state = {"total_steps": 7, "current_step": 7, "consumed_samples": 112}
    save_checkpoint(policy, checkpointer, state, config, 7)
    latest = checkpointer.get_latest_checkpoint_path()
    assert latest.endswith("step_7") and checkpointer.load_training_info(latest)["total_steps"] == 7
    assert (Path(latest) / "config.yaml").is_file() or any(Path(latest).glob("*.yaml"))
    assert (Path(latest) / "policy" / "weights" / "config.json").is_file()
