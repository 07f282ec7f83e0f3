"""Success overall and per task type in the paper's Table 3 layout; the CLI on offline games."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from holder_nemo.alfworld.evaluate import COLUMNS, format_table, summarize
from holder_nemo.alfworld.step_samples import Episode

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)


def test_summarize_overall_is_over_games_not_the_mean_of_columns(game_by_task):
    # Pick: 3 games, 1 won; Look: 1 game, won. Column mean would be (33.3 + 100) / 2 = 66.7; overall is 2/4 = 50.
    pick, look = str(game_by_task["pick_and_place_simple"]), str(game_by_task["look_at_obj_in_light"])
    episodes = [Episode(0, i, pick, won=(i == 0)) for i in range(3)] + [Episode(0, 3, look, won=True)]
    summary = summarize(episodes)
    assert summary["per_task"]["Pick"] == {"won": 1, "total": 3, "success": pytest.approx(100 / 3)}
    assert summary["per_task"]["Look"]["success"] == 100.0
    assert math.isnan(summary["per_task"]["Heat"]["success"])
    assert summary["overall"] == {"won": 2, "total": 4, "success": 50.0}
    table = format_table({"mine": summary}, with_paper=True)
    lines = table.splitlines()
    assert lines[0] == "| Training Objectives | Pick | Look | Clean | Heat | Cool | Pick Two | Avg. |"
    assert "| HölderPO (Linear Dec: 1 -> -1) (paper) | 96.9 | 100.0 | 100.0 | 100.0 | 85.7 | 84.5 | 93.8 |" in lines
    assert "| mine | 33.3 | 100.0 | n/a | n/a | n/a | n/a | 50.0 |" in lines


def test_expert_evaluation_cli_wins_every_offline_game(offline_root, tmp_path, capsys):
    from holder_nemo.alfworld.cli import main

    out = tmp_path / "summary.json"
    rc = main(
        [
            "eval",
            "--data-root",
            str(offline_root),
            "--protocol",
            "all-games",
            "--split",
            "valid_unseen",
            "--policy",
            "expert",
            "--label",
            "expert",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["overall"] == {"won": 6, "total": 6, "success": 100.0}
    assert all(summary["per_task"][col]["success"] == 100.0 for col, _ in COLUMNS)
    args = ["eval", "--data-root", str(offline_root), "--policy", "expert", "--protocol", "all-games"]
    rc = main([*args, "--limit", "1", "--output", str(out)])
    assert rc == 0 and json.loads(out.read_text())["per_task"]["Heat"]["success"] is None  # strict JSON, no NaN
    printed = capsys.readouterr().out
    assert "| expert (valid_unseen, all-games) | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in printed
    assert "won / episodes per column: Pick 1/1, Look 1/1, Clean 1/1, Heat 1/1, Cool 1/1, Pick Two 1/1; 6/6" in printed


def test_policy_evaluation_counts_failures(offline_root):
    from holder_nemo.alfworld.data import list_games
    from holder_nemo.alfworld.evaluate import evaluate_policy
    from holder_nemo.alfworld.protocol import ProtocolConfig

    calls = []

    def looker(prompts):
        calls.append(len(prompts))
        return ["<think>hmm</think><action>look</action>"] * len(prompts)

    games = list_games(offline_root, "valid_seen")
    episodes = evaluate_policy(looker, games, config=ProtocolConfig(max_steps=2), batch_games=4)
    assert calls == [4, 4, 2, 2]  # two batches of games, two steps each
    assert summarize(episodes)["overall"] == {"won": 0, "total": 6, "success": 0.0}


def test_paper_protocol_draws_validation_episodes_from_valid_seen(offline_root, tmp_path, capsys):
    """The default protocol: verl-agent's validation draw (seed 1000 + i, round 0) on valid_seen."""
    from holder_nemo.alfworld.cli import main
    from holder_nemo.alfworld.data import list_games, task_type_of
    from holder_nemo.alfworld.rollout import validation_games

    out = tmp_path / "paper.json"
    assert (
        main(["eval", "--data-root", str(offline_root), "--policy", "expert", "--episodes", "9", "--output", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    drawn = validation_games(list_games(offline_root, "valid_seen"), 9, 1000, 0)
    assert result["games"] == drawn and all("/valid_seen/" in g for g in drawn)
    assert result["settings"] == {"protocol": "paper", "split": "valid_seen", "episodes": 9, "seed": 1000, "round": 0,
                                  "policy": "expert"}  # fmt: skip
    assert result["overall"] == {"won": 9, "total": 9, "success": 100.0}
    pick = sum(task_type_of(g) == "pick_and_place_simple" for g in drawn)
    assert result["per_task"]["Pick"]["total"] == pick
    assert "(valid_seen, paper)" in capsys.readouterr().out


def _save_tiny_checkpoint(step_dir):
    """A NeMo RL step directory whose weights are consolidated HF files (DTensor v2 ``save_consolidated``), and an
    instruct-style generation_config.json (repetition penalty, top-k, top-p) that must not leak into sampling."""
    import string

    from alfworld_doubles import CHAT_TEMPLATE
    from tiny_qwen2 import tiny_qwen2
    from transformers import GenerationConfig

    from holder_nemo.reference.model import build_char_tokenizer

    tokenizer = build_char_tokenizer(string.printable)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = tiny_qwen2(tokenizer, max_position_embeddings=4096)
    model.generation_config = GenerationConfig(repetition_penalty=1.3, top_k=20, top_p=0.8, temperature=0.7,
                                               do_sample=True, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    weights = step_dir / "policy" / "weights" / "model" / "consolidated"
    model.save_pretrained(weights)
    tokenizer.save_pretrained(step_dir / "policy" / "tokenizer")
    (step_dir / "config.yaml").write_text("policy:\n  model_name: tiny\n")
    return step_dir


def test_model_evaluation_of_a_nemo_rl_checkpoint_in_bf16_with_explicit_sampling(offline_root, tmp_path, monkeypatch):
    import torch
    import transformers

    from holder_nemo.alfworld.cli import main

    step_dir = _save_tiny_checkpoint(tmp_path / "ckpt" / "step_3")
    seen = []
    real_generate = transformers.GenerationMixin.generate

    def spy(self, *args, **kwargs):  # records what reaches transformers' generate (the real one then runs)
        seen.append((self.dtype, kwargs["generation_config"]))
        return real_generate(self, *args, **kwargs)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", spy)
    out = tmp_path / "model.json"
    args = ["eval", "--data-root", str(offline_root), "--model", str(step_dir), "--episodes", "2", "--max-steps", "1",
            "--max-new-tokens", "4", "--device", "cpu", "--dtype", "bfloat16", "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    model = result["settings"]["model"]
    assert (model["source"], model["step"], model["dtype"], model["device"]) == ("nemo_rl_consolidated", 3, "bfloat16",
                                                                                 "cpu")  # fmt: skip
    assert result["settings"]["sampling"] == {"temperature": 0.4, "top_p": 1.0, "greedy": False, "top_k": None,
                                              "repetition_penalty": 1.0, "max_new_tokens": 4}  # fmt: skip
    assert result["overall"]["total"] == 2 and seen
    dtype, config = seen[0]
    assert dtype == torch.bfloat16
    assert (config.temperature, config.top_p, config.top_k, config.repetition_penalty) == (0.4, 1.0, 0, 1.0)
    assert (config.do_sample, config.max_new_tokens, config.min_new_tokens) == (True, 4, 0)


def test_model_errors_exit_2(offline_root, tmp_path, capsys):
    from holder_nemo.alfworld.cli import main

    assert main(["eval", "--data-root", str(offline_root), "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for flag in ("--episodes", "--batch-games", "--max-new-tokens"):  # checked here only, not again below
        assert main(["eval", "--data-root", str(offline_root), "--policy", "expert", flag, "0"]) == 2
        assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_prompt_over_the_budget_stops_the_evaluation(offline_root, tmp_path):
    from holder_nemo.alfworld.cli import main
    from holder_nemo.alfworld.step_samples import PromptTooLong

    step_dir = _save_tiny_checkpoint(tmp_path / "ckpt" / "step_1")
    args = ["eval", "--data-root", str(offline_root), "--model", str(step_dir), "--episodes", "1", "--device", "cpu",
            "--max-prompt-tokens", "100"]  # fmt: skip
    with pytest.raises(PromptTooLong, match=r"longer than data\.max_input_seq_length = 100"):
        main(args)
