"""In-training validation agrees with `holderpo eval`: real NeMo RL v0.7.0 code on CPU (skipped without nemo_rl).

- NeMo RL's math data processor + our Jinja chat template produce the exact qwen_math prompt and token ids;
- a NeMo RL DTensor (torch DCP) checkpoint is converted with NeMo RL's converter and evaluated;
- the ``holder_math`` environment scores like ``math_reward`` (gold lists, replies cut by a length limit -> 0), where
  NeMo RL's ``hf_math_verify`` does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import write_jsonl

from holder_nemo.eval.grading import last_boxed_answer
from holder_nemo.eval.prompts import QWEN_MATH_JINJA_PATH, apply_qwen_math_template
from holder_nemo.eval.scoring import math_reward


def _nemo_rl_importable() -> bool:
    # A real import: find_spec("nemo_rl") alone is fooled by the tests/nemo_rl folder (a namespace package).
    try:
        import nemo_rl.environments.math_environment  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = [
    pytest.mark.nemo_rl,
    pytest.mark.skipif(not _nemo_rl_importable(), reason="nemo_rl (v0.7.0, with ray) is not importable"),
]

PROBLEM = "Compute $\\frac{1}{2} + \\frac{1}{3}$."

# (response, answer): cases where the two verifiers disagree, then cases where they agree.
DISAGREE = [("The answer is 4.", "4"), ("\\boxed{3}. Wait, no: \\boxed{4}", "4"), ("Thus $x=\\frac12$", "0.5")]
AGREE = [("so \\boxed{\\frac{1}{2}}", "0.5"), ("\\boxed{5}", "4"), ("\\boxed{10\\text{ cm}}", "10"), ("\\boxed{4", "4")]


def test_nemo_rl_math_processor_renders_the_qwen_math_prompt(tiny_model_dir: Path) -> None:
    from nemo_rl.algorithms.utils import get_tokenizer
    from nemo_rl.data.interfaces import TaskDataSpec
    from nemo_rl.data.processors import math_hf_data_processor

    tokenizer = get_tokenizer({"name": str(tiny_model_dir), "chat_template": str(QWEN_MATH_JINJA_PATH)})
    datum = {
        "messages": [{"role": "user", "content": PROBLEM}, {"role": "assistant", "content": "\\frac{5}{6}"}],
        "task_name": "math",
    }
    spec = TaskDataSpec(task_name="math", prompt_file=None, system_prompt_file=None)
    out = math_hf_data_processor(datum, spec, tokenizer, max_seq_length=1024, idx=0)
    message = out["message_log"][0]
    assert message["content"] == apply_qwen_math_template(PROBLEM)
    ours = tokenizer(apply_qwen_math_template(PROBLEM), add_special_tokens=True)["input_ids"]
    assert message["token_ids"].tolist() == ours
    assert out["extra_env_info"]["ground_truth"] == "\\frac{5}{6}"


def test_dcp_checkpoint_is_converted_with_nemo_rl_and_evaluated(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    import torch.distributed.checkpoint as dcp
    from transformers import AutoModelForCausalLM

    from holder_nemo.eval.cli import main as eval_main
    from holder_nemo.eval.model_source import resolve_model

    step_dir = tmp_path / "results" / "grpo" / "step_12"
    weights = step_dir / "policy" / "weights" / "model"  # DTensor v2 layout
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    dcp.save({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint_id=str(weights))
    shutil.copytree(tiny_model_dir, step_dir / "policy" / "tokenizer", ignore=shutil.ignore_patterns("*.safetensors"))
    (step_dir / "config.yaml").write_text(f"policy:\n  model_name: {tiny_model_dir}\n")

    resolved = resolve_model(step_dir)
    assert (resolved.source, resolved.step, Path(resolved.model)) == ("nemo_rl_dcp", 12, step_dir / "hf")
    assert (step_dir / "hf" / "pytorch_model.bin").is_file() and not (step_dir / "hf.tmp").exists()

    data = write_jsonl(tmp_path / "data" / "aime24.jsonl", [{"problem": "What is 3+4?", "answer": "7"}]).parent
    out = tmp_path / "out"
    args = ["--backend", "hf", "--benchmarks", "aime24", "--data-dir", str(data), "--output-dir", str(out)]
    assert eval_main([str(step_dir), *args, "--dtype", "float32", "--max-new-tokens", "16"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["aime24"]["num_correct"] == 1  # the converted weights answer like the original


def test_holder_math_environment_scores_like_holderpo_eval(local_ray) -> None:
    import torch
    from nemo_rl.environments.math_environment import HFVerifyWorker
    from nemo_rl.environments.utils import create_env

    from holder_nemo.eval.nemo_rl_component import register

    assert register("holder_math", {}) == ["env holder_math"]
    register("holder_math", {})  # idempotent (the recipe's env.holder_math._component_ does this in run_grpo)
    env = create_env("holder_math", {"num_workers": 2, "max_new_tokens": 8, "max_model_len": 12})
    extra = [("\\boxed{20\\%}", "20"), ("\\boxed{6630}", ["6630.65\n", "6630\n"]), ("\\boxed{142}", 142.0)]
    cases = DISAGREE + AGREE + extra
    # (prompt tokens, reply tokens): 3 + 5 is a whole reply; the last three are cut (8 = max_new_tokens, 7 + 5 = 12 =
    # max_model_len), so their correct answers get reward 0.
    lengths = [(3, 5)] * len(cases) + [(3, 8), (7, 5), (4, 8)]
    cases = [*cases, ("\\boxed{4}", "4"), ("\\boxed{4}", "4"), ("\\boxed{4}", ["3", "4"])]
    message_logs = [
        [
            {"role": "user", "content": "q", "token_ids": torch.zeros(p, dtype=torch.int64)},
            {"role": "assistant", "content": r, "token_ids": torch.zeros(n, dtype=torch.int64)},
        ]
        for (r, _), (p, n) in zip(cases, lengths, strict=True)
    ]
    metadata = [{"ground_truth": a, "extracted_answer": None} for _, a in cases]
    result = local_ray.get(env.step.remote(message_logs, metadata, True))
    expected = [
        0.0 if n >= 8 or p + n >= 12 else math_reward(r, a) for (r, a), (p, n) in zip(cases, lengths, strict=True)
    ]
    assert result.rewards.tolist() == expected
    assert expected[-3:] == [0.0, 0.0, 0.0] and expected[-6:-3] == [1.0, 1.0, 1.0]
    assert result.answers == [last_boxed_answer(r) for r, _ in cases]

    # NeMo RL's own hf_math_verify disagrees on exactly the DISAGREE cases (why holder_math exists).
    nemo_worker = HFVerifyWorker.options(num_cpus=0).remote()
    first = DISAGREE + AGREE
    nemo = local_ray.get(
        nemo_worker.verify.remote([r for r, _ in first], [a for _, a in first], math_verify_impl="hf_math_verify")
    )
    mine = expected[: len(first)]
    assert [n != o for n, o in zip(nemo, mine, strict=True)] == [True] * len(DISAGREE) + [False] * len(AGREE)


def test_holder_math_environment_config_errors(local_ray) -> None:
    from holder_nemo.eval.nemo_rl_env import PaperMathEnvironment

    env = PaperMathEnvironment.remote({"num_workers": 1, "max_new_tokens": 0})
    with pytest.raises(Exception, match="max_new_tokens must be an integer >= 1"):
        local_ray.get(env.shutdown.remote())
