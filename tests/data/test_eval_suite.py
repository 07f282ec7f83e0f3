"""The authors' evaluation suite as the default evaluation data (`holderpo data prepare NAME DIR`, source suite).

What is real and what is built here: the suite's Arrow files (understand-r1-zero ``datasets/evaluation_suite``) are
not in a clean clone, so the tests write Arrow IPC streams with pyarrow, in the suite's schema (problem text; answer
as text, float64 or list of text; difficulty), and read them through the same ``--from-dir`` path a local copy of
the suite takes; the download path is exercised against a loopback HTTP server. Where the shared JSONL copy of the
suite exists (``../shared/data/eval_suite`` on the development machine, or $HOLDERPO_EVAL_SUITE_DIR) the full
checks run on every row; in a clean clone they skip with that reason and the committed digest
(``fixtures/eval_suite.json``, see suite_fixture.py) stands in for it.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import ClassVar

import pytest
from suite_fixture import build_fixture, load_fixture, read_jsonl, shared_suite_dir

from holder_nemo.data import suite as suite_module
from holder_nemo.data.cli import main
from holder_nemo.data.sources import SPECS
from holder_nemo.data.suite import ARROW_FILE, SUITE, rows_digest
from holder_nemo.eval.benchmarks import load_benchmark
from holder_nemo.eval.scoring import score_response

pa = pytest.importorskip("pyarrow", reason="pyarrow (test extra) reads and writes the suite's Arrow files")

SHARED = shared_suite_dir()
needs_shared = pytest.mark.skipif(
    SHARED is None, reason="no shared copy of the suite (../shared/data/eval_suite or $HOLDERPO_EVAL_SUITE_DIR)"
)


def write_arrow_suite(root: Path, rows_by_name: dict[str, list[dict]]) -> Path:
    """A ``datasets/evaluation_suite``-shaped folder: ``<split>/data-00000-of-00001.arrow`` IPC streams."""
    for name, rows in rows_by_name.items():
        folder = root / SUITE[name].split
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(folder / ARROW_FILE), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return root


def synthetic_rows(name: str) -> list[dict]:
    """Rows in the suite's schema with the real gold answers (fixture) and made-up problem texts."""
    answers = load_fixture()[name]["answers"]
    rows = [{"problem": f"{name} problem {i}?", "answer": a} for i, a in enumerate(answers)]
    if name in ("aime24", "amc", "math500"):
        rows = [dict(r, difficulty=float(i % 5)) for i, r in enumerate(rows)]
    return rows


def test_fixture_has_the_papers_row_counts() -> None:
    fixture = load_fixture()
    assert {name: entry["rows"] for name, entry in fixture.items()} == {n: SPECS[n].expected_rows for n in SUITE}
    assert all(len(entry["answers"]) == entry["rows"] for entry in fixture.values())
    minerva = fixture["minerva"]["answers"]
    assert sum(len(a) > 1 for a in minerva) == 75  # problems with 2-3 accepted answers
    assert all(isinstance(a, float) for a in fixture["amc"]["answers"])
    assert all(isinstance(a, list) and len(a) == 1 for a in fixture["olympiadbench"]["answers"])


@needs_shared
def test_fixture_matches_the_shared_copy() -> None:
    assert build_fixture(SHARED) == load_fixture(), "rebuild with: python tests/data/suite_fixture.py DIR"


@needs_shared
@pytest.mark.parametrize("name", sorted(SUITE))
def test_prepare_reads_every_row_and_answer_of_the_shared_copy(name: str, tmp_path: Path) -> None:
    shared_rows = read_jsonl(SHARED / f"{name}.jsonl")
    suite = write_arrow_suite(tmp_path / "evaluation_suite", {name: shared_rows})
    assert main(["prepare", name, str(tmp_path / "out"), "--from-dir", str(suite)]) == 0
    prepared = read_jsonl(tmp_path / "out" / f"{name}.jsonl")
    assert prepared == shared_rows  # every row, every field, every value and its type (142.0, lists)
    assert rows_digest(prepared) == load_fixture()[name]["rows_sha256"]
    problems = load_benchmark(tmp_path / "out", name)
    assert [p.answer for p in problems] == [r["answer"] for r in shared_rows]


