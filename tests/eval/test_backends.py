"""HF backend details that must match vLLM: stop tokens, finish reasons, model generation_config ignored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from holder_nemo.eval.backends import HFBackend, SamplingSettings, stop_token_ids
from holder_nemo.eval.model_source import ResolvedModel
from holder_nemo.eval.prompts import apply_qwen_math_template
from holder_nemo.eval.settings import EvalConfig


def _model(path: str) -> ResolvedModel:
    return ResolvedModel(path, path, "hf_dir")


def test_stop_token_ids_union_of_tokenizer_and_generation_config() -> None:
    tokenizer = SimpleNamespace(eos_token_id=7)
    assert stop_token_ids(tokenizer, SimpleNamespace(eos_token_id=[3, 7])) == [7, 3]
    assert stop_token_ids(tokenizer, SimpleNamespace(eos_token_id=None)) == [7]
    assert stop_token_ids(SimpleNamespace(eos_token_id=None), SimpleNamespace(eos_token_id=5)) == [5]


def test_model_generation_config_does_not_change_decoding(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A generation_config.json with sampling defaults (as instruct models ship) must not leak into greedy
    decoding or into our sampling settings: vLLM ignores it when SamplingParams are given."""
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    # min_new_tokens would suppress the stop token; top_k=1 / top_p would change sampling.
    gen.update({"min_new_tokens": 20, "repetition_penalty": 1e6, "top_k": 1, "top_p": 0.01, "do_sample": True})
    gen_path.write_text(json.dumps(gen))
    backend = HFBackend(_model(str(model_dir)), EvalConfig(model=str(model_dir), dtype="float32"))
    ids = [backend.tokenizer(apply_qwen_math_template("What is 3+4?"))["input_ids"]]
    greedy = backend.generate(ids, SamplingSettings(n=1, temperature=0.0, top_p=1.0, max_new_tokens=[32], seed=0))
    assert [(g.text, g.finish_reason, g.num_tokens) for g in greedy[0]] == [("\\boxed{7}", "stop", 10)]
    sampled = backend.generate(ids, SamplingSettings(n=4, temperature=0.7, top_p=1.0, max_new_tokens=[32], seed=0))
    assert [g.text for g in sampled[0]] == ["\\boxed{7}"] * 4


def test_budget_is_per_prompt_within_a_batch(tiny_model_dir: Path) -> None:
    cfg = EvalConfig(model=str(tiny_model_dir), dtype="float32", hf_batch_size=4)
    backend = HFBackend(_model(str(tiny_model_dir)), cfg)
    ids = [backend.tokenizer(apply_qwen_math_template(p))["input_ids"] for p in ("a", "bb", "ccc")]
    out = backend.generate(ids, SamplingSettings(n=1, temperature=0.0, top_p=1.0, max_new_tokens=[3, 32, 10], seed=0))
    assert [(o[0].text, o[0].finish_reason, o[0].num_tokens) for o in out] == [
        ("\\bo", "length", 3),
        ("\\boxed{7}", "stop", 10),  # the stop token is the 10th token: within budget
        ("\\boxed{7}", "stop", 10),
    ]


def test_vllm_backend_call_shape(monkeypatch, tiny_model_dir: Path) -> None:
    """Test double for the CUDA path (no GPU here): a stub `vllm` module on a CUDA platform records how VLLMBackend
    calls the documented API (LLM(...), SamplingParams(...) per prompt, token-id prompts,
    RequestOutput.outputs[k].text/token_ids/finish_reason): exactly the arguments of the NGC image's CUDA vLLM.
    The real engine runs in test_vllm_backend.py, on vLLM's CPU build."""
    import sys
    import types

    from transformers import AutoTokenizer

    calls: dict = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"] = kwargs

        def get_tokenizer(self):
            return AutoTokenizer.from_pretrained(tiny_model_dir)

        def generate(self, prompts, params, use_tqdm=True):
            calls["generate"] = (prompts, [p.kwargs for p in params])
            done = SimpleNamespace(text="\\boxed{7}", token_ids=list(range(10)), finish_reason="stop")
            cut = SimpleNamespace(text="\\bo", token_ids=[1, 2, 3], finish_reason="length")
            return [SimpleNamespace(outputs=[done, cut]) for _ in prompts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    cuda = types.SimpleNamespace(current_platform=types.SimpleNamespace(is_cpu=lambda: False))
    monkeypatch.setitem(sys.modules, "vllm.platforms", cuda)
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    from holder_nemo.eval.backends import VLLMBackend

    cfg = EvalConfig(model="m", tensor_parallel_size=4, seed=3, allow_long_context=True)
    backend = VLLMBackend(ResolvedModel("m", "t", "hub"), cfg)
    assert calls["llm"] == {
        "model": "m",
        "tokenizer": "t",
        "tensor_parallel_size": 4,
        "dtype": "bfloat16",
        "max_model_len": 5120,
        "gpu_memory_utilization": 0.9,
        "seed": 3,
        "trust_remote_code": False,
    }
    import os

    assert os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] == "1"
    out = backend.generate(
        [[1, 2], [3]], SamplingSettings(n=2, temperature=0.7, top_p=1.0, max_new_tokens=[9, 8], seed=5)
    )
    prompts, params = calls["generate"]
    assert prompts == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    assert params == [
        {"n": 2, "temperature": 0.7, "top_p": 1.0, "max_tokens": 9, "seed": 5, "skip_special_tokens": True},
        {"n": 2, "temperature": 0.7, "top_p": 1.0, "max_tokens": 8, "seed": 6, "skip_special_tokens": True},
    ]
    assert [(g.text, g.finish_reason, g.num_tokens) for g in out[0]] == [
        ("\\boxed{7}", "stop", 10),
        ("\\bo", "length", 3),
    ]


def test_vllm_backend_on_the_cpu_build_runs_eager_in_float32(monkeypatch) -> None:
    """On vLLM's CPU build the backend adds enforce_eager and maps dtype "auto" to float32 (as the HF backend on
    CPU); an explicit dtype is kept."""
    import sys
    import types

    calls: list[dict] = []

    class LLM:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def get_tokenizer(self):
            return None

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM))
    cpu = types.SimpleNamespace(current_platform=types.SimpleNamespace(is_cpu=lambda: True))
    monkeypatch.setitem(sys.modules, "vllm.platforms", cpu)
    from holder_nemo.eval.backends import VLLMBackend

    VLLMBackend(ResolvedModel("m", "t", "hub"), EvalConfig(model="m", gpu_memory_utilization=0.1))
    VLLMBackend(ResolvedModel("m", "t", "hub"), EvalConfig(model="m", dtype="bfloat16", gpu_memory_utilization=0.1))
    assert [(c["dtype"], c["enforce_eager"], c["gpu_memory_utilization"]) for c in calls] == [
        ("float32", True, 0.1),
        ("bfloat16", True, 0.1),
    ]
