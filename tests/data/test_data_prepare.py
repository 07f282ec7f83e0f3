"""`holderpo data prepare --source hub`: Hub rows (small generated files in each source's schema) -> JSONL.

No network: the rows go through the same normalisation and writing code as a download, via --from-file. The
authors' evaluation suite (the default source) is tested in test_eval_suite.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from holder_nemo.config import load_recipe
from holder_nemo.data.cli import main
from holder_nemo.data.normalize import DataError, normalize_answer, normalize_rows
from holder_nemo.data.prepare import prepare
from holder_nemo.data.sources import SPECS

REPO = Path(__file__).resolve().parents[2]

# One upstream-schema row per dataset and the record it must become.
UPSTREAM = {
    "math_lvl3to5": (
        {
            "data_source": "math",
            "prompt": [{"role": "user", "content": "templated"}],
            "extra_info": {"question": "Find $x$ if $2x=6$.", "answer": "3"},
            "reward_model": {"ground_truth": "3"},
        },
        {"problem": "Find $x$ if $2x=6$.", "answer": "3"},
    ),
    "aime24": (
        {"id": 60, "problem": "Every morning Aya ...", "solution": "...", "answer": "204", "url": "u", "year": 2024},
        {"problem": "Every morning Aya ...", "answer": "204"},
    ),
    "amc": (
        {"id": 0, "problem": "Let $a$ ...", "answer": 142.0, "url": "u"},
        {"problem": "Let $a$ ...", "answer": "142"},
    ),
    "math500": (
        {
            "problem": "Convert $(0,3)$ ...",
            "solution": "...",
            "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
            "subject": "Precalculus",
            "level": 2,
            "unique_id": "test/precalculus/807.json",
        },
        {"problem": "Convert $(0,3)$ ...", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"},
    ),
    "minerva": (
        {"question": "Each of the two Magellan telescopes ...", "answer": "1.6"},
        {"problem": "Each of the two Magellan telescopes ...", "answer": "1.6"},
    ),
    "olympiadbench": (
        {"id": 1606, "question": "Xenia and Sergey ...", "final_answer": ["$1$"], "is_multiple_answer": False},
        {"problem": "Xenia and Sergey ...", "answer": "1"},
    ),
    "aime25": (
        {"question": "Find the sum of all integer bases ...", "answer": "70"},
        {"problem": "Find the sum of all integer bases ...", "answer": "70"},
    ),
}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_dataset_has_a_schema_example():
    assert set(UPSTREAM) == set(SPECS)
    expected_counts = {
        "math_lvl3to5": 8523,
        "aime24": 30,
        "amc": 83,
        "math500": 500,
        "minerva": 272,
        "olympiadbench": 675,
        "aime25": 30,
    }
    assert {name: spec.expected_rows for name, spec in SPECS.items()} == expected_counts


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_cli_normalises_each_source(name, tmp_path, capsys):
    raw, expected = UPSTREAM[name]
    src = _write_jsonl(tmp_path / "raw.jsonl", [raw, raw])
    out = tmp_path / "out"
    assert main(["prepare", name, str(out), "--from-file", str(src), "--allow-count-mismatch"]) == 0
    assert _read_jsonl(out / f"{name}.jsonl") == [expected, expected]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[name]["rows"] == 2 and manifest[name]["expected_rows"] == SPECS[name].expected_rows
    assert manifest[name]["repo_id"] == SPECS[name].repo_id
    assert "(expected" in capsys.readouterr().out


def test_row_count_is_checked(tmp_path, capsys):
    raw, _ = UPSTREAM["aime24"]
    src = _write_jsonl(tmp_path / "raw.jsonl", [raw] * 29)
    assert main(["prepare", "aime24", str(tmp_path / "out"), "--from-file", str(src)]) == 1
    err = capsys.readouterr().err
    assert "aime24" in err and "29 rows, expected 30" in err
    assert not (tmp_path / "out" / "aime24.jsonl").exists()


def test_exact_row_count_passes_without_flag(tmp_path):
    raw, _ = UPSTREAM["aime24"]
    src = _write_jsonl(tmp_path / "raw.jsonl", [dict(raw, answer=str(i)) for i in range(30)])
    assert main(["prepare", "aime24", str(tmp_path), "--from-file", str(src)]) == 0
    rows = _read_jsonl(tmp_path / "aime24.jsonl")
    assert len(rows) == 30 and [r["answer"] for r in rows] == [str(i) for i in range(30)]  # upstream order kept


def test_manifest_accumulates_and_hash_matches(tmp_path):
    import hashlib

    for name in ("math500", "amc"):
        raw, _ = UPSTREAM[name]
        prepare(name, tmp_path, rows=[raw], source="test", check_count=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest) == {"math500", "amc"}
    for name, entry in manifest.items():
        assert entry["sha256"] == hashlib.sha256((tmp_path / f"{name}.jsonl").read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_missing_problem_names_row_and_fields():
    with pytest.raises(DataError, match=r"minerva: row 1 has no problem text in any of \['question', 'problem'\]"):
        normalize_rows([{"question": "q", "answer": "1"}, {"answer": "2"}], SPECS["minerva"])


def test_missing_answer_is_an_error():
    with pytest.raises(DataError, match=r"aime24: row 0 has no answer"):
        normalize_rows([{"problem": "p"}], SPECS["aime24"])


def test_empty_answer_is_an_error_for_eval_and_counted_for_train():
    with pytest.raises(DataError, match="math500: row 0 has an empty answer"):
        normalize_rows([{"problem": "p", "answer": "  "}], SPECS["math500"])
    rows, empty = normalize_rows(
        [{"extra_info": {"question": "q", "answer": ""}}, {"extra_info": {"question": "r", "answer": "2"}}],
        SPECS["math_lvl3to5"],
    )
    assert empty == 1 and rows[1] == {"problem": "r", "answer": "2"}


def test_training_answer_falls_back_to_verl_ground_truth():
    rows, _ = normalize_rows([{"question": "q", "reward_model": {"ground_truth": "7"}}], SPECS["math_lvl3to5"])
    assert rows == [{"problem": "q", "answer": "7"}]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (142.0, "142"),
        (0.5, "0.5"),
        (17, "17"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        (["$3$", "$4$"], ["3", "4"]),  # alternatives (Minerva): any may match
        (["$3$"], "3"),
        (" 12 ", "12"),
        ("$x$ and $y$", "$x$ and $y$"),  # only an answer wrapped in one $...$ pair is unwrapped
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalize_answer_rejects_non_finite_and_bool():
    with pytest.raises(DataError):
        normalize_answer(float("nan"))
    with pytest.raises(DataError):
        normalize_answer(True)


def test_problem_text_is_kept_verbatim():
    rows, _ = normalize_rows([{"problem": "  spaced\n", "answer": "1"}], SPECS["math500"])
    assert rows[0]["problem"] == "  spaced\n"


def test_usage_errors(tmp_path, capsys):
    assert main(["prepare", "all", str(tmp_path), "--from-file", "x.jsonl"]) == 2
    with pytest.raises(SystemExit):
        main(["prepare", "gsm8k", str(tmp_path)])
    assert main(["prepare", "amc", str(tmp_path), "--from-file", str(tmp_path / "nope.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_download_without_datasets_package_says_what_to_do(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    assert main(["prepare", "aime24", str(tmp_path), "--source", "hub"]) == 1
    assert "pip install datasets" in capsys.readouterr().err


def test_list_prints_sources(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "hkust-nlp/SimpleRL-Zoo-Data" in out and "8523 rows" in out and "OE_TO_maths_en_COMP" in out


def test_recipes_point_at_the_prepared_files(monkeypatch):
    monkeypatch.setenv("HOLDERPO_DATA_DIR", "/prepared")
    cfg = load_recipe(REPO / "recipes" / "holderpo_qwen2.5-math-7b.yaml")
    assert cfg.data.train.data_path == "/prepared/math_lvl3to5.jsonl"
    assert cfg.data.validation.data_path == "/prepared/math500.jsonl"
    assert (cfg.data.default.input_key, cfg.data.default.output_key) == ("problem", "answer")


def test_alfworld_is_handed_to_its_own_preparer(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "alfworld", "--help"])
    assert exit_info.value.code == 0
    assert "holderpo data prepare alfworld" in capsys.readouterr().out


class _FakeHub:
    """Stand-in for the `datasets` package (the Hub cannot be reached in tests): records each load_dataset call."""

    def __init__(self, rows_per_call: int = 15, fail: bool = False):
        self.calls: list[tuple] = []
        self.rows_per_call, self.fail = rows_per_call, fail

    def load_dataset(self, repo_id, config=None, *, split, revision, data_files=None):
        self.calls.append((repo_id, config, split, revision, data_files))
        if self.fail:
            raise ConnectionError(f"Couldn't reach '{repo_id}' on the Hub")
        return [{"question": f"{config} q{i}", "answer": str(i)} for i in range(self.rows_per_call)]

    @staticmethod
    def concatenate_datasets(parts):
        return [row for part in parts for row in part]


def _install_fake_hub(monkeypatch, hub: _FakeHub) -> _FakeHub:
    import sys
    import types

    fake = types.SimpleNamespace(load_dataset=hub.load_dataset, concatenate_datasets=hub.concatenate_datasets)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    return hub


def test_download_path_loads_every_config_in_order(tmp_path, monkeypatch):
    hub = _install_fake_hub(monkeypatch, _FakeHub(rows_per_call=15))
    entry = prepare("aime25", tmp_path)
    assert hub.calls == [
        ("opencompass/AIME2025", "AIME2025-I", "test", "main", None),
        ("opencompass/AIME2025", "AIME2025-II", "test", "main", None),
    ]
    rows = _read_jsonl(tmp_path / "aime25.jsonl")
    assert entry["rows"] == 30 and rows[0]["problem"] == "AIME2025-I q0" and rows[15]["problem"] == "AIME2025-II q0"


def test_download_passes_data_files_for_the_training_parquet(tmp_path, monkeypatch):
    hub = _install_fake_hub(monkeypatch, _FakeHub(rows_per_call=3))
    with pytest.raises(DataError, match=r"math_lvl3to5: .* gave 3 rows, expected 8523"):
        prepare("math_lvl3to5", tmp_path)
    assert hub.calls == [
        ("hkust-nlp/SimpleRL-Zoo-Data", None, "train", "main", "simplelr_qwen_level3to5/train.parquet")
    ]


def test_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _install_fake_hub(monkeypatch, _FakeHub(fail=True))
    assert main(["prepare", "minerva", str(tmp_path), "--source", "hub"]) == 1
    err = capsys.readouterr().err
    assert "minerva: could not load math-ai/minervamath split=test" in err and "--from-file" in err


def test_prepare_help_lists_alfworld(capsys):
    """`holderpo data prepare --help` names every dataset it prepares, the ALFWorld games included."""
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "alfworld" in out.split("positional arguments")[0]  # in the usage line's choices
    assert "holderpo data prepare alfworld --help" in out


def test_alfworld_after_options_is_a_usage_error(tmp_path, capsys):
    assert main(["prepare", "--source", "hub", "alfworld", str(tmp_path)]) == 2
    assert "holderpo data prepare alfworld OUT_DIR" in capsys.readouterr().err