def test_prepare_from_dir_keeps_rows_and_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {name: synthetic_rows(name) for name in SUITE}
    suite = write_arrow_suite(tmp_path / "evaluation_suite", rows)
    out = tmp_path / "out"
    assert main(["prepare", "all", str(out), "--from-dir", str(suite)]) == 1  # aime25/training: Hub only, no network
    printed = capsys.readouterr().out
    for name in SUITE:
        assert read_jsonl(out / f"{name}.jsonl") == rows[name]
        assert f"{name}: {SPECS[name].expected_rows} rows -> " in printed
    manifest = json.loads((out / "manifest.json").read_text())
    amc = manifest["amc"]
    assert (amc["repo_id"], amc["split"], amc["rows"]) == ("sail-sg/understand-r1-zero", "amc", 83)
    assert amc["commit"] is None  # not the pinned Arrow file: the manifest says so
    assert amc["rows_sha256"] == rows_digest(rows["amc"])
    assert load_benchmark(out, "amc")[0].answer == 142.0
    assert load_benchmark(out, "minerva")[1].answer == rows["minerva"][1]["answer"]


def test_wrong_row_count_and_missing_file_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_arrow_suite(tmp_path / "s", {"aime24": synthetic_rows("aime24")[:29]})
    assert main(["prepare", "aime24", str(tmp_path / "out"), "--from-dir", str(suite)]) == 1
    assert "aime24: " in (err := capsys.readouterr().err) and "has 29 rows, expected 30" in err
    assert not (tmp_path / "out" / "aime24.jsonl").exists()
    assert main(["prepare", "amc", str(tmp_path / "out"), "--from-dir", str(suite)]) == 1
    assert f"amc/{ARROW_FILE} not found" in capsys.readouterr().err


def test_empty_answer_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = synthetic_rows("minerva")
    rows[7] = dict(rows[7], answer=[])
    suite = write_arrow_suite(tmp_path / "s", {"minerva": rows})
    assert main(["prepare", "minerva", str(tmp_path / "out"), "--from-dir", str(suite)]) == 1
    assert "minerva: row 7 has no usable answer" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "amc", str(tmp_path), "--source", "suite", "--from-file", "x.jsonl"]) == 2
    assert main(["prepare", "aime25", str(tmp_path), "--source", "suite"]) == 2
    assert main(["prepare", "amc", str(tmp_path), "--source", "hub", "--from-dir", "d"]) == 2
    err = capsys.readouterr().err
    assert "--from-dir" in err and "not in the authors' suite" in err


class _OneFileHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_download_checks_the_pinned_sha256(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download path against a loopback server standing in for GitHub: the bytes served are a valid Arrow file but
    not the pinned one, so the checksum refuses them before anything is written."""
    suite = write_arrow_suite(tmp_path / "s", {"aime24": synthetic_rows("aime24")})
    _OneFileHandler.body = (suite / "aime" / ARROW_FILE).read_bytes()
    _OneFileHandler.paths = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _OneFileHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(suite_module, "SUITE_URL", f"http://127.0.0.1:{server.server_port}/base")
        assert main(["prepare", "aime24", str(tmp_path / "out")]) == 1
    finally:
        server.shutdown()
        thread.join()
    assert _OneFileHandler.paths == [f"/base/aime/{ARROW_FILE}"]
    err = capsys.readouterr().err
    assert "aime24: " in err and f"expected {SUITE['aime24'].sha256}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(SUITE))
def test_every_gold_answer_boxed_is_graded_correct(name: str) -> None:
    """All 1,560 problems, every accepted answer (351 for Minerva's 272 problems), as a model would box it."""
    wrong = []
    for index, answer in enumerate(load_fixture()[name]["answers"]):
        for accepted in answer if isinstance(answer, list) else [answer]:
            response = f"Reasoning.\n\nThe final answer is $\\boxed{{{accepted}}}$."
            if score_response(response, answer).reward != 1.0:
                wrong.append((index, accepted))
    assert wrong == []
