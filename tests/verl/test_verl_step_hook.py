"""The step hook end to end through verl's own data path and verl's own ``ppo_loss``.

The update batch is built as verl's trainer builds it: a left/right-padded ``DataProto`` whose metadata carries the
trainer's ``global_steps`` (hook 2 of docs/verl.md), ``to_tensordict`` + ``left_right_2_no_padding`` (the trainer's
``_update_actor``), mini-batches from ``tensordict_utils.make_iterator`` and the ``batch_num_tokens`` / ``dp_size``
the FSDP engine assigns (the worker). Faked: only the model forward, replaced by a leaf tensor of token log-probs in
the engine's no-padding layout, because no model or GPU is needed to test how the step reaches the loss.
"""

from __future__ import annotations

import pytest
from verl_helpers import NEEDS_VERL, VERL_MODULE, actor_config, documented_overrides

pytest.importorskip(VERL_MODULE, reason=NEEDS_VERL)

import torch
from verl import DataProto
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from holder_nemo.core import PSchedule
from holder_nemo.verl import compute_policy_loss_holder, holder_ppo_loss

PROMPT_LENS, RESPONSE_LENS, P, R = [3, 2, 3, 1], [5, 2, 4, 3], 3, 5


def update_batch(global_steps: int) -> DataProto:
    """4 sequences, prompts left-padded to 3 tokens and responses right-padded to 5, as verl's rollout returns them."""
    g = torch.Generator().manual_seed(0)
    b = len(PROMPT_LENS)
    prompt_mask = torch.tensor([[int(j >= P - n) for j in range(P)] for n in PROMPT_LENS])
    response_mask = torch.tensor([[int(j < n) for j in range(R)] for n in RESPONSE_LENS])
    attention_mask = torch.cat([prompt_mask, response_mask], 1)
    input_ids = torch.randint(3, 50, (b, P + R), generator=g) * attention_mask
    tensors = {
        "prompts": input_ids[:, :P],
        "responses": input_ids[:, P:],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "response_mask": response_mask,
        "old_log_probs": -torch.rand(b, R, generator=g, dtype=torch.float64) * response_mask,
        "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)[:, None] * response_mask,
    }
    return DataProto.from_single_dict(tensors, meta_info={"global_steps": global_steps, "temperature": 1.0})


def worker_micro_batch(batch: DataProto):
    """What the actor's loss function receives: verl's own conversions, then the FSDP engine's non-tensor fields."""
    data = left_right_2_no_padding(batch.to_tensordict())
    (mini,) = list(tu.make_iterator(data, mini_batch_size=len(PROMPT_LENS), epochs=1, seed=0))
    tu.assign_non_tensor(mini, batch_num_tokens=int(mini["loss_mask"].sum()), dp_size=1, global_batch_size=None)
    return mini


def model_log_probs(data) -> torch.Tensor:
    """Stand-in for the model forward: token log-probs in the engine's no-padding layout (one value per token of
    prompt + response; the value before each response token scores it), equal to log pi_old plus noise of 1e-5, so
    the ratios sit inside the 3e-4 / 4e-4 clip band and carry gradient."""
    total = int(data["input_ids"].offsets()[-1])
    ends = torch.tensor(PROMPT_LENS).add(torch.tensor(RESPONSE_LENS)).cumsum(0)
    flat = torch.zeros(total, dtype=torch.float64)
    noise = 1e-5 * torch.randn(len(PROMPT_LENS), R, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i, (end, n) in enumerate(zip(ends.tolist(), RESPONSE_LENS, strict=True)):
        flat[end - n - 1 : end - 1] = data["old_log_probs"][i, :n] + noise[i, :n]
    assert torch.equal(no_padding_2_padding(flat, data)[data["response_mask"].bool()],
                       (data["old_log_probs"] + noise)[data["response_mask"].bool()])  # fmt: skip
    return flat


@pytest.mark.parametrize("step", [1, 137, 500, 612])
def test_global_step_in_the_batch_sets_p_in_ppo_loss(step: int) -> None:
    config = actor_config(*documented_overrides())  # linear_dec 2 -> -2 over 500 steps, seq-mean-token-mean
    data = worker_micro_batch(update_batch(step))
    assert tu.get_non_tensor_data(data=data, key="global_steps", default=None) == step
    log_probs = model_log_probs(data).requires_grad_()

    loss, metrics = holder_ppo_loss(config, {"log_probs": log_probs}, data)

    p = PSchedule(kind="linear_dec", p_max=2.0, p_min=-2.0, steps=500)(step)
    assert config.policy_loss.global_step == step
    assert metrics["actor/holder_p"].values == [pytest.approx(p)]  # a verl Metric, averaged over micro-batches
    padded = no_padding_2_padding(log_probs, data)
    direct, _ = compute_policy_loss_holder(
        data["old_log_probs"], padded, data["advantages"], data["response_mask"].bool(), "seq-mean-token-mean", config
    )
    assert loss.item() == pytest.approx(direct.item(), rel=1e-12)
    loss.backward()
    assert log_probs.grad.abs().sum() > 0


def test_without_the_step_in_the_batch_an_annealed_schedule_fails() -> None:
    config = actor_config(*documented_overrides())
    batch = update_batch(3)
    batch.meta_info.pop("global_steps")
    data = worker_micro_batch(batch)
    with pytest.raises(RuntimeError, match="install the step hook"):
        holder_ppo_loss(config, {"log_probs": model_log_probs(data)}, data)
