"""The Megatron tier: HölderPO inside NeMo RL v0.7.0's real Megatron training step, on spawned gloo ranks.

A tiny megatron-core ``GPTModel`` (4 layers, hidden 64, 4 heads in 2 query groups, vocabulary 128, RMSNorm, SwiGLU,
RoPE, fp32) is trained for one step by NeMo RL's worker path (``process_global_batch`` -> ``get_microbatch_iterator``
-> ``LossPostProcessor`` -> ``megatron_forward_backward`` over megatron-core's ``get_forward_backward_func()``
schedule -> ``finalize_model_grads`` -> the distributed optimizer's step) with ``HolderPOLossFn``, under our 7B
recipe's Megatron keys (distributed optimizer, overlapped gradient reduce-scatter and parameter all-gather,
activation recomputation, packing, gradient clipping at 1). Each layout is compared with a single-rank run of the same
path from the same weights and batch: the reported loss, every element of every reduced gradient, the optimizer's
gradient norm, and every parameter after the step. Layouts: TP 2 + sequence parallel; CP 2 + packing; packing +
TP 2 + SP; PP 2 (megatron-core's 1F1B schedule, point-to-point over gloo); DP 2 + packing; TP 2 x CP 2 + SP +
packing (4 ranks). Loss variants: sequence clip with p = 2 and p = -1.3, token clip with p = 0.5.

The negative control runs CP 2 with ``LossPostProcessor(cp_normalize=False)``: the reported loss still agrees and
the gradient comparison must fail (gradients doubled), proof that the tier compares what matters. The parameters
after one Adam step agree even then (Adam's first step is ``lr * sign(g)`` to within eps): the parameter comparison
alone would not catch a gradient scale error; the gradients and the gradient norm do.

What is replaced and why (CUDA-only calls, Megatron-Bridge's two type names, a pure-torch norm for sequence
parallelism and a pure-torch packed / context-parallel attention instead of Transformer Engine's): megatron_cpu.py.
What is rebuilt from megatron-core because Megatron-Bridge does not import on CPU (DDP wrapper, optimizer,
scheduler, model-config hooks), and each choice: megatron_step.py. Not exercised: TE kernels and TE's ring
attention, bf16, fused kernels, NCCL.

Needs megatron-core >= 0.19 (Python >= 3.12; NeMo RL v0.7.0 targets 3.13) and a NeMo RL v0.7.0 source tree on
PYTHONPATH; skipped otherwise, e.g. in CI (docs/nemo_rl.md, "The Megatron tier"). One launch of ranks per world size
runs every layout and variant (imports cost ~20 s a process): about 2 minutes for 2 ranks, 3-4 for 4 ranks here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NEEDED_MEGATRON_CORE = (0, 19)


def _skip_reason() -> str | None:
    try:
        version = importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        return "megatron-core is not installed (this tier needs >= 0.19, Python >= 3.12; docs/nemo_rl.md)"
    if tuple(int(x) for x in version.split(".")[:2]) < NEEDED_MEGATRON_CORE:
        return f"megatron-core {version} < 0.19, which NeMo RL v0.7.0's Megatron path needs (Python >= 3.12)"
    spec = importlib.util.find_spec("nemo_rl")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not any((Path(p) / "models" / "megatron" / "train.py").is_file() for p in locations):
        return "no NeMo RL v0.7.0 source tree on PYTHONPATH (nemo_rl/models/megatron/train.py)"
    return None


SKIP = _skip_reason()
pytestmark = [
    pytest.mark.megatron,
    pytest.mark.nemo_rl,
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.skipif(SKIP is not None, reason=SKIP or ""),
]

# Importing the rank script's tables needs only the standard library and torch-free code paths.
sys.path.insert(0, str(HERE))
from megatron_ranks import LAYOUTS, NEGATIVE, VARIANTS  # noqa: E402

# float32 round-off: 1e-4 of each gradient tensor's largest element (observed ~1e-6), the loss to 1e-6 absolute
# (a sum of terms of order 1 / rows), the gradient norm to 1e-5 relative, each parameter's update to 5 % of the
# step (Adam's step is lr * g / (|g| + eps): elements whose gradient is near eps amplify round-off).
GRAD_REL_TOL, LOSS_ATOL, NORM_RTOL, UPDATE_REL_TOL = 1e-4, 1e-6, 1e-5, 0.05


WORLDS = sorted(LAYOUTS)
CASES = [(world, layout.name, variant) for world in WORLDS for layout in LAYOUTS[world] for variant in VARIANTS]


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """``launches(world)``: the JSON summary of one launch of ``world`` ranks running every layout and variant of
    that world size (launched once, on first use; a failed launch fails every test that needs it)."""
    cache: dict[int, dict | str] = {}

    def get(world: int) -> dict:
        if world not in cache:
            out = tmp_path_factory.mktemp(f"megatron_world{world}") / "summary.json"
            result = subprocess.run(
                [sys.executable, str(HERE / "megatron_ranks.py"), str(world), str(out)],
                capture_output=True,
                text=True,
                timeout=1500,
            )
            if result.returncode == 0 and out.is_file():
                cache[world] = json.loads(out.read_text())
            else:
                cache[world] = f"launch of {world} ranks failed:\n" + (result.stdout + result.stderr)[-8000:]
        if isinstance(cache[world], str):
            pytest.fail(cache[world])
        return cache[world]

    return get


def record(summary: dict, layout: str, variant: str, negative: bool) -> dict:
    (r,) = [
        r
        for r in summary["records"]
        if (r["layout"], r["variant"], r["negative_control"]) == (layout, variant, negative)
    ]
    return r


def loss_agrees(r: dict) -> bool:
    return abs(r["loss"] - r["reference_loss"]) <= LOSS_ATOL + 1e-5 * abs(r["reference_loss"])


def gradients_agree(r: dict) -> bool:
    """Every element of every gradient within round-off, and the optimizer's gradient norm too."""
    return (
        r["gradient_elements_compared"] == r["reference_gradient_elements"]
        and r["max_rel_grad_diff"] <= GRAD_REL_TOL
        and abs(r["grad_norm"] - r["reference_grad_norm"]) <= NORM_RTOL * r["reference_grad_norm"]
    )


