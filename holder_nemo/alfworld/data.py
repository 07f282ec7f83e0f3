"""ALFWorld data: fetch the real games where online, list games the way alfworld's ``AlfredTWEnv`` does.

``prepare_alfworld(out_dir)`` downloads the two archives the text environment needs from the ALFWorld GitHub
releases (the same URLs ``alfworld-download`` uses) and unpacks them into ``out_dir/json_2.1.1/{train,valid_seen,
valid_unseen}/<task>/<trial>/{traj_data.json, game.tw-pddl}``:

* ``json_2.1.1_json.zip`` (release 0.2.2): ``traj_data.json`` per trial (task type, targets, annotations);
* ``json_2.1.2_tw-pddl.zip`` (release 0.4.0): ``game.tw-pddl`` per trial (domain + grammar + problem, ``solvable``).

The THOR detector weights and PDDL problem archive that ``alfworld-download`` also fetches are not needed for the
text environment. Expected counts of solvable text games (ALFWorld paper, Table 1): train 3,553,
valid_seen 140, valid_unseen 134; unseen per type: Pick 24, Look 18, Clean 31, Heat 23, Cool 21, Pick Two 17.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

from holder_nemo.alfworld.games import TASK_TYPES
from holder_nemo.files import atomic_write

JSON_URL = "https://github.com/alfworld/alfworld/releases/download/0.2.2/json_2.1.1_json.zip"
TW_PDDL_URL = "https://github.com/alfworld/alfworld/releases/download/0.4.0/json_2.1.2_tw-pddl.zip"

SPLITS: dict[str, str] = {  # AlfredTWEnv ``train_eval`` name -> dataset folder
    "train": "train",
    "eval_in_distribution": "valid_seen",
    "eval_out_of_distribution": "valid_unseen",
}
EXPECTED_GAMES: dict[str, int] = {"train": 3553, "valid_seen": 140, "valid_unseen": 134}


def alfred_tw_config(data_root: str | Path, task_types: tuple[int, ...] = tuple(TASK_TYPES), max_steps: int = 50):
    """The config mapping alfworld's ``AlfredTWEnv`` reads (verl-agent ``config_tw.yaml``, expert off)."""
    root = Path(data_root)
    bad = sorted(set(task_types) - set(TASK_TYPES))
    if bad:
        raise ValueError(f"task_types: unknown ids {bad}; allowed {sorted(TASK_TYPES)}")
    return {
        "dataset": {
            "data_path": str(root / "train"),
            "eval_id_data_path": str(root / "valid_seen"),
            "eval_ood_data_path": str(root / "valid_unseen"),
            "num_train_games": -1,
            "num_eval_games": -1,
        },
        "env": {
            "type": "AlfredTWEnv",
            "domain_randomization": False,
            "task_types": list(task_types),
            "expert_type": "handcoded",
            "goal_desc_human_anns_prob": 0.0,
        },
        "general": {"training_method": "dagger"},
        "dagger": {"training": {"max_nb_steps_per_episode": max_steps}},
    }


def split_name(split: str) -> str:
    """Accept a folder name (``valid_unseen``) or an AlfredTWEnv name (``eval_out_of_distribution``)."""
    inverse = {v: k for k, v in SPLITS.items()}
    if split in SPLITS:
        return split
    if split in inverse:
        return inverse[split]
    raise ValueError(f"split must be one of {sorted(SPLITS) + sorted(inverse)}, got {split!r}")


def list_games(data_root: str | Path, split: str, task_types: tuple[int, ...] = tuple(TASK_TYPES)) -> list[str]:
    """Game files of a split, selected by alfworld's own ``AlfredTWEnv.collect_game_files`` (skips movable/sliced,
    other task types, missing or unsolvable games), sorted for a deterministic order."""
    os.environ.setdefault("ALFWORLD_DATA", str(Path(data_root).parent))  # alfworld.info mkdirs it on import
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"data_root: no such directory {str(data_root)!r}")
    env = AlfredTWEnv(alfred_tw_config(data_root, task_types), train_eval=split_name(split))
    return sorted(env.game_files)


def task_type_of(game_file: str | Path) -> str:
    """The ALFWorld task type of a game: ``traj_data.json`` beside it, else the folder-name prefix."""
    path = Path(game_file)
    traj = path.parent / "traj_data.json"
    if traj.is_file():
        return json.loads(traj.read_text())["task_type"]
    for name in TASK_TYPES.values():
        if name in str(path):
            return name
    raise ValueError(f"cannot tell the task type of {str(path)!r}")


def _download(url: str, dest: Path) -> Path:
    # atomic: a half-downloaded archive never has the final name
    with atomic_write(dest, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, out)
    return dest


def count_games(root: str | Path) -> dict[str, int]:
    """Solvable ``game.tw-pddl`` files per split folder under ``root`` (a ``json_2.1.1`` directory)."""
    counts = {}
    for split in EXPECTED_GAMES:
        n = 0
        for game in Path(root, split).rglob("game.tw-pddl"):
            if "movable" in str(game) or "Sliced" in str(game):
                continue
            if json.loads(game.read_text()).get("solvable"):
                n += 1
        counts[split] = n
    return counts


def prepare_alfworld(out_dir: str | Path, *, force: bool = False) -> dict[str, int]:
    """Download and unpack the ALFWorld text games into ``out_dir`` (network needed); return game counts per split.

    Idempotent: archives already unpacked (marker file) are skipped unless ``force``. Point ``ALFWORLD_DATA`` at
    ``out_dir``; the game root is ``out_dir/json_2.1.1``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for url in (JSON_URL, TW_PDDL_URL):
        name = url.rsplit("/", 1)[-1]
        marker = out / f".{name}.done"
        if marker.exists() and not force:
            continue
        archive = _download(url, out / name)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(out)
        archive.unlink()
        marker.write_text(url + "\n")
    counts = count_games(out / "json_2.1.1")
    return counts


def main(argv: list[str]) -> int:
    """``python -m holder_nemo.alfworld.data OUT_DIR [--force]`` (what ``holderpo data prepare alfworld DIR`` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="holderpo data prepare alfworld", description=prepare_alfworld.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--force", action="store_true", help="download and unpack again")
    args = parser.parse_args(argv)
    try:
        counts = prepare_alfworld(args.out_dir, force=args.force)
    except OSError as exc:  # urllib.error.URLError is an OSError
        print(
            f"holderpo data prepare alfworld: download failed ({exc}).\n"
            f"  needs network access to {JSON_URL}\n  and {TW_PDDL_URL};\n"
            "  offline, `python -m holder_nemo.alfworld make-games DIR` writes small synthetic games instead.",
            file=sys.stderr,
        )
        return 1
    ok = True
    for split, n in counts.items():
        expected = EXPECTED_GAMES[split]
        flag = "ok" if n == expected else f"WARNING: expected {expected}"
        ok &= n == expected
        print(f"{split:>12}: {n:5d} solvable games  {flag}")
    print(f"export ALFWORLD_DATA={Path(args.out_dir).resolve()}  # games under $ALFWORLD_DATA/json_2.1.1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
