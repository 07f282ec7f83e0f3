"""The default recipe, embedded so a non-editable install (no source tree) still runs ``holderpo train``.

A verbatim copy of ``recipes/smoke_cpu.yaml`` (tests/reference/test_config.py checks they are identical); after
editing the YAML file, regenerate this module with ``python -m holder_nemo.reference.default_recipe --regenerate``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

SMOKE_CPU_YAML = """\
# Run:      holderpo train                      (no argument = this file)
#           holderpo train recipes/smoke_cpu.yaml grpo.max_num_steps=6 checkpointing.checkpoint_dir=/tmp/run
#
# The reference run's default recipe: a tiny Qwen2 learns a digit-copy task from random init with annealed-p
# HölderPO, on CPU, in a couple of minutes. No download: the model is built from config, the tokenizer locally.
# Schedule: holderpo schedule recipes/smoke_cpu.yaml
# Compare:  holderpo compare recipes/smoke_cpu.yaml      (GRPO vs GSPO vs annealed HölderPO, same seed)
# Outputs:  RUN_DIR = checkpointing.checkpoint_dir: metrics.jsonl, step_N/, tb/, training.png, COMPLETED
# Keys mean what they mean in NeMo RL's GRPO recipes; see docs/reference_run.md.

grpo:
  num_prompts_per_step: 32
  # G responses per prompt; advantages are normalised within each group
  num_generations_per_prompt: 16
  max_num_steps: 200
  # true: (r - mean) / (std + 1e-8) as GRPO; false: r - mean (Dr.GRPO)
  normalize_rewards: true
  seed: 42

# The NeMo RL plugin's loss section (holder_nemo.nemo_rl.HolderPOLossFn validates it).
loss_fn:
  ratio_clip_min: 0.2                   # the paper's sequence clip (docs/recipes.md, "Clip epsilon")
  ratio_clip_max: 0.2
  # no KL term, as in the paper's maths runs
  reference_policy_kl_penalty: 0.0
  holder:
    schedule:
      # paper default: p falls linearly from p_max to p_min, reaching p_min at the last step
      kind: "linear_dec"
      p_max: 2.0
      p_min: -2.0
      steps: ${grpo.max_num_steps}
    # sequence = paper Eq. 2 (clip rho_p); token = App. D; none = unclipped
    clip_mode: "sequence"

policy:
  # null = the built-in tiny Qwen2 below; or a local Hugging Face causal-LM directory (nothing is downloaded)
  model_name: null
  tiny_model:
    hidden_size: 64
    num_layers: 2
    num_heads: 4
    num_kv_heads: 2
    intermediate_size: 256
  # rows per optimizer update: 32 x 16 = 512 rows -> 2 updates per step, so ratios move off 1 and clipping acts
  # (4 updates at this lr move the policy too far per step: the group collapses early on some seeds)
  train_global_batch_size: 256
  # rows per forward/backward (gradient accumulation inside an update)
  train_micro_batch_size: 128
  logprob_batch_size: 256
  max_grad_norm: 1.0
  generation:
    temperature: 1.0
    # answers have <= 2 digits + <eos>; one token of slack lets the model overrun (and be penalised)
    max_new_tokens: 4
  optimizer:
    name: "torch.optim.AdamW"
    kwargs:
      lr: 1.0e-3
      betas: [0.9, 0.99]
      eps: 1.0e-8
      weight_decay: 0.0

checkpointing:
  # the run directory (RUN_DIR): checkpoints, metrics.jsonl, figure; rerunning the command resumes from here
  checkpoint_dir: "runs/smoke_cpu"
  save_period: 50
  keep_last_k: 2

logger:
  progress_bar: true
  # RUN_DIR/tb when the tensorboard package is installed
  tensorboard_enabled: true
  # RUN_DIR/training.png at the end (holderpo plot RUN_DIR redraws it)
  plot: true

data:
  # digits (built-in, exact answers), math_jsonl (needs policy.model_name and data.train_path) or arith_words
  # (generated one-step word problems, boxed answer graded by math-verify; needs an instruct policy.model_name)
  task: "digits"
  digits:
    # copy "12=" -> "12"; also reverse, add, repeat ("12=" -> "12121212", holderpo study)
    op: "copy"
    min_digits: 1
    max_digits: 2
    # partial: fraction of positions matching answer + <eos> (1.0 iff exact); exact: 1/0
    reward: "partial"
    # op repeat: the number tiled to this many digits
    repeat_length: 8
  train_path: null

reference:
  # cpu | cuda | auto
  device: "cpu"
  # torch intra-op threads; 1 is fastest for the tiny model (null = torch's default, all cores)
  num_threads: 1
"""


def repo_recipe_path() -> Path:
    """``recipes/smoke_cpu.yaml`` of the source tree (present for editable installs and checkouts)."""
    return Path(__file__).resolve().parents[2] / "recipes" / "smoke_cpu.yaml"


def default_recipe_path() -> Path:
    """The source tree's recipe when present, else the embedded copy written to a temporary file."""
    repo = repo_recipe_path()
    if repo.is_file():
        return repo
    path = Path(tempfile.mkdtemp(prefix="holderpo-recipe-")) / "smoke_cpu.yaml"
    path.write_text(SMOKE_CPU_YAML)
    return path


def _regenerate() -> None:
    source = Path(__file__).read_text()
    head, rest = source.split('SMOKE_CPU_YAML = """\\\n', 1)
    _, tail = rest.split('"""\n', 1)
    Path(__file__).write_text(head + 'SMOKE_CPU_YAML = """\\\n' + repo_recipe_path().read_text() + '"""\n' + tail)


if __name__ == "__main__" and sys.argv[1:] == ["--regenerate"]:
    _regenerate()
