"""Recipe schema: the default recipe validates, bad values and unknown keys fail naming the key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from reference_helpers import REPO, SMOKE, tiny

from holder_nemo.config import ConfigError, load_recipe
from holder_nemo.reference.schema import default_recipe_path, validate_reference_config
from holder_nemo.reference.train import load_config, main


def test_smoke_recipe_validates_with_expected_defaults():
    cfg = validate_reference_config(load_recipe(SMOKE))
    assert cfg.policy.model_name is None
    assert cfg.data.task == "digits"
    # schedule length follows grpo.max_num_steps through interpolation
    assert cfg.loss_fn.holder.schedule.steps == cfg.grpo.max_num_steps
    rows = cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
    assert rows // cfg.policy.train_global_batch_size >= 2  # several updates per step, so ratios leave 1


def test_default_recipe_is_the_source_trees_and_a_wheel_ships_it(tmp_path):
    """A non-editable install has no source tree: the wheel carries recipes/smoke_cpu.yaml as package data, and
    ``default_recipe_path`` finds it there (setup.py maps the top-level recipes/ into holder_nemo.recipes)."""
    assert default_recipe_path() == SMOKE
    source = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the repository
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "holder_nemo", source / "holder_nemo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "recipes", source / "recipes")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, capture_output=True)
    site = tmp_path / "site"
    with zipfile.ZipFile(next(tmp_path.glob("holder_nemo-*.whl"))) as wheel:
        wheel.extractall(site)
    assert (site / "holder_nemo" / "recipes" / "smoke_cpu.yaml").read_text() == SMOKE.read_text()
    assert not (site / "recipes").exists()  # nothing at the top level of site-packages
    probe = "from holder_nemo.reference.schema import default_recipe_path; print(default_recipe_path())"
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == str(site / "holder_nemo" / "recipes" / "smoke_cpu.yaml"), out.stderr


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("grpo.num_generations_per_prompt=1", "grpo.num_generations_per_prompt"),
        ("policy.generation.temperature=0", "policy.generation.temperature"),
        ("data.digits.op=multiply", "data.digits.op"),
        ("data.digits.reward=fuzzy", "data.digits.reward"),
        ("++data.digits.repeat_length=0", "data.digits.repeat_length"),
        ("+policy.learning_rate=0.1", "policy.learning_rate"),
        ("policy.train_global_batch_size=100", "policy.train_global_batch_size"),
        ("data.digits.min_digits=3", "min_digits"),
        ("data.task=math_jsonl", "data.train_path"),
        ("loss_fn.reference_policy_kl_penalty=0.01", "loss_fn.reference_policy_kl_penalty"),
        # refused, not ignored: holderpo train always checkpoints, and recipe check would have said "checkpoint off"
        ("+checkpointing.enabled=false", "checkpointing.enabled"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(SMOKE, [override])


def test_unknown_override_key_is_rejected():
    with pytest.raises(ConfigError, match=r"grpo\.max_steps"):
        load_config(SMOKE, ["grpo.max_steps=3"])


def test_bad_loss_fn_key_fails_before_training(tmp_path, capsys):
    code = main([str(SMOKE), f"checkpointing.checkpoint_dir={tmp_path}", "loss_fn.holder.clip_mode=seq"])
    assert code == 2
    assert "loss_fn.holder.clip_mode" in capsys.readouterr().err
    assert not (tmp_path / "metrics.jsonl").exists()


def _problems(overrides: list[str], recipe=SMOKE) -> tuple[tuple[str, str], ...]:
    with pytest.raises(ConfigError) as info:
        load_config(recipe, overrides)
    return info.value.problems


def test_cross_field_errors_name_their_keys_without_dumping_the_recipe():
    assert _problems(["policy.train_global_batch_size=100"]) == (
        (
            "policy.train_global_batch_size",
            "(100) must divide grpo.num_prompts_per_step x grpo.num_generations_per_prompt (512)",
        ),
        ("policy.train_micro_batch_size", "(128) must divide policy.train_global_batch_size (100)"),
    )
    ((key, message),) = _problems(["policy.tiny_model.num_heads=3"])
    assert key == "policy.tiny_model.hidden_size" and "{" not in message


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["~loss_fn.holder.schedule"], ("loss_fn.holder.schedule", "required: the p schedule, e.g. ")),
        (["~loss_fn.holder"], ("loss_fn.holder", "required: the HölderPO block")),
        (["~loss_fn"], ("loss_fn", "required section is missing")),
        (["+loss_fn.ratio_clip_c=0.5"], ("loss_fn.ratio_clip_c", "Input should be greater than 1 (got 0.5)")),
        (["+loss_fn.ratio_clip_c=1.0"], ("loss_fn.ratio_clip_c", "Input should be greater than 1 (got 1.0)")),
        (["policy.model_name=/nonexistent/model"], ("policy.model_name", "no such model directory")),
        (["data.train_path=/nonexistent/train.jsonl"], ("data.train_path", "no such file")),
    ],
    ids=str,
)
def test_what_is_missing_or_wrong_is_said_once(overrides, problem):
    ((key, message),) = _problems(overrides)
    assert key == problem[0] and message.startswith(problem[1]), (key, message)


def test_a_nemo_rl_recipe_is_named_as_such():
    seven_b = SMOKE.parent / "holderpo_qwen2.5-math-7b.yaml"
    ((key, message),) = _problems([], seven_b)
    assert key == str(seven_b) and message.startswith("is a NeMo RL recipe")


def test_cuda_without_a_gpu_is_one_line_naming_the_key(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([str(SMOKE), *tiny(1, tmp_path / "run"), "reference.device=cuda"]) == 2
    assert capsys.readouterr().err == (
        "holderpo train: reference.device: 'cuda' requested but torch.cuda.is_available() is False\n"
    )
