"""Checkpoints: atomic step_N directories, keep-last-K, incomplete writes ignored, exact RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import torch

from holder_nemo.reference import checkpoint as ckpt


def _model_and_optimizer():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_save_load_round_trip_restores_everything(tmp_path):
    torch.manual_seed(1)
    model, optimizer = _model_and_optimizer()
    random.seed(5)
    np.random.seed(6)
    path = ckpt.save_checkpoint(
        tmp_path,
        3,
        model=model,
        optimizer=optimizer,
        trainer_state={"data_position": 96},
        config_yaml="a: 1\n",
        keep_last_k=2,
    )
    expected = (torch.rand(3), random.random(), np.random.rand(3))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    # scramble everything, then restore
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    with torch.no_grad():
        model.weight.add_(1.0)
    fresh_opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    state = ckpt.load_checkpoint(path, model=model, optimizer=fresh_opt)
    assert state["step"] == 3 and state["data_position"] == 96
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k])
    assert fresh_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1]
    assert np.array_equal(np.random.rand(3), expected[2])
    assert (path / "config.yaml").read_text() == "a: 1\n"


def test_keep_last_k_and_incomplete_writes_are_ignored(tmp_path):
    model, optimizer = _model_and_optimizer()
    (tmp_path / ".tmp-step_9-abc").mkdir()  # a writer killed mid-save
    (tmp_path / "step_x").mkdir()  # not a checkpoint name
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(
            tmp_path,
            step,
            model=model,
            optimizer=optimizer,
            trainer_state={"data_position": step},
            config_yaml="",
            keep_last_k=2,
        )
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_4"
    assert not list(tmp_path.glob(".tmp-step_*"))  # stale temporaries cleaned by the next save
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None
