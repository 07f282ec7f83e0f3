"""The sizing block of ``holderpo recipe check``: printed for every shipped recipe, follows layout overrides, warns
(refuses with --strict) when a layout or a save cannot fit, reads the Slurm entry's budgets and a local config.json,
and matches the table in docs/recipes.md ("Sizing a run") figure by figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from holder_nemo.recipe_check.cli import main
from holder_nemo.recipe_check.slurm_budget import find_entry, format_slurm_time, parse_slurm_time, slurm_budget

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))
SEVEN_B = str(REPO / "recipes" / "holderpo_qwen2.5-math-7b.yaml")
SCALE_OUT = str(REPO / "recipes" / "holderpo_qwen2.5-32b-4n8g.yaml")
BUDGET_ENV = ("SBATCH_TIMELIMIT", "SBATCH_SIGNAL", "HOLDERPO_CKPT_TIMEOUT_S", "HOLDERPO_MAX_RESTARTS",
              "HOLDERPO_SAVE_MARGIN_S")  # fmt: skip


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch, tmp_path):
    """Budgets from the scripts, not from this shell; no local models/ directory from the working directory; the data
    the recipes name is here (--strict also refuses missing data files)."""
    for name in BUDGET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    for name in ("math_lvl3to5.jsonl", "math500.jsonl"):
        (tmp_path / "data" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_text("{}\n")
    monkeypatch.setenv("HOLDERPO_DATA_DIR", str(tmp_path / "data"))


def _check(capsys, recipe: str, *argv: str) -> tuple[int, dict[str, str], str]:
    """Exit code, the sizing block as {label: text} (continuation lines joined), stderr."""
    code = main(["check", recipe, "--no-config", *argv])
    out, err = capsys.readouterr()
    block: dict[str, str] = {}
    label = ""
    for line in out.split("sizing (", 1)[1].splitlines()[1:]:
        if not line.startswith("  "):
            break
        if line[2] == " ":  # a continuation line of the label above
            block[label] += " " + line.strip()
            continue
        label, text = re.split(r"\s{2,}", line[2:], maxsplit=1)
        block[label] = text.strip()
    return code, block, err


def _number(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_is_sized(recipe, capsys):
    code, block, err = _check(capsys, str(recipe))
    assert code == 0, err
    assert "sizing" not in block and {"parameters", "checkpoint", "Slurm"} <= set(block), block
    if recipe.name.startswith("holderpo_"):  # the NeMo RL recipes (the others are the CPU reference run's)
        assert {"train/GPU", "vLLM/GPU", "per step", "time"} <= set(block), block


def test_layout_overrides_move_the_figures(capsys):
    _, base, _ = _check(capsys, SEVEN_B)
    _, tp4, _ = _check(
        capsys, SEVEN_B, "policy.megatron_cfg.tensor_model_parallel_size=4", "policy.logprob_batch_size=1"
    )
    _, four_gpus, _ = _check(capsys, SEVEN_B, "cluster.gpus_per_node=4")
    weights = {k: _number(b["train/GPU"], r"weights ([\d.]+)") for k, b in (("2", base), ("4", tp4))}
    assert weights["4"] == pytest.approx(weights["2"] / 2, abs=0.06)  # TP 4 halves the weights per GPU (0.1 GiB)
    optimizer = {k: _number(b["train/GPU"], r"optimizer ([\d.]+)") for k, b in (("8", base), ("4", four_gpus))}
    assert optimizer["4"] == pytest.approx(2 * optimizer["8"], abs=0.15)  # half the DP ranks share the Adam state
    assert "over DP x CP = 2" in four_gpus["train/GPU"]
    _, no_recompute, _ = _check(capsys, SEVEN_B, "policy.megatron_cfg.activation_checkpointing=false")
    assert _number(no_recompute["train/GPU"], r"activations ([\d.]+)") > _number(
        base["train/GPU"], r"activations ([\d.]+)"
    )
    assert "none recompute" in no_recompute["train/GPU"]


def test_a_layout_that_cannot_fit_warns_and_strict_refuses(capsys):
    tp1 = "policy.megatron_cfg.tensor_model_parallel_size=1"
    code, block, err = _check(capsys, SCALE_OUT, tp1)
    assert code == 0 and "warning: policy.megatron_cfg: sizing: the training side needs" in err
    assert _number(block["train/GPU"], r"^([\d.]+) GiB") > 80
    code, _, err = _check(capsys, SCALE_OUT, tp1, "--strict")
    assert code == 2 and "error: policy.megatron_cfg: sizing:" in err
    code, _, err = _check(capsys, SCALE_OUT, tp1, "--gpu-memory", "141")  # fits an H200
    assert code == 0 and "policy.megatron_cfg" not in err
    code, _, err = _check(capsys, SCALE_OUT, "policy.generation.vllm_cfg.gpu_memory_utilization=0.1")
    assert "warning: policy.generation.vllm_cfg.gpu_memory_utilization: sizing:" in err


def test_a_save_that_cannot_fit_the_entrys_budgets_warns(capsys):
    code, block, err = _check(capsys, SEVEN_B)
    assert code == 0 and "sizing:" not in err
    assert "107 GB (14 B/param); 107 s at 1 GB/s" in block["checkpoint"]
    code, block, err = _check(capsys, SEVEN_B, "--fs-bandwidth", "0.1")  # 1,070 s per save
    assert code == 0
    assert "warning: #SBATCH --signal: sizing: one save (~1,066 s) cannot fit in slurm/holderpo_7b.sh's signal" in err
    assert "warning: HOLDERPO_SAVE_MARGIN_S: sizing:" in err and "warning: HOLDERPO_CKPT_TIMEOUT_S: sizing:" in err
    assert _check(capsys, SEVEN_B, "--fs-bandwidth", "0.1", "--strict")[0] == 2


def test_a_step_plus_a_save_must_fit_ckpt_timeout_and_restarts(capsys, monkeypatch):
    code, block, err = _check(capsys, SEVEN_B, "--mfu", "0.01")  # slow: a step alone outlives the timeout
    assert "warning: HOLDERPO_CKPT_TIMEOUT_S: sizing: after a stop request the driver needs up to one step" in err
    assert "warning: HOLDERPO_MAX_RESTARTS: sizing:" in err
    monkeypatch.setenv("HOLDERPO_MAX_RESTARTS", "1000")
    monkeypatch.setenv("HOLDERPO_CKPT_TIMEOUT_S", "100000")
    monkeypatch.setenv("SBATCH_SIGNAL", "B:USR1@100800")
    monkeypatch.setenv("SBATCH_TIMELIMIT", "2-00:00:00")
    code, block, err = _check(capsys, SEVEN_B, "--mfu", "0.01")
    assert code == 0 and "sizing:" not in err, err
    assert "--time 2-00:00:00, --signal margin 100800 s" in block["Slurm"]


def test_time_covers_n_steps_their_saves_and_the_margin(capsys):
    """--time = N steps + their saves and validations + the signal margin, composed here from the printed parts."""
    code, block, _ = _check(capsys, SEVEN_B, "--mfu", "0.3", "--gen-mfu", "0.05", "--time-steps", "20")
    assert code == 0
    from holder_nemo.recipe_check import sizing as sz
    from holder_nemo.recipe_check.architectures import KNOWN, Architecture

    arch = Architecture.from_hf_config(KNOWN["Qwen/Qwen2.5-Math-7B"], "test")
    peak = 989.5e12
    train = 1024 * (3 + 1) * sz.forward_flops(arch, 4096) / (8 * peak * 0.3)  # fwd + bwd, old-policy log-probs
    generate = sz.forward_flops(arch, 4096, logit_tokens=3000) / (8 * peak * 0.05)
    step, save, validation = train + 1024 * generate, 14 * arch.parameters() / 1e9, 500 * generate
    assert _number(block["time"], r"step ~ ([\d,]+) s") == round(step)
    expected = 20 * step + 2 * save + 1 * validation + 900  # saves after steps 10 and 20, validation after step 16
    assert block["--time"].startswith(f">= {format_slurm_time(expected)} for 20 steps + the 900 s signal margin")
    run = 500 * step + 50 * save + 32 * validation
    assert f"500 steps + 50 saves + 32 validations ~ {run / 3600:.1f} h = {run * 8 / 3600:,.0f} GPU-h" in block["time"]


def test_model_from_a_local_config_json(capsys, tmp_path):
    model = tmp_path / "my-qwen3"
    model.mkdir()
    config = {"model_type": "qwen3", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 64, "intermediate_size": 256, "vocab_size": 1000,
              "tie_word_embeddings": True}  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    code, block, _ = _check(capsys, SEVEN_B, f"policy.model_name={model}")
    # q 128x128, k and v 128x64, o 128x128, gate/up/down 3 x 128x256, 2 norms of 128, q/k norms of 64
    per_layer = 128 * 128 + 2 * 128 * 64 + 128 * 128 + 3 * 128 * 256 + 2 * 128 + 2 * 64
    assert code == 0 and block["parameters"].startswith(f"{2 * per_layer + 128 + 1000 * 128:,} (qwen3: 2 layers")
    assert "local config.json" in block["parameters"]
    code, block, _ = _check(capsys, SEVEN_B, "policy.model_name=someone/unknown-model")
    assert code == 0 and block["sizing"].startswith("skipped: 'someone/unknown-model' is neither")


def test_bad_options_name_the_option_and_the_range(capsys):
    for argv, message in ((["--mfu", "1.5"], "--mfu must be > 0 and <= 1, got 1.5"),
                          (["--fs-bandwidth", "0"], "--fs-bandwidth must be > 0, got 0"),
                          (["--fill", "x"], "--fill must be a number, got 'x'")):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            main(["check", SEVEN_B, *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_slurm_entries_budgets(monkeypatch):
    seven_b, matched = find_entry("recipes/holderpo_qwen2.5-math-7b.yaml", 1, True)
    assert seven_b.name == "holderpo_7b.sh" and matched
    budget = slurm_budget(seven_b, env={})
    assert (budget.time_limit_s, budget.signal_margin_s, budget.ckpt_timeout_s) == (4 * 3600, 900, 780)
    assert (budget.max_restarts, budget.save_margin_s) == (20, 600)
    assert find_entry("recipes/holderpo_qwen3-8b-base.yaml", 1, True) == (seven_b, False)  # same node count
    assert find_entry("recipes/anything.yaml", 4, True)[0].name == "holderpo_32b.sh"
    smoke = slurm_budget(find_entry("recipes/smoke_cpu.yaml", 1, False)[0], env={})
    assert (smoke.signal_margin_s, smoke.ckpt_timeout_s, smoke.save_margin_s) == (120, 90, None)
    env = {"SBATCH_SIGNAL": "B:USR1@1200", "HOLDERPO_CKPT_TIMEOUT_S": "1000", "SBATCH_TIMELIMIT": "1-00:00:00"}
    overridden = slurm_budget(seven_b, env=env)
    assert (overridden.signal_margin_s, overridden.ckpt_timeout_s, overridden.time_limit_s) == (1200, 1000, 86400)
    assert [parse_slurm_time(t) for t in ("30", "30:15", "04:00:00", "2-3", "2-03:04", "1-00:00:01")] == [
        1800, 1815, 14400, 183600, 183840, 86401]  # fmt: skip
    assert (format_slurm_time(14400), format_slurm_time(14401), format_slurm_time(86400 + 61)) == (
        "04:00:00", "04:01:00", "1-00:02:00")  # fmt: skip


def _docs_table() -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and the options of the table under docs/recipes.md's "Sizing a run"."""
    text = (REPO / "docs" / "recipes.md").read_text().split("## Sizing a run", 1)[1]
    options = re.search(r"holderpo recipe check RECIPE --no-config (.*)`", text).group(1).split()
    lines = [line for line in text.split("\n\n| recipe |", 1)[1].split("\n\n", 1)[0].splitlines()]
    header = ["recipe", *[c.strip() for c in lines[0].strip("| ").split("|")]]
    rows = [[c.strip().strip("`") for c in line.strip("| ").split("|")] for line in lines[2:]]
    return header, rows, options


