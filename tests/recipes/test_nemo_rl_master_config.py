"""Every NeMo RL recipe loads through NeMo RL v0.7.0's own loader into its GRPO ``MasterConfig`` (pydantic).

Runs where ``nemo_rl`` is importable: by the test interpreter, or by the interpreter named in
``HOLDERPO_NEMO_RL_PYTHON`` (e.g. a venv with NeMo RL's dependencies and ``PYTHONPATH`` holding a v0.7.0 source
tree, see docs/recipes.md). The validation runs in a subprocess because on Python < 3.12 it has to repoint
``typing.TypedDict`` before importing nemo_rl (holder_nemo/nemo_rl/master_config.py explains why).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from holder_nemo.config import load_recipe
from holder_nemo.recipe_check.cli import is_reference_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml") if not is_reference_recipe(load_recipe(p)))
MEGATRON_RECIPES = [p for p in RECIPES if load_recipe(p).policy.megatron_cfg.enabled]
DTENSOR_SWITCH = "policy:\n  dtensor_cfg:\n    enabled: true\n  megatron_cfg:\n    enabled: false\n"
PYTHON = os.environ.get("HOLDERPO_NEMO_RL_PYTHON", sys.executable)
# {recipe: {"config": NeMo RL's resolved dict, "errors": [[key, message], ...]}} for the recipes on the command line
VALIDATE = (
    "import json, sys; from holder_nemo.nemo_rl.master_config import validate_with_nemo_rl; "
    "json.dump({p: dict(zip(('config', 'errors'), validate_with_nemo_rl(p))) for p in sys.argv[1:]}, sys.stdout)"
)

pytestmark = pytest.mark.nemo_rl


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HOLDERPO_DATA_DIR", "/data/holderpo")
    return env


def _nemo_rl_importable() -> bool:
    probe = subprocess.run([PYTHON, "-c", "import nemo_rl.algorithms"], env=_env(), capture_output=True, timeout=120)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def nemo_rl_results(tmp_path_factory):
    if not _nemo_rl_importable():
        pytest.skip(f"nemo_rl is not importable by {PYTHON} (set HOLDERPO_NEMO_RL_PYTHON and PYTHONPATH)")
    broken = tmp_path_factory.mktemp("broken") / "broken.yaml"
    # _override_ replaces the whole grpo section: NeMo RL must then report its missing required keys.
    broken.write_text(
        f"defaults: {REPO / 'recipes/holderpo_base.yaml'}\ngrpo:\n  _override_: true\n  max_num_steps: 500\n"
    )
    # docs/recipes.md's switch to DTensor, as a recipe inheriting each Megatron recipe
    switched = {}
    for recipe in MEGATRON_RECIPES:
        path = tmp_path_factory.mktemp("dtensor") / recipe.name
        path.write_text(f"defaults: {recipe}\n{DTENSOR_SWITCH}")
        switched[recipe.name] = str(path)
    paths = [str(p) for p in RECIPES] + [str(broken), *switched.values()]
    proc = subprocess.run(
        [PYTHON, "-c", VALIDATE, *paths],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout), str(broken), switched


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_builds_nemo_rl_master_config(recipe, nemo_rl_results):
    results, _, _ = nemo_rl_results
    assert results[str(recipe)]["errors"] == []


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_our_loader_resolves_like_nemo_rl(recipe, nemo_rl_results, monkeypatch):
    results, _, _ = nemo_rl_results
    monkeypatch.setenv("HOLDERPO_DATA_DIR", _env()["HOLDERPO_DATA_DIR"])
    ours = OmegaConf.to_container(load_recipe(recipe), resolve=True)
    assert ours == results[str(recipe)]["config"]


def test_nemo_rl_rejects_a_recipe_missing_required_keys(nemo_rl_results):
    results, broken, _ = nemo_rl_results
    errors = results[broken]["errors"]
    assert any(key == "grpo.num_prompts_per_step" for key, _ in errors), errors
    assert any(key == "grpo.val_period" for key, _ in errors), errors


@pytest.mark.parametrize("recipe", MEGATRON_RECIPES, ids=lambda p: p.name)
def test_dtensor_switch_builds_nemo_rl_master_config(recipe, nemo_rl_results):
    """docs/recipes.md's ``policy.dtensor_cfg.enabled=true policy.megatron_cfg.enabled=false``: NeMo RL's own
    MasterConfig accepts it (its DTensorConfig requires five keys the base once lacked), with the optimizer and the
    schedule the DTensor workers read."""
    results, _, switched = nemo_rl_results
    result = results[switched[recipe.name]]
    assert result["errors"] == []
    policy = result["config"]["policy"]
    assert policy["dtensor_cfg"]["enabled"] and not policy["megatron_cfg"]["enabled"]
    assert policy["optimizer"]["name"] == "torch.optim.AdamW" and policy["optimizer"]["kwargs"]["lr"] == 1e-6
