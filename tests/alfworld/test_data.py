"""``prepare_alfworld``: download (here from file:// archives shaped like the GitHub releases), unpack, count."""

from __future__ import annotations

import importlib.util
import zipfile

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None, reason="needs the optional extra holder_nemo[alfworld]"
)


def _release_zip(offline_root, path, name):
    """An archive holding json_2.1.1/<split>/<task>/<trial>/<name> for every offline game, as the releases do."""
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(offline_root.rglob(name)):
            zf.write(f, "json_2.1.1/" + str(f.relative_to(offline_root)))
    return path.as_uri()


def test_prepare_unpacks_counts_and_is_idempotent(offline_root, tmp_path, monkeypatch, capsys):
    from holder_nemo.alfworld import data

    monkeypatch.setattr(
        data, "JSON_URL", _release_zip(offline_root, tmp_path / "json_2.1.1_json.zip", "traj_data.json")
    )
    monkeypatch.setattr(
        data, "TW_PDDL_URL", _release_zip(offline_root, tmp_path / "json_2.1.2_tw-pddl.zip", "game.tw-pddl")
    )
    out = tmp_path / "alfworld_data"
    assert data.prepare_alfworld(out) == {"train": 6, "valid_seen": 6, "valid_unseen": 6}
    assert not list(out.glob("*.zip")) and not list(out.glob(".*.tmp"))  # archives removed after unpacking
    assert len(data.list_games(out / "json_2.1.1", "valid_unseen")) == 6  # AlfredTWEnv reads the unpacked tree

    (tmp_path / "json_2.1.1_json.zip").unlink()  # a second run must not download again
    assert data.prepare_alfworld(out) == {"train": 6, "valid_seen": 6, "valid_unseen": 6}

    assert data.main([str(out)]) == 1  # 6 games is not the real dataset's 3,553 / 140 / 134
    printed = capsys.readouterr().out
    assert "valid_unseen:     6 solvable games  WARNING: expected 134" in printed


def test_prepare_reports_an_unreachable_source(tmp_path, monkeypatch, capsys):
    from holder_nemo.alfworld import data

    monkeypatch.setattr(data, "JSON_URL", (tmp_path / "missing.zip").as_uri())
    assert data.main([str(tmp_path / "out")]) == 1
    assert "download failed" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.part"))


def test_split_names_and_task_types():
    from holder_nemo.alfworld.data import alfred_tw_config, split_name

    assert split_name("valid_unseen") == "eval_out_of_distribution"
    assert split_name("eval_in_distribution") == "eval_in_distribution"
    with pytest.raises(ValueError, match="split must be one of"):
        split_name("test")
    with pytest.raises(ValueError, match=r"task_types: unknown ids \[7\]"):
        alfred_tw_config("/x", task_types=(1, 7))
