"""Download (or read a local copy of) one dataset, check its rows, write JSONL atomically.

Two kinds of source: the authors' evaluation suite (``prepare_suite``: rows kept exactly as stored, see
``holder_nemo.data.suite``) and Hugging Face datasets (``prepare``: normalised to ``{"problem", "answer"}``).
Outputs in OUT_DIR: ``<name>.jsonl`` (one object per line, upstream order) and ``manifest.json`` (per dataset:
source, split, revision or commit, rows, sha256 of the output and, for the suite, of the Arrow file read).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from holder_nemo.data.normalize import DataError, normalize_rows
from holder_nemo.data.sources import SPECS, DatasetSpec
from holder_nemo.data.suite import SUITE, SUITE_COMMIT, SUITE_REPO, load_split
from holder_nemo.files import atomic_write


def load_from_hub(spec: DatasetSpec) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of the upstream split (configs concatenated) and the dataset commit, via the ``datasets`` library."""
    try:
        from datasets import concatenate_datasets, load_dataset
    except ImportError as exc:
        raise DataError(
            "downloading needs the `datasets` package (pip install datasets), or pass --from-file with a local "
            "export of the upstream split"
        ) from exc
    parts = []
    for config in spec.configs:
        kwargs: dict[str, Any] = {"split": spec.split, "revision": spec.revision}
        if spec.data_files:
            kwargs["data_files"] = spec.data_files
        try:
            parts.append(load_dataset(spec.repo_id, config, **kwargs))
        except Exception as exc:  # network, auth, renamed files: datasets raises many unrelated types
            where = f"{spec.repo_id}" + (f" [{config}]" if config else "") + f" split={spec.split}"
            raise DataError(
                f"{spec.name}: could not load {where} from the Hugging Face Hub ({type(exc).__name__}: {exc}); "
                "on an offline machine use --from-file with a local export (docs/data.md)"
            ) from exc
    dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    try:
        from huggingface_hub import HfApi

        commit = HfApi().dataset_info(spec.repo_id, revision=spec.revision).sha
    except Exception:  # offline, or an old huggingface_hub: the manifest then records the requested revision only
        commit = None
    return [dict(row) for row in dataset], commit


def read_local_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local export of the upstream split: ``.jsonl``, ``.json`` (a list) or ``.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--from-file: no such file {path}")
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{line_no}: not valid JSON: {exc}") from exc
        return rows
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
        return data
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError("reading .parquet needs pyarrow (pip install pyarrow)") from exc
        return pq.read_table(path).to_pylist()
    raise DataError(f"--from-file: unsupported file type {path.suffix!r} (use .jsonl, .json or .parquet)")


def _write(out_dir: str | Path, name: str, rows: list[dict[str, Any]], **provenance: Any) -> dict[str, Any]:
    """Write ``OUT_DIR/<name>.jsonl`` atomically and record it in ``OUT_DIR/manifest.json``; returns its entry (the
    dataset's role and expected row count, the rows written and their file's sha256, then ``provenance``)."""
    out_dir = Path(out_dir)
    text = "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows)
    with atomic_write(out_dir / f"{name}.jsonl", fsync=True) as fh:
        fh.write(text)
    spec = SPECS[name]
    entry = {
        "name": name,
        "role": spec.role,
        "file": f"{name}.jsonl",
        "rows": len(rows),
        "expected_rows": spec.expected_rows,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        **provenance,
    }
    path = out_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    manifest[name] = entry
    with atomic_write(path, fsync=True) as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def prepare(
    name: str,
    out_dir: str | Path,
    *,
    rows: list[dict[str, Any]] | None = None,
    source: str = "hub",
    check_count: bool = True,
) -> dict[str, Any]:
    """Normalise ``rows`` (downloaded when None), check the row count, write ``OUT_DIR/<name>.jsonl`` (``name`` one
    of ``SPECS``).

    Returns the manifest entry. Raises DataError naming the dataset when the count differs from the paper's
    (unless ``check_count`` is False, for subsets), or when a row lacks a problem or an answer.
    """
    spec = SPECS[name]  # one of the command line's choices
    commit = None  # the dataset commit, known for a download only
    if rows is None:
        rows, commit = load_from_hub(spec)
    normalized, empty_answers = normalize_rows(rows, spec)
    if check_count and len(normalized) != spec.expected_rows:
        raise DataError(
            f"{name}: {spec.repo_id} ({spec.split}) gave {len(normalized)} rows, expected {spec.expected_rows}; "
            f"the upstream dataset changed or the wrong file was given (--allow-count-mismatch to write it anyway)"
        )
    return _write(
        out_dir,
        name,
        normalized,
        empty_answers=empty_answers,
        source=source,
        repo_id=spec.repo_id,
        configs=[c for c in spec.configs if c],
        data_files=spec.data_files,
        split=spec.split,
        revision=spec.revision,
        commit=commit,
    )


def prepare_suite(name: str, out_dir: str | Path, *, from_dir: str | Path | None = None) -> dict[str, Any]:
    """Write benchmark ``name`` of the authors' evaluation suite to ``OUT_DIR/<name>.jsonl``, rows as stored.

    Reads the Arrow file from ``from_dir`` (a copy of ``datasets/evaluation_suite``) or downloads it from the pinned
    commit; returns the manifest entry. Raises DataError naming the benchmark on a wrong checksum or row count.
    """
    loaded = load_split(name, from_dir=from_dir)
    return _write(
        out_dir,
        name,
        loaded["rows"],
        empty_answers=0,
        source=loaded["source"],
        repo_id=SUITE_REPO,
        split=SUITE[name].split,
        revision=SUITE_COMMIT,
        commit=loaded["commit"],
        arrow_sha256=loaded["sha256"],
        rows_sha256=loaded["rows_sha256"],
    )
