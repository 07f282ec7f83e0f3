"""Recipe loading: NeMo RL's `defaults:` inheritance, `_override_`, resolvers and Hydra override grammar."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf.errors import ConfigAttributeError

from holder_nemo.config import ConfigError, load_recipe


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    write(tmp_path / "base.yaml", "a: {x: 1, y: 2}\nb: 10\nlist: [1, 2]\n")
    write(tmp_path / "mid.yaml", "defaults: base.yaml\na: {y: 3}\nc: ${mul:${b},2}\n")
    write(tmp_path / "other.yaml", "b: 20\n")
    write(tmp_path / "child.yaml", "defaults: [mid.yaml, other.yaml]\na: {z: 4}\n")
    return tmp_path


def test_inheritance_is_a_deep_merge_child_last(recipes):
    cfg = load_recipe(recipes / "child.yaml")
    assert dict(cfg.a) == {"x": 1, "y": 3, "z": 4}
    assert cfg.b == 20  # a later parent overrides an earlier one
    assert cfg.c == 40  # interpolations resolve after merging, with NeMo RL's resolvers
    assert "defaults" not in cfg


def test_override_marker_replaces_instead_of_merging(recipes):
    write(recipes / "replace.yaml", "defaults: base.yaml\na: {_override_: true, w: 5}\n")
    cfg = load_recipe(recipes / "replace.yaml")
    assert dict(cfg.a) == {"w": 5}


def test_cli_override_grammar(recipes):
    cfg = load_recipe(recipes / "child.yaml", ["a.x=7", "+a.new=8", "++b=30", "++d.e=1", "~a.z", "list=[3]"])
    assert dict(cfg.a) == {"x": 7, "y": 3, "new": 8}
    assert cfg.b == 30 and cfg.d.e == 1 and list(cfg.list) == [3]
    assert cfg.c == 60  # interpolations see the overridden value


@pytest.mark.parametrize(
    "overrides,problem",
    [
        (["a.typo=1"], ("a.typo", "unknown key (misspelt?); use +a.typo=... to add a new key")),
        (["+a.x=1"], ("a.x", "already exists, so +a.x=... cannot add it; use a.x=... or ++a.x=...")),
        (["~nope"], ("nope", "~nope: no such key to delete")),
    ],
)
def test_bad_overrides_name_the_key(recipes, overrides, problem):
    with pytest.raises(ConfigError) as info:
        load_recipe(recipes / "child.yaml", overrides)
    assert info.value.problems == (problem,)


def test_an_override_that_does_not_parse_is_named(recipes):
    with pytest.raises(ConfigError) as info:
        load_recipe(recipes / "child.yaml", ["a.x=1", "a.x=[unclosed"])
    ((key, message),) = info.value.problems
    assert key == "a.x=[unclosed" and message.startswith("not an override (") and "key=value" in message


def test_missing_file_cycle_and_bad_defaults(tmp_path):
    with pytest.raises(ConfigError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.yaml")
    write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="inheritance cycle"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path / "bad.yaml", "defaults: {x: 1}\n")
    with pytest.raises(ConfigError, match="defaults: must be a path or a list of paths"):
        load_recipe(tmp_path / "bad.yaml")
    write(tmp_path / "orphan.yaml", "defaults: gone.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(tmp_path / "orphan.yaml")
    assert info.value.problems == (
        (str(tmp_path / "gone.yaml"), "no such recipe file (recipes/*.yaml are the shipped ones)"),
    )


def test_result_is_struct_so_typos_raise(recipes):
    cfg = load_recipe(recipes / "child.yaml")
    with pytest.raises(ConfigAttributeError, match="typo"):
        _ = cfg.a.typo


# (file contents as bytes, the problem's key relative to the file, what the message must say)
BAD_FILES = {
    "syntax": (b"grpo:\n  max_num_steps: 3\n  x: [1\n", ":4", "YAML syntax error: expected ',' or ']'"),
    "tab": (b"grpo:\n\tseed: 1\n", ":2", "YAML indents with spaces, not tabs"),
    "colon": (b"a: 1\n b: 2\n", ":2", "needs quotes, or this line is indented wrongly"),
    "duplicate": (
        b"grpo:\n  seed: 1\npolicy: {}\ngrpo:\n  max_num_steps: 3\n",
        ":4",
        "duplicate key 'grpo' (first at line 1)",
    ),
    "nested_duplicate": (b"grpo:\n  seed: 1\n  seed: 2\n", ":3", "duplicate key 'seed' (first at line 2)"),
    "latin1": (b"grpo: {seed: 1}\n# caf\xe9\n", ":2", "not UTF-8 (byte 0xe9): save the file as UTF-8"),
    "empty": (b"", "", "the file is empty"),
    "list": (b"- a\n- b\n", "", "the top level must be a mapping of sections (key: value lines), got a list"),
    "text": (b"just some words\n", "", "got text"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_is_one_problem_naming_file_line_and_fix(tmp_path, name):
    content, line, says = BAD_FILES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    ((key, message),) = info.value.problems
    assert key == f"{path}{line}" and says in message, (key, message)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = write(tmp_path / "merge.yaml", "base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n")
    assert dict(load_recipe(path).child) == {"x": 1, "y": 3}


def test_directory_markdown_and_missing_recipes(tmp_path):
    (tmp_path / "r.yaml").write_text("a: 1\n")
    cases = {
        tmp_path: f"is a directory, not a recipe: give a recipe YAML file (e.g. {tmp_path / 'r.yaml'})",
        write(tmp_path / "README.md", "# title\n"): "not a YAML recipe (a '.md' file)",
        tmp_path / "nope.yaml": "no such recipe file",
    }
    for path, says in cases.items():
        with pytest.raises(ConfigError) as info:
            load_recipe(path)
        ((key, message),) = info.value.problems
        assert key == str(path) and message.startswith(says), message


def test_an_unresolvable_interpolation_names_its_key(tmp_path, monkeypatch):
    monkeypatch.delenv("HOLDERPO_TEST_UNSET", raising=False)
    path = write(tmp_path / "env.yaml", "data:\n  path: ${oc.env:HOLDERPO_TEST_UNSET}/x.jsonl\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    ((key, message),) = info.value.problems
    assert key == "data.path" and "HOLDERPO_TEST_UNSET" in message and message.startswith("cannot resolve")
