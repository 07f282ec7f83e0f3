"""Real gloo process groups (4 spawned ranks), CP in {2, 4}: ``cp_log_holder_mean`` against the single-process core.
The float64 references and the checks live in distributed_worker.py; one launch runs them all (many assertions per
launch keeps the area's CI time small) and each test below reports one check."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))  # spawned ranks import distributed_worker from this folder
import distributed_worker

pytestmark = pytest.mark.distributed
WORLD = 4


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gloo")
    mp.spawn(distributed_worker.run_rank, args=(WORLD, str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _assert_check(rank_results, name):
    results = rank_results
    failures = [f"rank {r}: {res[name]}" for r, res in enumerate(results) if res.get(name) != "ok"]
    assert not failures, "\n".join(failures)


def test_cp_log_holder_mean_matches_core_for_any_token_assignment(rank_results):
    """CP = 2 and 4, random owner per token, rows wholly on one rank, empty and one-token rows, NaN padding, p in
    {0, 1e-6, +-0.37..30, +-inf} and a per-sequence p tensor; float64 to 1e-10 and float32 to 1e-5, value and each
    rank's local gradient."""
    _assert_check(rank_results, "cp_reduction_exact")


def test_naive_per_rank_holder_mean_is_rejected(rank_results):
    _assert_check(rank_results, "naive_per_rank_mean_is_caught")


def test_cp_metrics_match_whole_sequence_metrics(rank_results):
    _assert_check(rank_results, "cp_stats_metrics")


def test_nonfinite_log_ratio_on_one_rank_raises_on_every_rank(rank_results):
    _assert_check(rank_results, "nonfinite_raises_on_every_rank")
