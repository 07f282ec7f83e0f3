#!/bin/bash
#SBATCH --job-name=holderpo-alfworld
#SBATCH --nodes=1
#SBATCH --gres=gpu:8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@900
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
# HölderPO on ALFWorld with Qwen2.5-1.5B-Instruct (recipes/holderpo_alfworld_qwen2.5-1.5b.yaml, paper Table 3) with
# NeMo RL v0.7.0, launched by NeMo RL's own ray.sub. Needs the derived image with the alfworld extra
# (containers/Dockerfile; the ALFWorld environment actor runs in the driver's Python) and the games prepared with
# `holderpo data prepare alfworld $ALFWORLD_DATA` on shared disk. Every stop ends in a checkpoint and a requeue.
#
#   HOLDERPO_CONTAINER_IMAGE=/shared/images/holder-nemo+0.1.0.sqsh ALFWORLD_DATA=/shared/data/alfworld \
#     sbatch slurm/holderpo_alfworld.sh [recipe overrides...]
#
# Settings are environment variables, all listed in docs/slurm.md. This entry's own:
#   ALFWORLD_DATA            ALFWorld data (mounted)  [$HOLDERPO_DATA_DIR/alfworld]
#   HOLDERPO_CKPT_TIMEOUT_S  seconds the driver gets to checkpoint after a stop request  [600]
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

export ALFWORLD_DATA=${ALFWORLD_DATA:-${HOLDERPO_DATA_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/data}/alfworld}
HP_MOUNT_PATHS+=("$ALFWORLD_DATA")
HP_DATA_VARS=(ALFWORLD_DATA)  # the games; this recipe reads no other data
# After a stop request the driver may need a whole step plus a checkpoint; keep this below the --signal margin.
HOLDERPO_CKPT_TIMEOUT_S=${HOLDERPO_CKPT_TIMEOUT_S:-600}
hp_run_nemo_rl holderpo_alfworld_qwen2.5-1.5b.yaml "$@"
