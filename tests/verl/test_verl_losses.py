"""The Hölder policy losses called as verl calls a registered loss: ``get_policy_loss_fn(name)(...)`` with verl's
ActorConfig (built from verl's own ppo_trainer.yaml), for every ``loss_agg_mode``, against verl's own losses."""

from __future__ import annotations

import pytest
from verl_helpers import NEEDS_VERL, VERL_MODULE, actor_config, documented_overrides, holder_overrides

pytest.importorskip(VERL_MODULE, reason=NEEDS_VERL)

import torch
from hydra.errors import InstantiationException
from verl.trainer.ppo.core_algos import compute_gae_advantage_return, get_policy_loss_fn

from holder_nemo.core import PSchedule, holder_po_loss
from holder_nemo.verl.losses import HolderPolicyLossConfig

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
LENGTHS = [10, 7, 4, 9, 1, 6]
ADV = [1.0, -1.0, 0.5, -2.0, 1.5, -0.5]
GLOBAL = {"dp_size": 2, "batch_num_tokens": 80, "global_batch_size": 12, "loss_scale_factor": None}


def make_batch(shift: list[float], noise: float, seed: int = 0):
    """[6, 10] float64 tensors as verl's actor passes them: token advantages (constant per row), a response mask,
    log-probs whose per-sequence mean log-ratio is ``shift`` (plus per-token ``noise``)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(10)[None, :] < torch.tensor(LENGTHS)[:, None]
    old = -2 * torch.rand(6, 10, generator=g, dtype=torch.float64)
    jitter = noise * torch.randn(6, 10, generator=g, dtype=torch.float64)
    jitter = (jitter - (jitter * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)) * mask  # row mean 0
    log_prob = (old + torch.tensor(shift, dtype=torch.float64)[:, None] + jitter).requires_grad_()
    adv = torch.tensor(ADV, dtype=torch.float64)[:, None].expand(6, 10).clone()
    token_weights = 0.5 + torch.rand(6, 10, generator=g, dtype=torch.float64)
    row_mean = (token_weights * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
    weights = {"token": token_weights, "sequence": row_mean.expand(6, 10).clone()}  # verl's two IS granularities
    return old, log_prob, adv, mask, weights


def run(name: str, config, batch, mode: str, weights: str | None = None):
    old, log_prob, adv, mask, all_weights = batch
    log_prob.grad = None
    loss, metrics = get_policy_loss_fn(name)(
        old_log_prob=old,
        log_prob=log_prob,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode=mode,
        config=config,
        rollout_is_weights=None if weights is None else all_weights[weights],
    )
    loss.backward()
    return loss.detach(), log_prob.grad.clone(), metrics


@pytest.mark.parametrize("global_info", [False, True], ids=["local", "dp2"])
@pytest.mark.parametrize("weights", [None, "sequence", "token"], ids=["no_is", "sequence_is", "token_is"])
@pytest.mark.parametrize("mode", AGG_MODES)
def test_holder_p0_equals_verl_gspo(mode: str, weights: str | None, global_info: bool) -> None:
    clip = {"clip_ratio_low": "3e-4", "clip_ratio_high": "4e-4", "loss_agg_mode": mode}
    gspo = actor_config(
        "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
        *[f"actor_rollout_ref.actor.{k}={v}" for k, v in clip.items()],
    )
    holder = actor_config(*holder_overrides("holder", "constant", 0.0, **clip))
    if global_info:  # as verl's ppo_loss fills it on a 2-rank data-parallel run
        gspo.global_batch_info.update(GLOBAL)
        holder.global_batch_info.update(GLOBAL)
    # rows 0, 2, 4 (A > 0): inside, inside, clipped high; rows 1, 3, 5 (A < 0): inside, clipped low, outside but
    # unclipped (ratio above 1); token noise makes the per-token ratios differ within each sequence
    batch = make_batch([1e-4, -1e-4, 2e-4, -5e-3, 5e-3, 5e-3], noise=0.05)
    ref_loss, ref_grad, ref_metrics = run("gspo", gspo, batch, mode, weights)
    loss, grad, metrics = run("holder", holder, batch, mode, weights)
    print(f"{mode} is={weights} dp2={global_info}: |dloss|={abs(loss - ref_loss).item():.1e} "
          f"|dgrad|={(grad - ref_grad).abs().max().item():.1e} (|grad| {ref_grad.abs().max().item():.1e})")  # fmt: skip
    assert torch.allclose(loss, ref_loss, rtol=0, atol=1e-15)
    assert torch.allclose(grad, ref_grad, rtol=0, atol=1e-15)
    assert ref_grad.abs().max() > 1e-3
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):  # verl averages flags in float32
        assert metrics[key] == pytest.approx(ref_metrics[key], abs=1e-7), key
    assert 0 < metrics["actor/pg_clipfrac"] < 1
    assert metrics["actor/holder_p"] == 0.0


def gae_batch(shift: list[float], noise: float):
    """``make_batch`` with advantages from verl's own GAE (``compute_gae_advantage_return``: a critic's values, a
    reward at each row's last token plus small per-token rewards, gamma 0.99, lambda 0.95, whitened): they vary
    inside every sequence and change sign inside most."""
    old, log_prob, _, mask, weights = make_batch(shift, noise)
    g = torch.Generator().manual_seed(7)
    last = torch.nn.functional.one_hot(mask.sum(-1) - 1, mask.shape[1]).to(torch.float64)
    rewards = (torch.tensor(ADV, dtype=torch.float64)[:, None] * last + 0.1 * torch.randn(6, 10, generator=g)) * mask
    values = torch.randn(6, 10, generator=g, dtype=torch.float64)
    adv, _ = compute_gae_advantage_return(rewards, values, mask.to(torch.float64), gamma=0.99, lam=0.95)
    return old, log_prob, adv, mask, weights


@pytest.mark.parametrize("weights", [None, "token"], ids=["no_is", "token_is"])
@pytest.mark.parametrize("mode", AGG_MODES)
def test_holder_p0_equals_verl_gspo_with_token_advantages(mode: str, weights: str | None) -> None:
    """GAE advantages: verl's gspo (GSPO-token) weights each token's gradient by its own advantage and clips each
    token by its advantage's sign; so does ``holder`` (the token view of rho_p), in every aggregation mode, with
    per-token rollout-correction weights too. (Before, each row's advantages were replaced by their mean: gradient
    off by 3.4e-2 against a largest gradient of 6.9e-2 in seq-mean-token-mean, 1.4 against 1.9 in token-sum.)"""
    clip = {"clip_ratio_low": "3e-4", "clip_ratio_high": "4e-4", "loss_agg_mode": mode}
    gspo = actor_config(
        "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
        *[f"actor_rollout_ref.actor.{k}={v}" for k, v in clip.items()],
    )
    holder = actor_config(*holder_overrides("holder", "constant", 0.0, **clip))
    batch = gae_batch([1e-4, -1e-4, 2e-4, -5e-3, 5e-3, 5e-3], noise=0.05)
    adv, mask = batch[2], batch[3]
    mixed = [bool((adv[i][mask[i]] > 0).any() and (adv[i][mask[i]] < 0).any()) for i in range(6)]
    assert sum(mixed) >= 3, "the GAE batch should change sign inside several sequences"
    ref_loss, ref_grad, ref_metrics = run("gspo", gspo, batch, mode, weights)
    loss, grad, metrics = run("holder", holder, batch, mode, weights)
    print(f"GAE {mode} is={weights}: |dloss|={abs(loss - ref_loss).item():.1e} "
          f"|dgrad|={(grad - ref_grad).abs().max().item():.1e} (|grad| {ref_grad.abs().max().item():.1e})")  # fmt: skip
    assert torch.allclose(loss, ref_loss, rtol=0, atol=1e-15)
    assert torch.allclose(grad, ref_grad, rtol=0, atol=1e-15)
    assert ref_grad.abs().max() > 1e-3
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert metrics[key] == pytest.approx(ref_metrics[key], abs=1e-7), key
    assert 0 < metrics["actor/pg_clipfrac"] < metrics["actor/holder_seq_clipfrac"] < 1  # part of a clipped row


@pytest.mark.parametrize("mode", AGG_MODES)
def test_holder_token_p1_has_verl_vanilla_gradient_with_token_advantages(mode: str) -> None:
    """Token clip at p = 1 with GAE advantages: each token's gradient is GRPO's, -A_t grad clip(r_t), as verl's
    ``vanilla``. The loss value differs: a token's term is its advantage times the sequence's clipped mean ratio."""
    clip = {"clip_ratio_low": "0.2", "clip_ratio_high": "0.28", "loss_agg_mode": mode}
    vanilla = actor_config(*[f"actor_rollout_ref.actor.{k}={v}" for k, v in clip.items()])
    holder = actor_config(*holder_overrides("holder_token", "constant", 1.0, **clip))
    batch = gae_batch([0.0, 0.1, -0.1, 0.05, 0.0, -0.05], noise=0.3)
    _, ref_grad, ref_metrics = run("vanilla", vanilla, batch, mode)
    _, grad, metrics = run("holder_token", holder, batch, mode)
    assert torch.allclose(grad, ref_grad, rtol=0, atol=1e-14)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(ref_metrics["actor/pg_clipfrac"], abs=1e-7)
    assert 0 < metrics["actor/holder_token_clipfrac"] < 1


@pytest.mark.parametrize("mode", AGG_MODES)
def test_holder_token_p1_equals_verl_vanilla(mode: str) -> None:
    """Token clip at p = 1 is GRPO's per-token clipped loss: equal to verl's ``vanilla`` in every aggregation mode
    (ratios stay below vanilla's dual-clip bound 3, which HölderPO does not apply)."""
    clip = {"clip_ratio_low": "0.2", "clip_ratio_high": "0.28", "loss_agg_mode": mode}
    vanilla = actor_config(*[f"actor_rollout_ref.actor.{k}={v}" for k, v in clip.items()])
    holder = actor_config(*holder_overrides("holder_token", "constant", 1.0, **clip))
    batch = make_batch([0.0, 0.1, -0.1, 0.05, 0.0, -0.05], noise=0.3)
    ref_loss, ref_grad, _ = run("vanilla", vanilla, batch, mode)
    loss, grad, metrics = run("holder_token", holder, batch, mode)
    assert torch.allclose(loss, ref_loss, rtol=0, atol=1e-14)
    assert torch.allclose(grad, ref_grad, rtol=0, atol=1e-14)
    assert 0 < metrics["actor/holder_token_clipfrac"] < 1


@pytest.mark.parametrize(("loss_mode", "clip_mode"), [("holder", "sequence"), ("holder_token", "token")])
@pytest.mark.parametrize("step", [1, 250, 500, 900])
def test_p_follows_the_schedule_at_the_global_step(loss_mode: str, clip_mode: str, step: int) -> None:
    """The documented overrides (linear 2 -> -2 over 500 steps); p at the step the hook set, and the loss equals the
    mean over sequences of holder_po_loss at that p (seq-mean-token-mean, the paper's aggregation)."""
    overrides = [o.replace("loss_mode=holder", f"loss_mode={loss_mode}") for o in documented_overrides()]
    config = actor_config(*overrides)
    assert isinstance(config.policy_loss, HolderPolicyLossConfig) and config.loss_agg_mode == "seq-mean-token-mean"
    config.policy_loss.global_step = step
    batch = make_batch([0.05, -0.05, 0.1, -0.3, 0.3, 0.3], noise=0.05)  # rows 3 and 4 outside the 0.2 band
    loss, _grad, metrics = run(loss_mode, config, batch, "seq-mean-token-mean")
    p = PSchedule(kind="linear_dec", p_max=2.0, p_min=-2.0, steps=500)(step)
    assert metrics["actor/holder_p"] == p
    old, log_prob, adv, mask, _ = batch
    ref, _ = holder_po_loss(log_prob, old, adv, mask, p, clip_mode=clip_mode, eps_low=0.2, eps_high=0.2)
    assert loss.item() == pytest.approx(ref.mean().item(), rel=1e-12)


def test_metrics_follow_verl_actor_conventions() -> None:
    config = actor_config(*holder_overrides("holder", "constant", 0.5))
    _, _, metrics = run("holder", config, make_batch([0.0] * 6, noise=0.1), "seq-mean-token-mean")
    assert all(key.startswith("actor/") for key in metrics)
    assert {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower", "actor/holder_p"} <= metrics.keys()
    assert all(isinstance(value, float) for value in metrics.values())


def test_annealed_schedule_without_the_step_hook_is_an_error() -> None:
    config = actor_config(*documented_overrides())
    with pytest.raises(RuntimeError, match="install the step hook"):
        run("holder", config, make_batch([0.0] * 6, noise=0.1), "seq-mean-token-mean")


def test_holder_loss_needs_the_holder_config() -> None:
    config = actor_config("actor_rollout_ref.actor.policy_loss.loss_mode=holder")
    with pytest.raises(ValueError, match=r"policy_loss._target_=holder_nemo.verl.HolderPolicyLossConfig"):
        run("holder", config, make_batch([0.0] * 6, noise=0.1), "seq-mean-token-mean")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+actor_rollout_ref.actor.policy_loss.holder_p_schedule=linear_inc", "PSchedule.kind must be one of"),
        ("+actor_rollout_ref.actor.policy_loss.holder_p_min=3.0", r"p_min \(3.0\) must be <="),
        ("+actor_rollout_ref.actor.policy_loss.holder_p_schedule_steps=0", "PSchedule.steps must be an integer >= 1"),
        ("+actor_rollout_ref.actor.policy_loss.holder_p_schedule=reward", "'reward' is not supported"),
    ],
)
def test_bad_schedule_fails_when_the_config_is_built(override: str, message: str) -> None:
    base = [o for o in documented_overrides() if override.split("=")[0] not in o]
    with pytest.raises(InstantiationException, match=message):  # Hydra wraps the ValueError, message kept
        actor_config(*base, override)
