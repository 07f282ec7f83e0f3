"""The validation draw (``rollout.validation_games``) is verl-agent's: TextWorld's own seeding code decides.

verl-agent's validation environment i is an ``AlfredTWEnv`` batch env seeded ``env.seed + 1000 + i``; TextWorld's
``TextworldBatchGymEnv.seed`` shuffles the game list with ``numpy.random.RandomState(seed)`` and plays it through
``shuffled_cycle`` (one game per reset, i.e. per validation). The reference below runs that real TextWorld code.
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from holder_nemo.alfworld.rollout import validation_games

needs_textworld = pytest.mark.skipif(
    importlib.util.find_spec("textworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)


def _textworld_draw(files: list[str], num_episodes: int, seed: int, round_index: int) -> list[str]:
    from textworld.gym.envs.utils import shuffled_cycle

    games = []
    for i in range(num_episodes):
        rng = np.random.RandomState(seed + i)  # TextworldBatchGymEnv.seed(seed + i)
        order = list(files)
        rng.shuffle(order)
        cycle = shuffled_cycle(order, rng=rng)
        games.append(next(itertools.islice(cycle, round_index, None)))  # the round_index-th reset
    return games


@needs_textworld
@pytest.mark.parametrize("round_index", [0, 1, 5, 13, 29])
def test_draw_matches_textworlds_seeded_cycle(round_index: int) -> None:
    files = [f"valid_seen/game_{k:03d}/game.tw-pddl" for k in range(14)]
    ours = validation_games(list(reversed(files)), 128, 1000, round_index)  # any input order: sorted first
    assert ours == _textworld_draw(sorted(files), 128, 1000, round_index)


def test_draw_is_seeded_with_replacement_and_new_each_round() -> None:
    files = [f"g{k:03d}" for k in range(140)]  # valid_seen has 140 games
    first = validation_games(files, 128, 1000)
    assert first == validation_games(files, 128, 1000)  # a function of (seed, round)
    assert len(set(first)) < 128  # independent per episode: repeats happen (about 83 distinct expected)
    assert validation_games(files, 128, 1000, round_index=1) != first
    assert validation_games(files, 128, 7) != first


def test_first_128_sorted_games_would_drop_a_task_type(offline_root) -> None:
    """Why a draw: the real valid_seen sorts its 12 pick-two games last, so the first 128 of 140 have none.
    Here: with the six offline games sorted, the first two cover two task types; 128 drawn episodes cover all six."""
    from holder_nemo.alfworld.data import list_games, task_type_of

    games = list_games(offline_root, "valid_seen")
    assert len({task_type_of(g) for g in games[:2]}) == 2
    assert len({task_type_of(g) for g in validation_games(games, 128, 1000)}) == 6
