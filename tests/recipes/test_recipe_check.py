"""`holderpo recipe check`: every shipped recipe passes; each rule fails on a recipe that breaks it, naming the key,
exit 2 (the exit code of bad input in every holderpo command)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from holder_nemo.config import load_recipe
from holder_nemo.recipe_check.cli import check, main

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
SHIPPED = sorted(RECIPES_DIR.glob("*.yaml"))
SEVEN_B = str(RECIPES_DIR / "holderpo_qwen2.5-math-7b.yaml")
SCALE_OUT = str(RECIPES_DIR / "holderpo_qwen2.5-32b-4n8g.yaml")
ALFWORLD = str(RECIPES_DIR / "holderpo_alfworld_qwen2.5-1.5b.yaml")
FAILED = 2


@pytest.fixture(autouse=True)
def data_here(tmp_path_factory, monkeypatch):
    """The data the recipes name, where they name it (as on a node that mounts it): no path warnings."""
    root = tmp_path_factory.mktemp("data")
    for name in ("math_lvl3to5.jsonl", "math500.jsonl"):
        (root / name).write_text('{"problem": "1 + 1", "answer": "2"}\n')
    for split in ("train", "valid_seen"):
        (root / "alfworld" / "json_2.1.1" / split).mkdir(parents=True)
    monkeypatch.setenv("HOLDERPO_DATA_DIR", str(root))
    monkeypatch.setenv("ALFWORLD_DATA", str(root / "alfworld"))
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv, "--no-config"])
    out, err = capsys.readouterr()
    return code, out, err


def test_recipes_are_shipped():
    names = {p.name for p in SHIPPED}
    for expected in (
        "holderpo_base.yaml",
        "holderpo_qwen2.5-math-7b.yaml",
        "holderpo_qwen2.5-math-1.5b.yaml",
        "holderpo_deepseek-r1-distill-qwen-7b.yaml",
        "holderpo_qwen3-4b-base.yaml",
        "holderpo_qwen3-8b-base.yaml",
        "holderpo_qwen2.5-32b-4n8g.yaml",
    ):
        assert expected in names


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_passes(recipe, capsys):
    code, out, err = _run(capsys, str(recipe))
    assert code == 0, err
    assert "error:" not in err
    assert "OK:" in out


def test_prints_resolved_config_and_summary(capsys):
    assert main(["check", SEVEN_B]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out.split("summary (")[0])
    assert resolved["policy"]["model_name"] == "Qwen/Qwen2.5-Math-7B"
    assert resolved["loss_fn"]["holder"]["schedule"]["steps"] == 500  # interpolation resolved
    assert "TP 2 x PP 1 x CP 1 x DP 4" in out
    assert "128 prompts x 8 = 1024 trajectories" in out
    assert "8 optimizer updates per step" in out
    assert "p(1) = 1.992, p(500) = -2" in out


def test_paper_protocol_values():
    """The 7B recipe carries the paper's maths protocol (paper §4.1, docs/eval.md)."""
    cfg = load_recipe(SEVEN_B)
    assert cfg.grpo.num_prompts_per_step == 128 and cfg.grpo.num_generations_per_prompt == 8
    assert cfg.grpo.max_num_steps == 500
    assert cfg.policy.generation.max_new_tokens == 3000
    assert cfg.policy.generation.temperature == 1.0 and cfg.policy.generation.top_p == 1.0
    assert cfg.policy.megatron_cfg.optimizer.lr == 1e-6
    assert cfg.policy.megatron_cfg.scheduler.lr_decay_style == "constant"
    assert cfg.grpo.num_prompts_per_step * cfg.grpo.num_generations_per_prompt / cfg.policy.train_global_batch_size == 8
    assert cfg.loss_fn.reference_policy_kl_penalty == 0
    assert cfg.loss_fn.ratio_clip_min == cfg.loss_fn.ratio_clip_max == 0.2
    assert cfg.loss_fn.holder.clip_mode == "sequence"
    schedule = dict(cfg.loss_fn.holder.schedule)
    assert schedule["kind"] == "linear_dec" and schedule["p_max"] == 2.0 and schedule["p_min"] == -2.0
    assert schedule["steps"] == 500
    assert cfg.policy.megatron_cfg.enabled and cfg.policy.sequence_packing.enabled
    assert cfg.policy.generation.colocated.enabled
    assert cfg.cluster.num_nodes * cfg.cluster.gpus_per_node == 8


