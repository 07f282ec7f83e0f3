"""NeMo RL's keys for ``holderpo recipe check``: a table generated from NeMo RL v0.7.0's own TypedDicts
(``holder_nemo/nemo_rl/master_config_schema.json``), never typed by hand.

Where nemo_rl is importable (``HOLDERPO_NEMO_RL_PYTHON`` and ``PYTHONPATH``, as in ``test_nemo_rl_master_config.py``)
the table is regenerated and must equal the committed one; the checks of the table itself run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from holder_nemo.config import load_recipe
from holder_nemo.nemo_rl.master_config_schema import TABLE, check_master_config, problems, table

REPO = Path(__file__).resolve().parents[2]
SEVEN_B = REPO / "recipes" / "holderpo_qwen2.5-math-7b.yaml"
PYTHON = os.environ.get("HOLDERPO_NEMO_RL_PYTHON", sys.executable)


def _recipe(*overrides: str) -> dict:
    return OmegaConf.to_container(load_recipe(SEVEN_B, overrides), resolve=True)


@pytest.mark.nemo_rl
def test_the_committed_table_is_what_nemo_rl_generates():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    probe = subprocess.run([PYTHON, "-c", "import nemo_rl.algorithms"], env=env, capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"nemo_rl is not importable by {PYTHON} (set HOLDERPO_NEMO_RL_PYTHON and PYTHONPATH)")
    proc = subprocess.run(
        [PYTHON, "-m", "holder_nemo.nemo_rl.master_config_schema"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == TABLE.read_text(), "regenerate: python -m holder_nemo.nemo_rl.master_config_schema --write"


def test_sections_owned_elsewhere_are_not_in_the_table():
    assert set(table()["sections"]) == {
        "policy",
        "data",
        "grpo",
        "logger",
        "cluster",
        "checkpointing",
        "data_plane",
        "on_policy_distillation",
    }  # not loss_fn (the plugin owns it), not env (the components do)
    assert table()["generated_from"].startswith("nemo_rl 0.7.0: ")


def test_every_shipped_nemo_rl_recipe_fits_the_table():
    for recipe in sorted((REPO / "recipes").glob("holderpo_*.yaml")):
        assert check_master_config(OmegaConf.to_container(load_recipe(recipe), resolve=True)) == [], recipe
    # VllmSpecificArgs requires skip_tokenizer_init, which configure_generation_config fills in: not the recipe's job
    assert "skip_tokenizer_init" in table()["typeddicts"]["VllmSpecificArgs"]["required"]
    assert "skip_tokenizer_init" not in _recipe()["policy"]["generation"]["vllm_cfg"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["~grpo.seed"], [("grpo.seed", "required key is missing (NeMo RL's GRPOConfig: int)")]),
        (["grpo.seed=1.5"], [("grpo.seed", "expected int, got float 1.5")]),
        (["grpo.val_at_start=1"], [("grpo.val_at_start", "expected bool, got int 1")]),
        (
            ["~cluster"],
            [("cluster", "required section is missing (NeMo RL's MasterConfig: a mapping (NeMo RL's ClusterConfig))")],
        ),
        # enabled-tagged alternatives: Megatron's keys are required only while it is on
        (
            ["~policy.megatron_cfg.optimizer.adam_eps"],
            [
                (
                    "policy.megatron_cfg.optimizer.adam_eps",
                    "required key is missing (NeMo RL's MegatronOptimizerConfig: float)",
                )
            ],
        ),
        (["policy.megatron_cfg.enabled=false", "~policy.megatron_cfg.optimizer.adam_eps"], []),
        (
            ["policy.megatron_cfg.enabled=maybe"],
            [("policy.megatron_cfg.enabled", "must be true or false, got str 'maybe'")],
        ),
        # Literal values
        (
            ["policy.generation.vllm_cfg.kv_cache_dtype=fp16"],
            [
                (
                    "policy.generation.vllm_cfg.kv_cache_dtype",
                    'must be one of "auto", "fp8", "fp8_e4m3", got str \'fp16\'',
                )
            ],
        ),
        # vLLM: VllmConfig's keys, but not those NeMo RL fills in before VllmGeneration reads them
        (
            ["~policy.generation.vllm_cfg.gpu_memory_utilization"],
            [
                (
                    "policy.generation.vllm_cfg.gpu_memory_utilization",
                    "required key is missing (NeMo RL's VllmSpecificArgs: float)",
                )
            ],
        ),
        # lists, unions with null
        (
            ["policy.generation.stop_token_ids=[1,x]"],
            [("policy.generation.stop_token_ids[1]", "expected int, got str 'x'")],
        ),
        (["policy.generation.top_k=null"], []),
    ],
    ids=str,
)
def test_the_table_refuses_what_master_config_refuses(overrides, expected):
    try:
        recipe = _recipe(*overrides)
    except Exception:
        pytest.fail(f"the override itself does not apply: {overrides}")
    assert check_master_config(recipe) == expected


def test_a_union_of_shapes_reports_the_closest_alternative():
    data_train = table()["typeddicts"]["DataConfig"]["required"]["train"]  # a dataset, or a list of them
    assert problems([{"data_path": 3}], data_train, "data.train") == [
        ("data.train[0].data_path", "expected str, got int 3")
    ]
    assert problems(7, data_train, "data.train")[0][1].startswith("expected a mapping (NeMo RL's ")
