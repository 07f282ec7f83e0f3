"""Clear errors (unknown benchmark, missing file, model dir without weights/tokenizer) and model-layout detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny_model import write_jsonl

from holder_nemo.eval.benchmarks import BenchmarkError, load_benchmark
from holder_nemo.eval.cli import main as eval_main
from holder_nemo.eval.model_source import ModelSourceError, converter_command, resolve_model


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "data" / "aime24.jsonl", [{"problem": "What is 3+4?", "answer": "7"}])
    return tmp_path / "data"


def _copy_without(src: Path, dst: Path, *patterns: str) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*patterns))
    return dst


def test_unknown_benchmark_is_rejected_with_allowed_names(tiny_model_dir: Path, data_dir: Path, capsys) -> None:
    rc = eval_main(
        [str(tiny_model_dir), "--backend", "hf", "--benchmarks", "aime24,gsm8k", "--data-dir", str(data_dir)]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "benchmarks" in err and "gsm8k" in err and "olympiadbench" in err


def test_missing_benchmark_file_names_the_path(tiny_model_dir: Path, data_dir: Path, capsys) -> None:
    rc = eval_main([str(tiny_model_dir), "--backend", "hf", "--benchmarks", "aime24,amc", "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(data_dir / "amc.jsonl") in err and "holderpo data prepare" in err


def test_malformed_benchmark_lines(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "amc.jsonl", [{"problem": "x"}])
    with pytest.raises(BenchmarkError, match=r"amc.jsonl:1: missing key\(s\) \['answer'\]"):
        load_benchmark(tmp_path, "amc")
    (tmp_path / "math500.jsonl").write_text("{not json\n")
    with pytest.raises(BenchmarkError, match=r"math500\.jsonl:1: not valid JSON"):
        load_benchmark(tmp_path, "math500")


@pytest.mark.parametrize(
    ("removed", "message"),
    [(("*.safetensors",), "weights"), (("tokenizer.json", "tokenizer_config.json"), "tokenizer")],
)
def test_model_dir_without_weights_or_tokenizer(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, capsys, removed: tuple[str, ...], message: str
) -> None:
    broken = _copy_without(tiny_model_dir, tmp_path / "broken", *removed)
    rc = eval_main([str(broken), "--backend", "hf", "--benchmarks", "aime24", "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not a usable Hugging Face model" in err and message in err


def test_nonexistent_model_path(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model(tmp_path / "nope")
    assert resolve_model("Qwen/Qwen2.5-Math-7B").source == "hub"  # passed through to transformers / vLLM


def test_invalid_settings_name_the_field(tiny_model_dir: Path, capsys) -> None:
    assert eval_main([str(tiny_model_dir), "--max-new-tokens", "0"]) == 2
    assert "max_new_tokens" in capsys.readouterr().err
    assert eval_main([str(tiny_model_dir), "--set", "max_new_token=5"]) == 2
    assert "max_new_token" in capsys.readouterr().err
    assert eval_main([str(tiny_model_dir), "--pass-k-benchmarks", "aime25"]) == 2  # not among the benchmarks
    assert "pass_k_benchmarks" in capsys.readouterr().err


def test_print_config_defaults_are_the_paper_protocol(tiny_model_dir: Path, capsys) -> None:
    import yaml

    assert eval_main([str(tiny_model_dir), "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["benchmarks"] == ["aime24", "amc", "math500", "minerva", "olympiadbench"]
    assert (cfg["temperature"], cfg["n_samples"], cfg["max_new_tokens"], cfg["max_model_len"]) == (0.0, 1, 4096, 5120)
    assert (cfg["prompt_template"], cfg["backend"]) == ("qwen_math", "vllm")
    assert eval_main([str(tiny_model_dir), "--preset", "qwen3", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["benchmarks"] == ["math500", "aime25", "amc", "minerva", "olympiadbench"]
    assert (cfg["pass_k_benchmarks"], cfg["pass_k"], cfg["pass_k_temperature"]) == (["aime25"], 8, 0.7)


def _nemo_rl_step(root: Path, step: int) -> Path:
    step_dir = root / f"step_{step}"
    (step_dir / "policy" / "weights").mkdir(parents=True)
    (step_dir / "config.yaml").write_text("policy:\n  model_name: Qwen/Qwen2.5-Math-7B\n")
    return step_dir


def test_nemo_rl_consolidated_checkpoint_is_used_directly(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    step_dir = _nemo_rl_step(tmp_path / "ckpt", 40)
    weights = step_dir / "policy" / "weights" / "model" / "consolidated"
    _copy_without(tiny_model_dir, weights, "tokenizer*", "chat_template.jinja")
    _copy_without(tiny_model_dir, step_dir / "policy" / "tokenizer", "*.safetensors", "config.json")
    resolved = resolve_model(step_dir)
    assert (resolved.source, resolved.step, Path(resolved.model)) == ("nemo_rl_consolidated", 40, weights)
    assert Path(resolved.tokenizer) == step_dir / "policy" / "tokenizer"
    out = tmp_path / "out"
    args = [str(step_dir), "--backend", "hf", "--benchmarks", "aime24", "--data-dir", str(data_dir)]
    assert eval_main([*args, "--output-dir", str(out), "--dtype", "float32", "--max-new-tokens", "16"]) == 0
    assert "| ckpt/step_40 | 100.0 | 100.0 |" in (out / "results.md").read_text()


def test_checkpoint_root_asks_for_a_step(tmp_path: Path) -> None:
    for step in (10, 200, 30):
        _nemo_rl_step(tmp_path / "ckpt", step)
    with pytest.raises(ModelSourceError, match=r"steps \['step_10', 'step_30', 'step_200'\].*step_200"):
        resolve_model(tmp_path / "ckpt")


def _nemo_rl_converter_importable() -> bool:
    try:
        import nemo_rl.utils.native_checkpoint  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_nemo_rl_converter_importable(), reason="nemo_rl is importable here: the conversion would run")
def test_dcp_checkpoint_without_nemo_rl_gives_the_converter_command(tmp_path: Path) -> None:
    step_dir = _nemo_rl_step(tmp_path, 500)
    (step_dir / "policy" / "weights" / "model").mkdir()
    (step_dir / "policy" / "weights" / "model" / ".metadata").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="nemo_rl is not importable") as info:
        resolve_model(step_dir)
    assert "examples/converters/convert_dcp_to_hf.py" in str(info.value)
    assert f"--dcp-ckpt-path {step_dir / 'policy' / 'weights'}" in str(info.value)
    assert f"--hf-ckpt-path {step_dir / 'hf'}" in str(info.value)


@pytest.mark.skipif(_nemo_rl_converter_importable(), reason="nemo_rl is importable here: the conversion would run")
def test_conversion_needs_the_base_model(tmp_path: Path) -> None:
    """The base model comes from the step's config.yaml (policy.model_name), or --base-model when it has none."""
    step_dir = _nemo_rl_step(tmp_path, 500)
    (step_dir / "policy" / "weights" / ".metadata").write_bytes(b"")
    (step_dir / "config.yaml").write_text("policy:\n  precision: bfloat16\n")
    with pytest.raises(ModelSourceError, match=r"has no policy.model_name: pass --base-model"):
        resolve_model(step_dir)
    with pytest.raises(ModelSourceError, match="nemo_rl is not importable"):  # the next step: the converter
        resolve_model(step_dir, base_model="Qwen/Qwen2.5-Math-7B")


