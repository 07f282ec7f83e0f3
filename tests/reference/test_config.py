"""Recipe schema: the default recipe validates, bad values and unknown keys fail naming the key."""

from __future__ import annotations

import pytest
from reference_helpers import SMOKE

from holder_nemo.config import ConfigError, load_recipe
from holder_nemo.reference.config import validate_reference_config
from holder_nemo.reference.default_recipe import SMOKE_CPU_YAML, default_recipe_path
from holder_nemo.reference.train import load_config, main


def test_smoke_recipe_validates_with_expected_defaults():
    cfg = validate_reference_config(load_recipe(SMOKE))
    assert cfg.policy.model_name is None
    assert cfg.data.task == "digits"
    # schedule length follows grpo.max_num_steps through interpolation
    assert cfg.loss_fn.holder.schedule.steps == cfg.grpo.max_num_steps
    rows = cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt
    assert rows // cfg.policy.train_global_batch_size >= 2  # several updates per step, so ratios leave 1


def test_embedded_default_recipe_is_the_repo_file():
    assert SMOKE.read_text() == SMOKE_CPU_YAML
    assert default_recipe_path() == SMOKE


def test_without_source_tree_the_embedded_recipe_is_used(tmp_path, monkeypatch):
    """A non-editable install has no recipes/ directory next to the package."""
    import holder_nemo.reference.default_recipe as default_recipe

    monkeypatch.setattr(default_recipe, "repo_recipe_path", lambda: tmp_path / "absent.yaml")
    path = default_recipe.default_recipe_path()
    assert path != SMOKE and path.read_text() == SMOKE_CPU_YAML
    cfg, _ = load_config(path, [])
    assert cfg == load_config(SMOKE, [])[0]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("grpo.num_generations_per_prompt=1", "grpo.num_generations_per_prompt"),
        ("policy.generation.temperature=0", "policy.generation.temperature"),
        ("data.digits.op=multiply", "data.digits.op"),
        ("+policy.learning_rate=0.1", "policy.learning_rate"),
        ("policy.train_global_batch_size=100", "policy.train_global_batch_size"),
        ("data.digits.min_digits=3", "min_digits"),
        ("data.task=math_jsonl", "data.train_path"),
        ("loss_fn.reference_policy_kl_penalty=0.01", "loss_fn.reference_policy_kl_penalty"),
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
