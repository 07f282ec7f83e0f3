"""Find the Hugging Face weights and tokenizer to evaluate: an HF model directory or a NeMo RL checkpoint.

NeMo RL (v0.7.0) checkpoint layout, one directory per saved step::

    <checkpoint_dir>/step_<N>/
        config.yaml                  # the run's resolved config (policy.model_name = base model)
        training_info.json
        policy/tokenizer/            # tokenizer as used in training (HF format)
        policy/weights/              # DTensor: torch DCP (``.metadata`` here, or in model/ for DTensor v2)
                                     # DTensor v2 with checkpointing.save_consolidated: model/consolidated/ (HF)
                                     # Megatron: iter_<NNNNNNN>/ (+ latest_checkpointed_iteration.txt)

A DCP checkpoint is converted with NeMo RL's own ``nemo_rl.utils.native_checkpoint.convert_dcp_to_hf`` (what
``examples/converters/convert_dcp_to_hf.py`` calls; CPU is enough). A Megatron checkpoint needs Megatron-Bridge, so
it is converted with ``nemo_rl.models.megatron.community_import.export_model_from_megatron`` when importable and
otherwise we print the converter command to run in the NeMo RL container. The export goes to ``<step>/hf`` (or
``hf_export_dir``), written to a temporary directory first and renamed when complete.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

WEIGHT_PATTERNS = (
    "*.safetensors",
    "pytorch_model*.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSourceError(ValueError):
    """The model path is neither a usable HF directory nor a convertible NeMo RL checkpoint."""


@dataclass(frozen=True)
class ResolvedModel:
    """What the backends load: HF weights (``model``) and tokenizer, plus where they came from."""

    model: str
    tokenizer: str
    source: str  # "hf_dir" | "hub" | "nemo_rl_consolidated" | "nemo_rl_dcp" | "nemo_rl_megatron"
    step: int | None = None


def has_weights(directory: Path) -> bool:
    return any(any(directory.glob(p)) for p in WEIGHT_PATTERNS)


def has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in TOKENIZER_FILES)


def check_hf_dir(directory: Path, tokenizer_dir: Path | None = None) -> None:
    """Raise ModelSourceError naming what is missing from an HF model directory."""
    tokenizer_dir = tokenizer_dir or directory
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not has_weights(directory):
        missing.append(f"weights ({' or '.join(WEIGHT_PATTERNS)})")
    if not has_tokenizer(tokenizer_dir):
        missing.append(f"tokenizer ({' or '.join(TOKENIZER_FILES)}) in {tokenizer_dir}")
    if missing:
        raise ModelSourceError(f"model directory {directory} is not a usable Hugging Face model: missing {missing}")


def is_nemo_rl_step_dir(path: Path) -> bool:
    return (path / "policy" / "weights").is_dir()


def _step_number(path: Path) -> int | None:
    match = re.fullmatch(r"step_(\d+)", path.name)
    return int(match.group(1)) if match else None


def _dcp_dir(weights: Path) -> Path | None:
    for candidate in (weights, weights / "model"):
        if (candidate / ".metadata").is_file():
            return candidate
    return None


def _megatron_iter_dir(weights: Path) -> Path | None:
    tracker = weights / "latest_checkpointed_iteration.txt"
    if tracker.is_file() and tracker.read_text().strip().isdigit():
        candidate = weights / f"iter_{int(tracker.read_text().strip()):07d}"
        if candidate.is_dir():
            return candidate
    iters = sorted(d for d in weights.glob("iter_*") if d.is_dir())
    return iters[-1] if iters else None


def _policy_config(step_dir: Path) -> dict:
    config_path = step_dir / "config.yaml"
    if not config_path.is_file():
        return {}
    import yaml

    with config_path.open() as f:
        config = yaml.safe_load(f) or {}
    policy = config.get("policy") if isinstance(config, dict) else None
    return policy if isinstance(policy, dict) else {}


def converter_command(step_dir: Path, export_dir: Path) -> str:
    """The NeMo RL converter command line for this checkpoint (run from the NeMo RL source root)."""
    weights = step_dir / "policy" / "weights"
    iter_dir = _megatron_iter_dir(weights)
    if iter_dir is not None:
        return (
            "uv run --extra mcore python examples/converters/convert_megatron_to_hf.py "
            f"--config {step_dir / 'config.yaml'} --megatron-ckpt-path {iter_dir} --hf-ckpt-path {export_dir}"
        )
    return (
        "uv run python examples/converters/convert_dcp_to_hf.py "
        f"--config {step_dir / 'config.yaml'} --dcp-ckpt-path {weights} --hf-ckpt-path {export_dir}"
    )


def _convert(step_dir: Path, export_dir: Path, base_model: str | None) -> str:
    """Convert the checkpoint in ``step_dir`` to HF format in ``export_dir`` (atomic); returns the layout name."""
    weights = step_dir / "policy" / "weights"
    tokenizer_dir = step_dir / "policy" / "tokenizer"
    dcp_dir, iter_dir = _dcp_dir(weights), _megatron_iter_dir(weights)
    if dcp_dir is None and iter_dir is None:
        raise ModelSourceError(
            f"{weights} holds neither a torch DCP checkpoint (.metadata) nor Megatron iter_* directories"
        )
    policy = _policy_config(step_dir)
    base = str(base_model or policy.get("model_name") or "")
    if not base:
        raise ModelSourceError(
            f"{step_dir / 'config.yaml'} is missing or has no policy.model_name: pass --base-model (HF name or "
            "directory of the model that was trained)"
        )
    tokenizer = str(tokenizer_dir) if has_tokenizer(tokenizer_dir) else base
    tmp_dir = export_dir.with_name(export_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    how_to = "Convert it in the NeMo RL container, from the NeMo RL source root, then rerun:\n  " + converter_command(
        step_dir, export_dir
    )
    if dcp_dir is not None:
        layout = "nemo_rl_dcp"
        try:
            from nemo_rl.utils.native_checkpoint import convert_dcp_to_hf
        except ImportError as exc:
            raise ModelSourceError(
                f"{step_dir} is a NeMo RL DCP checkpoint but nemo_rl is not importable ({exc}).\n{how_to}"
            ) from exc
        convert_dcp_to_hf(
            dcp_ckpt_path=str(weights),
            hf_ckpt_path=str(tmp_dir),
            model_name_or_path=base,
            tokenizer_name_or_path=tokenizer,
            hf_overrides=policy.get("hf_overrides") or {},
        )
    else:
        layout = "nemo_rl_megatron"
        try:
            from nemo_rl.models.megatron.community_import import export_model_from_megatron
        except ImportError as exc:
            raise ModelSourceError(
                f"{step_dir} is a NeMo RL Megatron checkpoint; converting it needs Megatron-Bridge ({exc}).\n{how_to}"
            ) from exc
        export_model_from_megatron(
            hf_model_name=base,
            input_path=str(iter_dir),
            output_path=str(tmp_dir),
            hf_tokenizer_path=tokenizer,
            hf_overrides=policy.get("hf_overrides") or {},
        )
    check_hf_dir(tmp_dir)
    tmp_dir.rename(export_dir)
    return layout


def resolve_model(
    path: str | Path, *, hf_export_dir: Path | None = None, base_model: str | None = None
) -> ResolvedModel:
    """Resolve ``path`` (HF dir, HF hub id, or NeMo RL ``step_N`` dir) to loadable HF weights and tokenizer."""
    path_str = str(path)
    path = Path(path).expanduser()
    if not path.exists():
        if _HUB_ID.match(path_str):
            return ResolvedModel(path_str, path_str, "hub")
        raise ModelSourceError(f"model path {path} does not exist (and is not a Hugging Face hub id org/name)")
    if not path.is_dir():
        raise ModelSourceError(f"model path {path} is a file; give a model directory or a NeMo RL step_N directory")
    if (path / "config.json").is_file() and not is_nemo_rl_step_dir(path):
        check_hf_dir(path)
        return ResolvedModel(str(path), str(path), "hf_dir")
    if not is_nemo_rl_step_dir(path):
        steps = sorted((p for p in path.glob("step_*") if is_nemo_rl_step_dir(p)), key=lambda p: _step_number(p) or -1)
        if steps:
            raise ModelSourceError(
                f"{path} is a NeMo RL checkpoint directory with steps {[p.name for p in steps]}: pass one of them, "
                f"e.g. {steps[-1]}"
            )
        check_hf_dir(path)  # raises, naming what is missing
    step = _step_number(path)
    tokenizer_dir = path / "policy" / "tokenizer"
    consolidated = path / "policy" / "weights" / "model" / "consolidated"
    if (consolidated / "config.json").is_file() and has_weights(consolidated):
        tokenizer = tokenizer_dir if has_tokenizer(tokenizer_dir) else consolidated
        check_hf_dir(consolidated, tokenizer)
        return ResolvedModel(str(consolidated), str(tokenizer), "nemo_rl_consolidated", step)
    export_dir = Path(hf_export_dir) if hf_export_dir else path / "hf"
    if (export_dir / "config.json").is_file():
        check_hf_dir(export_dir)
        layout = "nemo_rl_megatron" if _megatron_iter_dir(path / "policy" / "weights") else "nemo_rl_dcp"
        return ResolvedModel(str(export_dir), str(export_dir), layout, step)
    layout = _convert(path, export_dir, base_model)
    return ResolvedModel(str(export_dir), str(export_dir), layout, step)