def test_megatron_checkpoint_command_uses_the_latest_iteration(tmp_path: Path) -> None:
    step_dir = _nemo_rl_step(tmp_path, 500)
    weights = step_dir / "policy" / "weights"
    for it in (100, 500):
        (weights / f"iter_{it:07d}").mkdir()
    (weights / "latest_checkpointed_iteration.txt").write_text("500\n")
    command = converter_command(step_dir, step_dir / "hf")
    assert command.startswith("uv run --extra mcore python examples/converters/convert_megatron_to_hf.py")
    assert f"--megatron-ckpt-path {weights / 'iter_0000500'}" in command


def test_existing_export_is_reused(tiny_model_dir: Path, tmp_path: Path) -> None:
    step_dir = _nemo_rl_step(tmp_path, 7)
    (step_dir / "policy" / "weights" / ".metadata").write_bytes(b"")
    shutil.copytree(tiny_model_dir, step_dir / "hf")
    resolved = resolve_model(step_dir)
    assert (resolved.source, Path(resolved.model)) == ("nemo_rl_dcp", step_dir / "hf")


def test_max_model_len_beyond_the_models_positions(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, capsys
) -> None:
    """Qwen2.5-Math declares 4,096 positions < the paper's max_model_len 5,120: refused unless allowed (as vLLM)."""
    import json

    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "short_context")
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 4096
    (model_dir / "config.json").write_text(json.dumps(config))
    args = [str(model_dir), "--backend", "hf", "--benchmarks", "aime24", "--data-dir", str(data_dir)]
    args += ["--output-dir", str(tmp_path / "out"), "--dtype", "float32", "--max-new-tokens", "16"]
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    assert "max_model_len=5120 exceeds the model's max_position_embeddings=4096" in err
    assert "allow_long_context=true" in err
    assert eval_main([*args, "--set", "allow_long_context=true"]) == 0
    assert eval_main([*args, "--set", "max_model_len=4096"]) == 0


def test_prompt_longer_than_max_model_len(tiny_model_dir: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    args = [str(tiny_model_dir), "--backend", "hf", "--benchmarks", "aime24", "--data-dir", str(data_dir)]
    assert eval_main([*args, "--output-dir", str(tmp_path), "--set", "max_model_len=50"]) == 2
    assert "have prompts of >= max_model_len=50 tokens" in capsys.readouterr().err
