#!/bin/bash
#SBATCH --job-name=holderpo-32b
#SBATCH --nodes=4
#SBATCH --gres=gpu:8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=06:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@1500
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
# HölderPO on Qwen2.5-32B, 4 nodes x 8 GPUs (recipes/holderpo_qwen2.5-32b-4n8g.yaml), NeMo RL v0.7.0, launched by
# NeMo RL's own ray.sub in its container (pyxis/enroot). Every stop ends in a checkpoint and a requeue; docs/slurm.md.
#
#   SBATCH_ACCOUNT=my_account SBATCH_PARTITION=my_gpu_partition sbatch slurm/holderpo_32b.sh [recipe overrides...]
#   sbatch --nodes=8 slurm/holderpo_32b.sh grpo.max_num_steps=500
#
# Settings are environment variables, all listed in docs/slurm.md. This entry's default:
#   HOLDERPO_CKPT_TIMEOUT_S  seconds the driver gets to checkpoint after a stop request  [1380]
set -euo pipefail

# Slurm runs a copy of this file from its spool directory: locate the repository from the path sbatch was given.
hp_entry=$(scontrol show job "${SLURM_JOB_ID:-none}" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p') || true
[[ -f "${hp_entry:-}" ]] || hp_entry=${BASH_SOURCE[0]}
HOLDERPO_HOME=${HOLDERPO_HOME:-$(cd "$(dirname "$hp_entry")/.." && pwd)}
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$HOLDERPO_HOME/slurm/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/nemo_rl.sh
source "$HOLDERPO_HOME/slurm/lib/nemo_rl.sh"
hp_install_traps

# After a stop request the driver may need a whole step plus a checkpoint; keep this below the --signal margin.
HOLDERPO_CKPT_TIMEOUT_S=${HOLDERPO_CKPT_TIMEOUT_S:-1380}
hp_run_nemo_rl holderpo_qwen2.5-32b-4n8g.yaml "$@"
