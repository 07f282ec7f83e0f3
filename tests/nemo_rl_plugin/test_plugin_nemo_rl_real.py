"""Against the real NeMo RL (v0.7.0): ClippedPGLossFn parity, the packing wrapper's metric reduction, enums,
cloudpickle, and the grpo_train-side pieces the entry point relies on.

Runs where nemo_rl is importable (the NGC image; or a CPU venv with a NeMo RL v0.7.0 source tree on PYTHONPATH,
see docs/nemo_rl.md "Tests"); skipped elsewhere. NeMo RL's Policy/Ray workers need GPUs, so nothing here starts them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from nemo_rl_batches import global_counts, make_batch, slice_rows

pytestmark = pytest.mark.nemo_rl

try:
    from nemo_rl.algorithms.loss.interfaces import LossInputType, LossType
    from nemo_rl.algorithms.loss.loss_functions import ClippedPGLossConfig, ClippedPGLossFn
    from nemo_rl.algorithms.loss.wrapper import SequencePackingLossWrapper
    from nemo_rl.distributed.batched_data_dict import BatchedDataDict
except ImportError as exc:  # CI: no NeMo RL
    pytest.skip(f"nemo_rl is not importable ({exc}); these tests need NeMo RL v0.7.0", allow_module_level=True)

from holder_nemo.nemo_rl import HolderPOLossFn  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# ClippedPG's GSPO-mode sampling_importance_ratio broadcasts [B, 1] weights against the [B] sample mask
# (sum_i w_i * sum_j s_j / N), and in token mode it is a token-level weight; HölderPO reports the per-sequence mean.
NOT_COMPARED = {"sampling_importance_ratio", "positive_nll_loss"}


def both(nemo_cfg: dict, holder_block: dict, p: float, seed: int):
    curr, data = make_batch(batch=6, seq=12, seed=seed, dtype=torch.float32, drift=0.3)
    data = BatchedDataDict({k: (v.float() if v.is_floating_point() else v) for k, v in data.items()})
    data["prev_logprobs"][:, 0] = 0.0  # ClippedPG multiplies padding by the mask: keep it finite for the reference
    seqs, toks = global_counts(data)
    nemo = ClippedPGLossFn(ClippedPGLossConfig(**nemo_cfg))
    holder_cfg = {
        k: v for k, v in nemo_cfg.items() if k not in ("token_level_loss", "sequence_level_importance_ratios")
    }
    holder_cfg["holder"] = {**holder_block, "schedule": {"kind": "constant", "p_max": p, "p_min": -2.0}}
    ours = HolderPOLossFn(holder_cfg)
    out = []
    for fn in (nemo, ours):
        x = curr.clone().requires_grad_()
        loss, metrics = fn(next_token_logprobs=x, data=data, global_valid_seqs=seqs, global_valid_toks=toks)
        (grad,) = torch.autograd.grad(loss, x)
        out.append((loss, grad, metrics))
    return out


def assert_same(out):
    (l1, g1, m1), (l2, g2, m2) = out
    torch.testing.assert_close(l2, l1, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(g2, g1, rtol=2e-5, atol=1e-7)
    assert g1.abs().sum() > 0
    for key in set(m1) - NOT_COMPARED:
        assert m2[key] == pytest.approx(m1[key], rel=2e-5, abs=1e-7), key


def test_gspo_parity_at_p0_sequence_clip():
    cfg = {
        "sequence_level_importance_ratios": True,
        "token_level_loss": False,
        "ratio_clip_c": 3.0,
        "reference_policy_kl_penalty": 0.05,
        "use_importance_sampling_correction": True,
    }
    assert_same(both(cfg, {"clip_mode": "sequence", "is_correction_level": "sequence_sum"}, 0.0, seed=1))


def test_sequence_normalised_token_loss_parity_at_p1_token_clip():
    cfg = {"token_level_loss": False, "ratio_clip_min": 0.2, "ratio_clip_max": 0.28, "reference_policy_kl_penalty": 0.1}
    assert_same(both(cfg, {"clip_mode": "token"}, 1.0, seed=2))


def test_nemo_rl_enums_and_cloudpickle():
    loss_fn = HolderPOLossFn({})
    assert loss_fn.loss_type is LossType.SEQUENCE_LEVEL
    assert loss_fn.input_type is LossInputType.LOGPROB
    from ray import cloudpickle

    loss_fn.set_step(77)
    clone = cloudpickle.loads(cloudpickle.dumps(loss_fn))
    assert clone.step == 77 and clone.p == loss_fn.p and clone.loss_type is LossType.SEQUENCE_LEVEL


def test_real_sequence_packing_wrapper_reduces_metrics_to_full_batch_values():
    """NeMo RL's non-fused packing wrapper calls the loss per sequence (rows trimmed to their length) and sums
    loss and metrics (min/max for probs_ratio*). Its prepare_fn needs GPUs for real logits, so a stand-in
    prepare_fn hands out precomputed log-probs laid out like packed logits."""
    curr, data = make_batch(batch=5, seq=12, seed=3)
    data = BatchedDataDict(data)
    seqs, toks = global_counts(data)
    loss_fn = HolderPOLossFn({"reference_policy_kl_penalty": 0.05})
    lengths = [12, 8, 3, 12, 12]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    packed = torch.cat([curr[i : i + 1, : n - 1].new_zeros(1, n) for i, n in enumerate(lengths)], dim=1)
    for i, n in enumerate(lengths):
        packed[0, cu[i] : cu[i] + n - 1] = curr[i, : n - 1]
    packed.requires_grad_()

    def prepare_fn(logits, data, loss_fn, **_groups):  # stand-in for prepare_loss_input (GPU-only there)
        return {"next_token_logprobs": logits[:, :-1]}, data

    wrapper = SequencePackingLossWrapper(loss_fn, prepare_fn, cu_seqlens_q=cu)
    loss, metrics = wrapper(packed, data, seqs, toks)
    full, full_metrics = loss_fn(next_token_logprobs=curr, data=data, global_valid_seqs=seqs, global_valid_toks=toks)
    torch.testing.assert_close(loss, full, rtol=1e-12, atol=1e-14)
    for key, value in full_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    by_rows, _ = loss_fn(
        next_token_logprobs=curr[:2], data=slice_rows(data, slice(0, 2)), global_valid_seqs=seqs,
        global_valid_toks=toks,
    )  # fmt: skip
    assert by_rows.item() != 0


GRPO_PIECES = textwrap.dedent(
    """
    import inspect, json, sys, tempfile, typing
    import typing_extensions
    if sys.version_info < (3, 12):
        typing.TypedDict = typing_extensions.TypedDict
    from nemo_rl.algorithms import grpo
    from nemo_rl.models.policy.lm_policy import Policy
    from nemo_rl.utils.checkpoint import CheckpointManager
    from nemo_rl.utils.logger import Logger
    from nemo_rl.utils.timer import TimeoutChecker
    from holder_nemo.run_control import StopRequest, patched_timeout_checker
    from holder_nemo.nemo_rl.steps import install_step_schedule
    from holder_nemo.nemo_rl import HolderPOLossFn

    def params(f):
        return list(inspect.signature(f).parameters)

    out = {
        "setup": params(grpo.setup),
        "grpo_train": params(grpo.grpo_train),
        "policy_train": params(Policy.train),
        "log_metrics": params(Logger.log_metrics),
        "save_state_keys": sorted(grpo._default_grpo_save_state()),
        "grpo_uses_timeout_checker": grpo.TimeoutChecker is TimeoutChecker,
        "timeout_attrs": sorted(k for k in vars(TimeoutChecker(None)) if not k.startswith("_")),
    }
    with tempfile.TemporaryDirectory() as tmp:
        stop = StopRequest(stop_file=tmp + "/STOP")
        with patched_timeout_checker(grpo, stop):
            checker = grpo.TimeoutChecker(timeout=None, fit_last_save_time=True)
            checker.start_iterations(); checker.mark_iteration()
            first = checker.check_save()
            open(tmp + "/STOP", "w").close()
            out["stop_file"] = [first, checker.check_save(), checker.check_save(), stop.fired]
        out["restored"] = grpo.TimeoutChecker is TimeoutChecker
        mgr = CheckpointManager({"enabled": True, "checkpoint_dir": tmp + "/ckpt", "metric_name": None,
                                 "higher_is_better": True, "keep_top_k": 3, "save_period": 1,
                                 "save_optimizer": True})
        for step in (3, 7):
            state = grpo._default_grpo_save_state(); state["total_steps"] = step
            mgr.finalize_checkpoint(mgr.init_tmp_checkpoint(step, state))
        restored = mgr.load_training_info(mgr.get_latest_checkpoint_path())
        loss_fn = HolderPOLossFn({})
        class StandInPolicy:  # Policy needs GPUs/Ray; only the bound train method matters here
            def train(self, data, loss_fn, eval_mode=False, gbs=None, mbs=None, timer=None):
                return {}
        install_step_schedule(StandInPolicy(), loss_fn, restored)
        out["resume"] = [restored["total_steps"], loss_fn.step]
    print(json.dumps(out))
    """
)


def _run(code_or_args, **kwargs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run(code_or_args, capture_output=True, text=True, timeout=300, env=env, **kwargs)


def test_grpo_train_side_pieces_exist_with_expected_signatures():
    result = _run([sys.executable, "-c", GRPO_PIECES])
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["setup"][:4] == ["master_config", "tokenizer", "dataset", "val_dataset"]
    assert "policy_factory" in out["setup"]
    assert out["grpo_train"] == [
        "policy", "policy_generation", "wrapped_dataloader", "val_dataloader", "tokenizer", "loss_fn",
        "task_to_env", "val_task_to_env", "logger", "checkpointer", "grpo_save_state", "master_config",
    ]  # fmt: skip
    assert out["policy_train"][:3] == ["self", "data", "loss_fn"] and "timer" in out["policy_train"]
    assert out["log_metrics"][:4] == ["self", "metrics", "step", "prefix"]
    assert "total_steps" in out["save_state_keys"]
    assert out["grpo_uses_timeout_checker"]
    assert {"last_saved", "iteration_times", "start_time"} <= set(out["timeout_attrs"])
    assert out["stop_file"][:3] == [False, True, False] and out["stop_file"][3].startswith("stop file")
    assert out["restored"]
    assert out["resume"] == [7, 8]  # the step_7 checkpoint resumes with p(8)


def test_entry_point_rejects_bad_loss_key_before_ray():
    recipe = REPO / "recipes" / "holderpo_base.yaml"
    result = _run(
        [sys.executable, "-m", "holder_nemo.nemo_rl.run_grpo", "--config", str(recipe), "loss_fn.holder.clip_mode=seq"]
    )
    assert result.returncode == 2, result.stderr[-4000:]
    assert "loss_fn.holder.clip_mode" in result.stderr


def test_real_grpo_train_stops_checkpoints_and_resumes_with_exact_p(tmp_path):
    """NeMo RL's own grpo_train loop (GPU pieces stood in, see grpo_train_driver.py): a stop file appearing during
    step 3 -> checkpoint at step 3 and exit 75; the requeued job resumes at step 4 with p(4) and finishes with 0.
    A stop during the final step completes the run (exit 0, COMPLETED), not exit 75 and one more attempt."""
    result = _run([sys.executable, str(Path(__file__).with_name("grpo_train_driver.py")), str(tmp_path / "STOP")])
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    first, second = out["first"], out["second"]
    expected = {k: p for k, p in zip(range(1, 7), [1.0, 0.0, -1.0, -2.0, -2.0, -2.0], strict=True)}  # 2 -> -2 over 4
    assert first["seen"] == [[k, expected[k]] for k in (1, 2, 3)] == first["logged"]
    assert first["saves"] == [3] and first["fired"].startswith("stop file") and first["exit"] == 75
    assert first["state"]["total_steps"] == 3
    assert second["seen"] == [[k, expected[k]] for k in (4, 5, 6)] == second["logged"]
    assert second["saves"] == [6] and second["fired"] is None and second["exit"] == 0
    assert out["completed"]
    final = out["stopped_at_final_step"]
    assert final["saves"] == [6] and final["fired"].startswith("stop file")
    assert final["exit"] == 0 and final["completed"]


DRY_RUN_ALL = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from pathlib import Path
    from holder_nemo.nemo_rl import run_grpo
    codes = {}
    for recipe in sorted(Path(sys.argv[1]).glob("holderpo_*.yaml")):
        with contextlib.redirect_stdout(io.StringIO()):
            codes[recipe.name] = run_grpo.main(["--config", str(recipe), "--dry-run"])
    print(json.dumps(codes))
    """
)


def test_every_recipe_passes_the_entry_points_nemo_rl_validation():
    """NeMo RL's loader (defaults:, interpolation), its MasterConfig and the HölderPO loss accept every recipe."""
    result = _run([sys.executable, "-c", DRY_RUN_ALL, str(REPO / "recipes")])
    assert result.returncode == 0, result.stderr[-4000:]
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    assert codes and set(codes.values()) == {0}, (codes, result.stderr[-4000:])