def test_qwen_math_chat_template_renders_the_papers_prompt():
    """policy.tokenizer.chat_template renders exactly understand-r1-zero's apply_qwen_math_template string."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    template = load_recipe(SEVEN_B).policy.tokenizer.chat_template
    problem = "What is $\\frac{1}{2} + 3$?"
    expected = (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\n" + problem + "<|im_end|>\n<|im_start|>assistant\n"
    )
    rendered = _compile_jinja_template(template).render(
        messages=[{"role": "user", "content": problem}], add_generation_prompt=True
    )
    assert rendered == expected


# (recipe, overrides, key the error must name)
BROKEN = [
    # required keys and types
    (SEVEN_B, ["~grpo.val_period"], "grpo.val_period"),
    (SEVEN_B, ["grpo.num_prompts_per_step=many"], "grpo.num_prompts_per_step"),
    (SEVEN_B, ["grpo.normalize_rewards=1"], "grpo.normalize_rewards"),
    (SEVEN_B, ["cluster.num_nodes=0"], "cluster.num_nodes"),
    (SEVEN_B, ["policy.generation.top_p=x"], "policy.generation.top_p"),
    (SEVEN_B, ["~policy.megatron_cfg.optimizer.adam_eps"], "policy.megatron_cfg.optimizer.adam_eps"),
    (SEVEN_B, ["~policy.generation.vllm_cfg.gpu_memory_utilization"], "policy.generation.vllm_cfg"),
    (SEVEN_B, ["grpo.num_prompts_per_step=0"], "grpo.num_prompts_per_step"),
    (SEVEN_B, ["checkpointing.save_period=0"], "checkpointing.save_period"),
    # HölderPO block
    (SEVEN_B, ["~loss_fn.holder"], "loss_fn.holder"),
    (SEVEN_B, ["~loss_fn.holder.schedule"], "loss_fn.holder.schedule"),
    (SEVEN_B, ["loss_fn.holder.schedule.kind=exponential"], "loss_fn.holder.schedule"),
    (SEVEN_B, ["loss_fn.holder.schedule.p_min=3.0"], "loss_fn.holder.schedule"),
    (SEVEN_B, ["loss_fn.holder.schedule.steps=0"], "loss_fn.holder.schedule"),
    (SEVEN_B, ["+loss_fn.holder.schedule.warmup=3"], "loss_fn.holder.schedule"),
    (SEVEN_B, ["loss_fn.holder.clip_mode=seq"], "loss_fn.holder.clip_mode"),
    (SEVEN_B, ["loss_fn.holder.check_finite=maybe"], "loss_fn.holder.check_finite"),
    (SEVEN_B, ["loss_fn.holder.importance_ratio=behaviour"], "loss_fn.holder.importance_ratio"),
    (SEVEN_B, ["+loss_fn.holder.p=1.0"], "loss_fn.holder.p"),
    (SEVEN_B, ["loss_fn.ratio_clip_min=1.5"], "loss_fn.ratio_clip_min"),
    # parallel layout
    (SEVEN_B, ["policy.megatron_cfg.tensor_model_parallel_size=3"], "cluster"),
    (SEVEN_B, ["cluster.gpus_per_node=6", "policy.megatron_cfg.tensor_model_parallel_size=4"], "cluster"),
    (
        SEVEN_B,
        ["policy.generation.vllm_cfg.tensor_parallel_size=16"],
        "policy.generation.vllm_cfg.tensor_parallel_size",
    ),
    (SEVEN_B, ["policy.generation.vllm_cfg.tensor_parallel_size=3"], "policy.generation.vllm_cfg.tensor_parallel_size"),
    (SCALE_OUT, ["policy.sequence_packing.enabled=false"], "policy.sequence_packing.enabled"),
    (
        SCALE_OUT,
        ["policy.max_total_sequence_length=8196", "policy.generation.max_new_tokens=7000"],
        "policy.max_total_sequence_length",
    ),
    (SCALE_OUT, ["policy.make_sequence_length_divisible_by=4"], "policy.make_sequence_length_divisible_by"),
    (
        SEVEN_B,
        [
            "policy.dynamic_batching.enabled=true",
            "+policy.dynamic_batching.train_mb_tokens=4096",
            "+policy.dynamic_batching.sequence_length_round=64",
        ],
        "policy.sequence_packing.enabled",
    ),
    (SEVEN_B, ["policy.dtensor_cfg.enabled=true"], "policy.megatron_cfg.enabled"),
    (SEVEN_B, ["policy.sequence_packing.train_mb_tokens=2048"], "policy.sequence_packing.train_mb_tokens"),
    # batch arithmetic
    (SEVEN_B, ["policy.train_global_batch_size=96"], "policy.train_global_batch_size"),
    (
        SEVEN_B,
        ["policy.train_global_batch_size=64", "policy.train_micro_batch_size=32"],
        "policy.train_global_batch_size",
    ),
    (SEVEN_B, ["policy.generation.max_new_tokens=4096"], "policy.generation.max_new_tokens"),
    # NeMo RL start-up conditions
    (SEVEN_B, ["data.validation=null"], "data.validation"),
    (SEVEN_B, ["loss_fn.reference_policy_kl_penalty=0.01"], "grpo.skip_reference_policy_logprobs_calculation"),
    (SCALE_OUT, ["policy.logprob_batch_size=2"], "policy.logprob_batch_size"),  # Policy.__init__, TP >= 4
    (SEVEN_B, ["+policy.megatron_cfg.use_linear_ce_fusion_loss=true"], "policy.megatron_cfg.use_linear_ce_fusion_loss"),
    # absent means NeMo RL's ClippedPGLossConfig default, token_level_loss: true
    (SEVEN_B, ["~loss_fn.token_level_loss"], "loss_fn.token_level_loss"),
    # this entry point runs synchronous grpo_train
    (SEVEN_B, ["grpo.async_grpo.enabled=true"], "grpo.async_grpo.enabled"),
    (SEVEN_B, ["data_plane={enabled: true}"], "data_plane.enabled"),
    # grpo.setup: dedicated generation resources (one node, then several)
    (SEVEN_B, ["policy.generation.colocated.enabled=false"], "policy.generation.colocated.resources.gpus_per_node"),
    (
        SEVEN_B,
        [
            "policy.generation.colocated.enabled=false",
            "policy.generation.colocated.resources.gpus_per_node=4",
            "policy.generation.colocated.resources.num_nodes=2",
        ],
        "policy.generation.colocated.resources.num_nodes",
    ),
    (
        SEVEN_B,
        ["policy.generation.colocated.enabled=false", "policy.generation.colocated.resources.gpus_per_node=8"],
        "policy.generation.colocated.resources.gpus_per_node",
    ),
    (SCALE_OUT, ["policy.generation.colocated.enabled=false"], "policy.generation.colocated.resources.num_nodes"),
    (
        SCALE_OUT,
        [
            "policy.generation.colocated.enabled=false",
            "policy.generation.colocated.resources.num_nodes=1",
            "policy.generation.colocated.resources.gpus_per_node=4",
        ],
        "policy.generation.colocated.resources.gpus_per_node",
    ),
    (
        SCALE_OUT,
        [
            "policy.generation.colocated.enabled=false",
            "policy.generation.colocated.resources.num_nodes=4",
            "policy.generation.colocated.resources.gpus_per_node=8",
        ],
        "policy.generation.colocated.resources.num_nodes",
    ),
    # grpo.setup: keys it reads, dynamic sampling, dataloaders, backends, FP8
    (SEVEN_B, ["~grpo.batch_multiplier"], "grpo.batch_multiplier"),
    (SEVEN_B, ["grpo.batch_multiplier=2"], "grpo.batch_multiplier"),
    (SEVEN_B, ["~data.use_multiple_dataloader"], "data.use_multiple_dataloader"),
    (
        SEVEN_B,
        ["data.use_multiple_dataloader=true", "+data.num_prompts_per_dataloader=48"],
        "data.num_prompts_per_dataloader",
    ),
    (SEVEN_B, ["policy.generation.backend=vlm"], "policy.generation.backend"),
    (SEVEN_B, ["policy.generation.vllm_cfg.precision=fp8"], "policy.generation.vllm_cfg.precision"),
    (SEVEN_B, ["policy.generation.vllm_cfg.kv_cache_dtype=fp8"], "policy.generation.vllm_cfg.kv_cache_dtype"),
    # Policy.__init__
    (SEVEN_B, ["policy.draft.enabled=true"], "policy.draft.enabled"),
    (
        ALFWORLD,
        ["policy.dtensor_cfg._v2=false", "++policy.dtensor_cfg.lora_cfg={enabled: true}"],
        "policy.dtensor_cfg.lora_cfg.enabled",
    ),
    (
        ALFWORLD,
        ["policy.dtensor_cfg._v2=false", "++policy.dtensor_cfg.dp_replicate_size=2"],
        "policy.dtensor_cfg.dp_replicate_size",
    ),
    (
        SEVEN_B,
        [
            "policy.megatron_cfg.pipeline_model_parallel_size=2",
            "policy.sequence_packing.enabled=false",
            "policy.dynamic_batching.enabled=true",
            "+policy.dynamic_batching.train_mb_tokens=4096",
            "+policy.dynamic_batching.sequence_length_round=64",
        ],
        "policy.dynamic_batching.enabled",
    ),
    # VllmGeneration.__init__
    (SEVEN_B, ["policy.generation.vllm_cfg.pipeline_parallel_size=2"], "policy.generation.vllm_cfg.async_engine"),
    (
        SEVEN_B,
        ["policy.generation.vllm_cfg.tensor_parallel_size=2", "policy.generation.vllm_cfg.expert_parallel_size=3"],
        "policy.generation.vllm_cfg.expert_parallel_size",
    ),
    (
        SEVEN_B,
        ["policy.generation.vllm_cfg.expert_parallel_size=2", "policy.generation.vllm_cfg.async_engine=true"],
        "policy.generation.vllm_cfg.async_engine",
    ),
    (SEVEN_B, ["policy.generation.top_k=0"], "policy.generation.top_k"),
    (SEVEN_B, ["policy.generation.top_p=0.0"], "policy.generation.top_p"),
    (SEVEN_B, ["policy.generation.top_p=1.5"], "policy.generation.top_p"),
    # checkpointing
    (SEVEN_B, ["checkpointing.checkpoint_dir=''"], "checkpointing.checkpoint_dir"),
    (SEVEN_B, ["checkpointing.checkpoint_dir=null"], "checkpointing.checkpoint_dir"),
    (SEVEN_B, ["checkpointing.metric_name=accuracy"], "checkpointing.metric_name"),
    # Policy.save_checkpoint: a save format only with DTensor v2 (every GPU recipe died at its first save on this)
    (SEVEN_B, ["checkpointing.model_save_format=safetensors"], "checkpointing.model_save_format"),
    (ALFWORLD, ["policy.dtensor_cfg._v2=false"], "checkpointing.model_save_format"),
    (ALFWORLD, ["checkpointing.model_save_format=hdf5"], "checkpointing.model_save_format"),
    # NeMo RL v0.7.0's DTensor v2 worker saves asynchronously unless told; grpo_train renames without waiting
    (ALFWORLD, ["~checkpointing.is_async"], "checkpointing.is_async"),
    (ALFWORLD, ["checkpointing.is_async=true"], "checkpointing.is_async"),
]


@pytest.mark.parametrize(("recipe", "overrides", "key"), BROKEN, ids=lambda v: v if isinstance(v, str) else None)
def test_broken_recipe_fails_naming_the_key(recipe, overrides, key, capsys):
    code, _, err = _run(capsys, recipe, *overrides)
    assert code == FAILED, f"{overrides} should fail"
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert any(line.startswith(f"error: {key}") for line in error_lines), err


DTENSOR_SWITCH = ["policy.dtensor_cfg.enabled=true", "policy.megatron_cfg.enabled=false"]
MEGATRON_RECIPES = [p for p in SHIPPED if load_recipe(p).get("policy", {}).get("megatron_cfg", {}).get("enabled")]


@pytest.mark.parametrize("recipe", MEGATRON_RECIPES, ids=lambda p: p.name)
def test_documented_dtensor_switch_passes(recipe, capsys):
    """docs/recipes.md's switch to DTensor works on every Megatron recipe: the base ships NeMo RL's required DTensor
    keys (five were missing), and the DTensor workers' optimizer and schedule are Megatron's AdamW at a constant lr
    (the workers index policy.optimizer.name and iterate policy.scheduler, so neither may be null)."""
    code, out, err = _run(capsys, str(recipe), *DTENSOR_SWITCH)
    assert code == 0, err
    assert "training     dtensor:" in out
    policy = load_recipe(recipe, DTENSOR_SWITCH).policy
    adam = policy.megatron_cfg.optimizer
    assert policy.optimizer.name == "torch.optim.AdamW"
    assert dict(policy.optimizer.kwargs) == {
        "lr": adam.lr, "weight_decay": adam.weight_decay, "betas": [adam.adam_beta1, adam.adam_beta2],
        "eps": adam.adam_eps, "foreach": False, "fused": False,
    }  # fmt: skip
    assert [s.get("name") for s in policy.scheduler] == ["torch.optim.lr_scheduler.ConstantLR", None]
    assert policy.scheduler[0].kwargs.factor == 1.0 and list(policy.scheduler[1].milestones) == []
    assert policy.dtensor_cfg.activation_checkpointing and policy.dtensor_cfg._v2


@pytest.mark.parametrize(
    "overrides",
    [
        ["policy.generation.top_k=-1"],  # VllmGeneration: -1 means no filtering
        ["policy.generation.top_k=20"],
        ["grpo.use_dynamic_sampling=true", "grpo.batch_multiplier=2"],
        ["policy.generation.vllm_cfg.pipeline_parallel_size=2", "policy.generation.vllm_cfg.async_engine=true"],
        ["policy.generation.vllm_cfg.tensor_parallel_size=2", "policy.generation.vllm_cfg.expert_parallel_size=4"],
        ["loss_fn.ratio_clip_c=1.5"],
        ["data.use_multiple_dataloader=true", "+data.num_prompts_per_dataloader=32"],
    ],
    ids=str,
)
def test_what_nemo_rl_accepts_passes(capsys, overrides):
    code, _, err = _run(capsys, SEVEN_B, *overrides)
    assert code == 0, err


@pytest.mark.parametrize("value", ["0.5", "1.0"])
def test_one_bad_value_is_one_error_in_one_wording(capsys, tmp_path, value):
    """ratio_clip_c (the dual clip) must exceed 1 (NeMo RL asserts c > 1): one error, the plugin's, in both kinds of
    recipe (the NeMo RL key table leaves loss_fn to the plugin, which owns it)."""
    _, _, nemo_rl = _run(capsys, SEVEN_B, f"loss_fn.ratio_clip_c={value}")
    _, _, reference = _run(capsys, str(_reference_recipe(tmp_path)), f"+loss_fn.ratio_clip_c={value}")
    for err in (nemo_rl, reference):
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors == [f"error: loss_fn.ratio_clip_c: Input should be greater than 1 (got {value})"], err


def test_local_paths_warn_on_a_login_node_and_fail_with_strict(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOLDERPO_DATA_DIR", str(tmp_path / "not_here"))
    code, out, err = _run(capsys, SEVEN_B)
    assert code == 0 and "OK:" in out
    missing = str(tmp_path / "not_here" / "math_lvl3to5.jsonl")
    assert f"warning: data.train.data_path: no such file {missing!r} here" in err
    code, _, err = _run(capsys, SEVEN_B, "--strict")
    assert code == FAILED and f"error: data.train.data_path: no such file {missing!r} here" in err
    assert "error: data.validation.data_path" in err
    # a Hugging Face Hub id (namespace/name) is not a local path; a directory with more components is
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "not_here"))
    code, _, err = _run(capsys, ALFWORLD, "--strict")
    assert code == FAILED and "error: data.train.data_path: no such directory" in err and "model_name" not in err


def test_tp4_logprob_batch_rule_can_be_bypassed_as_nemo_rl_allows(capsys, monkeypatch):
    monkeypatch.setenv("NRL_IGNORE_TP_ACCURACY_CHECK", "1")
    code, _, err = _run(capsys, SCALE_OUT, "policy.logprob_batch_size=2")
    assert code == 0, err
    assert "warning: policy.logprob_batch_size" in err and "bypassed by NRL_IGNORE_TP_ACCURACY_CHECK" in err


def test_no_validation_set_is_fine_without_validation(capsys):
    code, _, err = _run(capsys, SEVEN_B, "data.validation=null", "grpo.val_period=0", "grpo.val_at_end=false")
    assert code == 0, err


def test_layout_error_message_names_the_sizes(capsys):
    _, _, err = _run(capsys, SEVEN_B, "policy.megatron_cfg.tensor_model_parallel_size=3")
    assert "must be divisible by TP x PP x CP (3 x 1 x 1 = 3" in err
    assert "policy.megatron_cfg.tensor_model_parallel_size" in err


def test_paper_four_gpu_layout_passes(capsys):
    code, out, err = _run(capsys, SEVEN_B, "cluster.gpus_per_node=4")
    assert code == 0, err
    assert "TP 2 x PP 1 x CP 1 x DP 2" in out


def test_non_colocated_generation_uses_the_remaining_gpus(capsys):
    overrides = [
        "policy.generation.colocated.enabled=false",
        "policy.generation.colocated.resources.gpus_per_node=4",
    ]
    code, out, err = _run(capsys, SEVEN_B, *overrides)
    assert code == 0, err
    assert "TP 2 x PP 1 x CP 1 x DP 2" in out and "dedicated GPUs" in out


def test_schedule_longer_than_run_warns_but_passes(capsys):
    code, _, err = _run(capsys, SEVEN_B, "loss_fn.holder.schedule.steps=1000")
    assert code == 0
    warning = [line for line in err.splitlines() if line.startswith("warning: loss_fn.holder.schedule.steps")]
    assert warning and "never reaches its end value p = -2" in warning[0]
    assert "the run ends at p = 0" in warning[0]  # linear 2 -> -2 over 1000 steps is at 0 after 500


def test_schedule_shorter_than_run_is_fine(capsys):
    code, _, err = _run(capsys, SEVEN_B, "loss_fn.holder.schedule.steps=250")
    assert code == 0 and "warning" not in err


def test_unknown_override_key_is_an_error(capsys):
    code, _, err = _run(capsys, SEVEN_B, "grpo.num_promts_per_step=4")
    assert code == FAILED and "num_promts_per_step" in err


def test_report_collects_all_errors_at_once():
    cfg = load_recipe(SEVEN_B, ["policy.train_global_batch_size=96", "loss_fn.holder.clip_mode=x"])
    from omegaconf import OmegaConf

    report, layout, kind, _ = check(OmegaConf.to_container(cfg))
    assert kind == "nemo_rl" and layout is not None and layout.dp == 4
    keys = {f.key for f in report.errors}
    assert {"policy.train_global_batch_size", "loss_fn.holder.clip_mode"} <= keys


# ------------------------------------------------------------------------------------ reference-run (CPU) recipes


def _reference_recipe(tmp_path: Path, **sections) -> Path:
    recipe = {
        "grpo": {"num_prompts_per_step": 4, "num_generations_per_prompt": 4, "max_num_steps": 20},
        "loss_fn": {
            "ratio_clip_min": 0.2,
            "ratio_clip_max": 0.2,
            "reference_policy_kl_penalty": 0.0,  # the schema's default is NeMo RL's 0.01; no reference model here
            "holder": {
                "schedule": {"kind": "linear_dec", "p_max": 2.0, "p_min": -2.0, "steps": 20},
                "clip_mode": "sequence",
                "check_finite": True,
            },
        },
        "policy": {"train_global_batch_size": 8, "train_micro_batch_size": 4},
        "checkpointing": {"enabled": True, "checkpoint_dir": str(tmp_path / "run")},
    }
    for section, values in sections.items():
        recipe[section].update(values)
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_reference_recipe_is_delegated_and_passes(tmp_path, capsys):
    code, out, err = _run(capsys, str(_reference_recipe(tmp_path)))
    assert code == 0, err
    assert "reference recipe" in out
    assert "built-in tiny Qwen2" in out and str(tmp_path / "run") in out  # the reference schema's defaults


def test_reference_recipe_checkpoint_dir_default_applies(tmp_path, capsys):
    path = _reference_recipe(tmp_path)
    code, _, err = _run(capsys, str(path), "checkpointing.checkpoint_dir=''")
    assert code == FAILED and "checkpointing.checkpoint_dir" in err


def test_reference_recipe_batch_rule_from_its_own_schema(tmp_path, capsys):
    code, _, err = _run(capsys, str(_reference_recipe(tmp_path, policy={"train_global_batch_size": 5})))
    assert code == FAILED and "policy.train_global_batch_size" in err


def test_reference_recipe_shared_holder_block_is_checked(tmp_path, capsys):
    path = _reference_recipe(tmp_path)
    code, _, err = _run(capsys, str(path), "loss_fn.holder.schedule.kind=zigzag")
    assert code == FAILED and "error: loss_fn.holder.schedule" in err


def test_reference_recipe_unknown_key(tmp_path, capsys):
    code, _, err = _run(capsys, str(_reference_recipe(tmp_path)), "+grpo.bogus=1")
    assert code == FAILED and "grpo.bogus" in err


@pytest.mark.parametrize("recipe", sorted(Path(__file__).resolve().parents[2].glob("recipes/*.yaml")), ids=str)
def test_every_recipe_opens_with_its_launch_command(recipe):
    head = "\n".join(recipe.read_text().splitlines()[:2])
    assert "python -m holder_nemo.nemo_rl.run_grpo --config recipes/" in head or "holderpo train" in head, head