# table column -> (printed label, what the cell must be in that line)
COLUMNS = {
    "parameters": ("parameters", "{}"),
    "train GiB/GPU": ("train/GPU", "{} GiB of"),
    "KV cache tokens/engine": ("vLLM/GPU", ": {} tokens"),
    "checkpoint": ("checkpoint", ": {} ("),
    "save": ("checkpoint", "); {} at"),
    "FLOPs train / log-probs / generation": ("per step", "FLOPs {}"),
    "step": ("time", "step ~ {} ("),
    "GPU-h": ("time", "= {} GPU-h"),
}


def test_docs_table_is_what_recipe_check_prints(capsys):
    header, rows, options = _docs_table()
    assert header == ["recipe", *COLUMNS], header
    assert sorted(row[0] for row in rows) == sorted(f"recipes/{p.name}" for p in SHIPPED)
    for row in rows:
        code, block, err = _check(capsys, str(REPO / row[0]), *options)
        assert code == 0, err
        for column, cell in zip(header[1:], row[1:], strict=True):
            label, form = COLUMNS[column]
            if cell == "—":
                assert label not in block, (row[0], column)
                continue
            if column == "FLOPs train / log-probs / generation":
                train, logprobs, gen = cell.split(" / ")
                cell = f"train {train} + log-probs {logprobs}"
                assert f"+ generation {gen}" in block[label], (row[0], column, block[label])
            assert form.format(cell) in block[label], (row[0], column, cell, block[label])
