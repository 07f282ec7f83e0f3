"""The resume guard's comparison: every differing dotted key is reported with both values, operational keys aside."""

from __future__ import annotations

import json

import pytest

from holder_nemo.config import ConfigError
from holder_nemo.run_control import (
    ACCEPT_FLAG,
    CHANGE_LOG,
    ConfigChange,
    check_resume_config,
    config_changes,
    flatten,
    record_accepted_changes,
)

STORED = {
    "grpo": {"max_num_steps": 500, "seed": 42},
    "loss_fn": {"holder": {"schedule": {"kind": "linear_dec", "p_min": -2.0}}, "ratio_clip_c": None},
    "policy": {"optimizer": {"kwargs": {"betas": [0.9, 0.95]}}},
    "env": {"holder_math": {"num_workers": 8}, "math": {"num_workers": 8, "math_verify_impl": "hf"}},
    "logger": {"log_dir": "logs/a", "wandb": {"name": "a"}},
}


def changed(**updates) -> dict:
    config = json.loads(json.dumps(STORED))
    for dotted, value in updates.items():
        node = config
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is KeyError:
            del node[leaf]
        else:
            node[leaf] = value
    return config


def test_flatten_gives_dotted_leaves_and_keeps_lists_and_empty_maps_whole():
    flat = flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None})
    assert flat == {"a.b": 1, "a.c": [1, 2], "a.d": {}, "e": None}


def test_identical_recipes_have_no_changes():
    assert config_changes(STORED, json.loads(json.dumps(STORED))) == []


def test_every_difference_is_reported_sorted_with_both_values():
    current = changed(grpo__max_num_steps=600, loss_fn__holder__schedule__p_min=-1.0,
                      policy__optimizer__kwargs__betas=[0.9, 0.99])  # fmt: skip
    assert config_changes(STORED, current) == [
        ConfigChange("grpo.max_num_steps", 500, 600),
        ConfigChange("loss_fn.holder.schedule.p_min", -2.0, -1.0),
        ConfigChange("policy.optimizer.kwargs.betas", [0.9, 0.95], [0.9, 0.99]),
    ]


def test_added_and_removed_keys_count():
    current = changed(grpo__seed=KeyError, loss_fn__use_cispo=False)
    assert config_changes(STORED, current) == [
        ConfigChange("grpo.seed", 42, "<absent>"),
        ConfigChange("loss_fn.use_cispo", "<absent>", False),
    ]


def test_operational_patterns_cover_subtrees_and_one_component_wildcards():
    current = changed(logger__log_dir="logs/b", logger__wandb__name="b", env__holder_math__num_workers=1,
                      env__math__num_workers=2, env__math__math_verify_impl="dapo")  # fmt: skip
    changes = config_changes(STORED, current, operational=("logger", "env.*.num_workers"))
    assert changes == [ConfigChange("env.math.math_verify_impl", "hf", "dapo")]  # a grader change is not operational


def test_refused_without_accept_naming_keys_values_and_the_way_out():
    with pytest.raises(ConfigError) as info:
        check_resume_config(STORED, changed(grpo__max_num_steps=600), operational=(), accept=False, where="X")
    message = str(info.value)
    assert "grpo.max_num_steps: 500 (stored) -> 600 (now)" in message
    assert ACCEPT_FLAG in message and "(X)" in message


def test_accepted_changes_are_returned_and_recorded(tmp_path):
    changes = check_resume_config(STORED, changed(grpo__seed=7), operational=(), accept=True, where="X")
    assert changes == [ConfigChange("grpo.seed", 42, 7)]
    record_accepted_changes(tmp_path, changes, "step_3")
    record_accepted_changes(tmp_path, [], "step_4")  # nothing accepted: nothing written
    (line,) = (tmp_path / CHANGE_LOG).read_text().splitlines()
    entry = json.loads(line)
    assert entry["resumed_from"] == "step_3"
    assert entry["changes"] == [{"key": "grpo.seed", "stored": 42, "current": 7}]


def test_the_run_directory_itself_is_not_part_of_the_run(tmp_path):
    """A moved run directory, or the same one spelt otherwise: no change (checkpointing.checkpoint_dir is where the
    run is, not what it computes)."""
    stored = {"checkpointing": {"checkpoint_dir": "relrun", "save_period": 10}, "grpo": {"seed": 1}}
    for where in ("/abs/relrun", "relrun/", str(tmp_path / "moved" / "run")):
        current = {"checkpointing": {"checkpoint_dir": where, "save_period": 10}, "grpo": {"seed": 1}}
        assert config_changes(stored, current) == [], where


def test_paths_are_compared_after_resolving_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    stored = {"data": {"train": {"data_path": "data/math.jsonl"}}, "policy": {"model_name": "models/tiny"}}
    same = {"data": {"train": {"data_path": f"{tmp_path}/link/./math.jsonl"}},
            "policy": {"model_name": f"{tmp_path}/models/tiny/"}}  # fmt: skip
    assert config_changes(stored, same) == []
    other = {"data": {"train": {"data_path": "data/other.jsonl"}}, "policy": {"model_name": "Qwen/Qwen2.5-Math-7B"}}
    assert [c.key for c in config_changes(stored, other)] == ["data.train.data_path", "policy.model_name"]
    # Not a path key: the text is the value.
    assert [c.key for c in config_changes({"grpo": {"tag": "a/b"}}, {"grpo": {"tag": "a/b/"}})] == ["grpo.tag"]