@pytest.mark.parametrize(("world", "layout", "variant"), CASES, ids=[f"{w}ranks-{lay}-{v}" for w, lay, v in CASES])
def test_layout_matches_the_single_rank_step(launches, world, layout, variant):
    r = record(launches(world), layout, variant, negative=False)
    pipelined = layout.startswith("pp")
    checks = {
        "loss": loss_agrees(r),
        "every gradient element and the grad norm": gradients_agree(r),
        "parameters after the optimizer step": r["max_rel_update_diff"] <= UPDATE_REL_TOL,
        "update applied": r["update_successful"],
        "no all-zero gradient tensor": r["zero_gradient_tensors"] == 0,
        "schedule": r["schedule"]
        == ("forward_backward_pipelining_without_interleaving" if pipelined else "forward_backward_no_pipelining"),
        # the batch exercises the clip: some sequences (tokens) clipped, not all
        "clip active": 0 < _clipped(r, variant) < 1,
    }
    failed = [name for name, ok in checks.items() if not ok]
    assert not failed, f"{failed}: {json.dumps(r, indent=1)}"


def _clipped(r: dict, variant: str) -> float:
    fractions = r["reference_clip_fractions"]
    if variant.startswith("token"):
        return fractions["holder/token_clip_frac"]
    return fractions["holder/seq_clip_frac_low"] + fractions["holder/seq_clip_frac_high"]


@pytest.mark.parametrize("world", WORLDS, ids=[f"{w}ranks" for w in WORLDS])
def test_negative_control_cp_normalize_off_fails_the_gradient_comparison_while_the_loss_agrees(launches, world):
    layout, variant = NEGATIVE[world]
    r = record(launches(world), layout, variant, negative=True)
    assert loss_agrees(r), r  # the reported loss cannot tell
    assert not gradients_agree(r), r  # the comparison this tier relies on does
    assert r["max_rel_grad_diff"] > 0.5, r  # CP 2: every gradient doubled
    assert r["grad_norm"] == pytest.approx(2 * r["reference_grad_norm"], rel=1e-4), r
    # and Adam's first step hides it: the parameters after the step agree
    assert r["max_rel_update_diff"] <= UPDATE_REL_TOL, r


@pytest.mark.parametrize("world", WORLDS, ids=[f"{w}ranks" for w in WORLDS])
def test_ranks_talk_over_loopback_only(launches, world):
    summary = launches(world)
    assert summary["gloo_socket_ifname"] == "lo"
    assert summary["non_loopback_connections"] == []


@pytest.mark.parametrize("world", WORLDS, ids=[f"{w}ranks" for w in WORLDS])
def test_the_tier_runs_nemo_rl_v070_on_megatron_core_019(launches, world):
    versions = launches(world)["versions"]
    assert versions["nemo_rl"] == "0.7.0", versions
    assert versions["megatron_core"].startswith("0.19."), versions
