"""Which environments / data processors a recipe needs, the components that register them (``env.<name>._component_``),
and their registration with the real NeMo RL registries."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from holder_nemo.config import load_recipe
from holder_nemo.nemo_rl.components import COMPONENT_KEY, dataset_configs, required_names

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
MATH_RECIPES = sorted(p for p in RECIPES.glob("holderpo_*.yaml") if "alfworld" not in p.name)


def data_section(recipe: Path) -> dict:
    return OmegaConf.to_container(load_recipe(recipe), resolve=True)["data"]


@pytest.mark.parametrize("recipe", MATH_RECIPES, ids=lambda p: p.stem)
def test_math_recipes_train_and_validate_with_the_paper_grader(recipe):
    data = data_section(recipe)
    assert required_names(data) == ({"holder_math"}, {"math_hf_data_processor"})
    cfg = OmegaConf.to_container(load_recipe(recipe), resolve=True)
    assert cfg["env"]["holder_math"]["num_workers"] >= 1


def test_alfworld_recipe_needs_no_nemo_rl_environment_or_processor():
    """ALFWorld's loop plays the games in the driver: NeMo RL builds no environment actor and no data rows for it."""
    assert required_names(data_section(RECIPES / "holderpo_alfworld_qwen2.5-1.5b.yaml")) == (set(), set())


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("holderpo_*.yaml")), ids=lambda p: p.stem)
def test_every_environment_of_ours_is_named_by_its_component(recipe):
    """The recipe names the code behind each of our environments; NeMo RL's own (math) need none."""
    from holder_nemo.nemo_rl.components import components

    cfg = OmegaConf.to_container(load_recipe(recipe), resolve=True)
    paths = {name: section[COMPONENT_KEY] for name, section in cfg["env"].items() if COMPONENT_KEY in section}
    assert paths["holder_math"] == "holder_nemo.eval.nemo_rl_component" and "math" not in paths
    if "alfworld" in cfg["env"]:
        assert paths["alfworld"] == "holder_nemo.alfworld.training"
    assert all(callable(c.register) for c in components(cfg).values())  # importable without NeMo RL


def test_an_unimportable_component_names_its_key():
    from holder_nemo.nemo_rl.components import components

    with pytest.raises(ValueError, match=r"env.x._component_: cannot import 'holder_nemo.nope'"):
        components({"env": {"x": {"_component_": "holder_nemo.nope"}}})


def test_dataset_configs_fill_missing_keys_from_default_like_nemo_rl():
    data = {
        "train": [{"dataset_name": "a", "env_name": "alfworld"}, {"dataset_name": "b"}],
        "validation": {"dataset_name": "c", "processor": "p2"},
        "default": {"env_name": "holder_math", "processor": "p1"},
    }
    configs = dataset_configs(data)
    assert [c["env_name"] for c in configs] == ["alfworld", "holder_math", "holder_math"]
    assert [c["processor"] for c in configs] == ["p1", "p1", "p2"]
    assert required_names(data) == ({"alfworld", "holder_math"}, {"p1", "p2"})
    # NeMo RL creates data.default's environment even when every dataset overrides it
    only_override = {"train": {"dataset_name": "a", "env_name": "x"}, "default": {"env_name": "y"}}
    assert required_names(only_override)[0] == {"x", "y"}
    assert required_names({"train": {"dataset_name": "a"}, "validation": None}) == (set(), set())


@pytest.mark.nemo_rl
@pytest.mark.skipif(
    importlib.util.find_spec("nemo_rl") is None, reason="nemo_rl is not importable; needs NeMo RL v0.7.0"
)
def test_registration_with_the_real_nemo_rl_registries():
    """register_components fills NeMo RL v0.7.0's ENV_REGISTRY and ACTOR_ENVIRONMENT_REGISTRY so that its own
    lookups (create_env's registry and python-env checks) resolve; ALFWorld's component registers nothing."""
    from holder_nemo.nemo_rl.master_config import typed_dict_for_old_python

    typed_dict_for_old_python()
    from nemo_rl.data.processors import PROCESSOR_REGISTRY
    from nemo_rl.distributed.ray_actor_environment_registry import (
        ACTOR_ENVIRONMENT_REGISTRY,
        get_actor_python_env,
    )
    from nemo_rl.environments.utils import ENV_REGISTRY

    from holder_nemo.nemo_rl.components import components, registration_problems

    def register_components(cfg: dict) -> list[str]:  # what run_grpo.prepare does with the recipe's components
        return [done for name, c in components(cfg).items() for done in c.register(name, cfg)]

    saved = (dict(ENV_REGISTRY), dict(PROCESSOR_REGISTRY), dict(ACTOR_ENVIRONMENT_REGISTRY))
    try:
        ENV_REGISTRY.pop("alfworld", None)
        PROCESSOR_REGISTRY.pop("alfworld", None)

        math_cfg = OmegaConf.to_container(load_recipe(RECIPES / "holderpo_base.yaml"), resolve=True)
        assert register_components(math_cfg) == ["env holder_math"]
        assert "alfworld" not in ENV_REGISTRY and "alfworld" not in PROCESSOR_REGISTRY  # lazily, only when used
        assert ENV_REGISTRY["holder_math"]["actor_class_fqn"] == "holder_nemo.eval.nemo_rl_env.PaperMathEnvironment"
        get_actor_python_env(ENV_REGISTRY["holder_math"]["actor_class_fqn"])  # raises if create_env would
        assert registration_problems(math_cfg["data"], math_cfg["env"]) == []

        alf_cfg = OmegaConf.to_container(load_recipe(RECIPES / "holderpo_alfworld_qwen2.5-1.5b.yaml"), resolve=True)
        assert register_components(alf_cfg) == ["env holder_math"]  # ALFWorld's loop registers nothing
        assert register_components(alf_cfg) == ["env holder_math"]  # idempotent (NeMo RL's register_* raise twice)
        assert "alfworld" not in ENV_REGISTRY and "alfworld" not in PROCESSOR_REGISTRY
        assert registration_problems(alf_cfg["data"], alf_cfg["env"]) == []

        bad = {"train": {"dataset_name": "a", "env_name": "nope", "processor": "nope_p"}}
        problems = registration_problems(bad, {})
        assert any(k == "data.*.env_name" and m.startswith("environment 'nope'") for k, m in problems)
        assert any(k == "data.*.processor" and m.startswith("processor 'nope_p'") for k, m in problems)
        assert registration_problems(math_cfg["data"], {}) == [
            ("env.holder_math", "missing (data.*.env_name uses environment 'holder_math')")
        ]
    finally:
        for registry, before in zip((ENV_REGISTRY, PROCESSOR_REGISTRY, ACTOR_ENVIRONMENT_REGISTRY), saved, strict=True):
            registry.clear()
            registry.update(before)
