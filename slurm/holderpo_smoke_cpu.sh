#!/bin/bash
#SBATCH --job-name=holderpo-smoke-cpu
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=00:30:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
# The reference run (`holderpo train`, CPU, no container) under the same stop rule as the GPU entries (checkpoint,
# requeue, exact resume), so that rule runs for real on any Slurm cluster. See docs/slurm.md.
#
#   sbatch slurm/holderpo_smoke_cpu.sh [recipe overrides...]
#   sbatch slurm/holderpo_smoke_cpu.sh grpo.max_num_steps=20
#
# Environment (defaults in brackets; all optional):
#   HOLDERPO_RECIPE     reference-run recipe                [$HOLDERPO_HOME/recipes/smoke_cpu.yaml]
#   HOLDERPO_TRAIN      the `holderpo` executable            [$HOLDERPO_HOME/.venv/bin/holderpo, else `holderpo`]
#   HOLDERPO_SRUN_ARGS  extra srun arguments for the driver step ["" ]
#   plus the run-level variables of slurm/lib/common.sh (HOLDERPO_RUN_DIR, HOLDERPO_MAX_RESTARTS, ...).
set -euo pipefail

# Slurm runs a copy of this file from its spool directory: locate the repository from the path sbatch was given.
hp_entry=$(scontrol show job "${SLURM_JOB_ID:-none}" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p') || true
[[ -f "${hp_entry:-}" ]] || hp_entry=${BASH_SOURCE[0]}
HOLDERPO_HOME=${HOLDERPO_HOME:-$(cd "$(dirname "$hp_entry")/.." && pwd)}
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$HOLDERPO_HOME/slurm/lib/common.sh"
hp_install_traps

HOLDERPO_RECIPE=${HOLDERPO_RECIPE:-$HOLDERPO_HOME/recipes/smoke_cpu.yaml}
if [[ -z "${HOLDERPO_TRAIN:-}" && -x "$HOLDERPO_HOME/.venv/bin/holderpo" ]]; then
  HOLDERPO_TRAIN=$HOLDERPO_HOME/.venv/bin/holderpo
fi
HOLDERPO_TRAIN=${HOLDERPO_TRAIN:-holderpo}
HOLDERPO_CKPT_TIMEOUT_S=${HOLDERPO_CKPT_TIMEOUT_S:-90}

# `holderpo train` writes step_N/ and, once all steps are done, COMPLETED in the run directory itself.
hp_refuse_run_layout_overrides "checkpointing.checkpoint_dir=the run directory (HOLDERPO_RUN_DIR)" -- "$@"
hp_init_attempt ""

read -r -a extra_srun_args <<<"${HOLDERPO_SRUN_ARGS:-}"
hp_run_driver "$HOLDERPO_LOG_DIR/driver.log" \
  srun --ntasks=1 --nodes=1 --kill-on-bad-exit=1 "${extra_srun_args[@]}" \
  "$HOLDERPO_TRAIN" train "$HOLDERPO_RECIPE" \
  checkpointing.checkpoint_dir="$HOLDERPO_RUN_DIR" logger.progress_bar=false "$@"
hp_finish
