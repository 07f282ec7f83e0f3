# shellcheck shell=bash
# The NeMo RL entries (holderpo_7b.sh, holderpo_32b.sh, holderpo_alfworld.sh). NeMo RL's own ray.sub, of the
# container's NeMo RL version, brings Ray up in pyxis containers (head and workers retried, ports pinned), runs the
# driver inside the head container and exits with the driver's code. This file only prepares ray.sub's inputs and
# watches it; common.sh decides what the attempt's end means. Sourced after common.sh; see docs/slurm.md.

HP_NEMO_RL_VERSION=0.7  # major.minor of the ray.sub used; holder_nemo.nemo_rl.run_grpo checks the container's
HP_MOUNT_PATHS=()       # directories mounted at their own paths in every container (entries may add theirs)
# What Ray writes when a node died under a task or an actor (Ray 2.x): how the driver's log names a lost node.
HP_RAY_NODE_DIED='actor died because its node has died|node it was running on is dead|NodeDiedError'

hp_nemo_rl_settings() {
  HOLDERPO_CONTAINER_IMAGE=${HOLDERPO_CONTAINER_IMAGE:-nvcr.io#nvidia/nemo-rl:v0.7.0}
  HOLDERPO_NEMO_RL_IN_IMAGE=${HOLDERPO_NEMO_RL_IN_IMAGE:-/opt/nemo-rl}
  HOLDERPO_DRIVER=${HOLDERPO_DRIVER:-python -m holder_nemo.nemo_rl.run_grpo}
  HOLDERPO_SAVE_MARGIN_S=${HOLDERPO_SAVE_MARGIN_S:-600}
  HOLDERPO_CACHE_DIR=${HOLDERPO_CACHE_DIR:-$HOLDERPO_RUNS_ROOT/cache}
  [[ "$HOLDERPO_SAVE_MARGIN_S" =~ ^[0-9]+$ ]] ||
    hp_refuse "HOLDERPO_SAVE_MARGIN_S must be an integer >= 0 (seconds), got '$HOLDERPO_SAVE_MARGIN_S'"
  # ray.sub's GPUS_PER_NODE follows the allocation (it checks it against the partition's GRES).
  export GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-}
  [[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] ||
    hp_refuse "no GPUs in this allocation (SLURM_GPUS_ON_NODE='$GPUS_PER_NODE'); submit with --gpus-per-node=N"
  # Compute nodes are often offline and a container's root read-only (--no-container-mount-home): models come from
  # a pre-filled HF_HOME and every cache goes to a writable shared directory, mounted like the run directory.
  export HOLDERPO_DATA_DIR=${HOLDERPO_DATA_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/data}
  export HF_HOME=${HF_HOME:-$HOLDERPO_CACHE_DIR/huggingface} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
  export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOLDERPO_CACHE_DIR/xdg}
  export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$HOLDERPO_CACHE_DIR/triton}
  mkdir -p "$HF_HOME" "$XDG_CACHE_HOME" "$TRITON_CACHE_DIR"
  HP_MOUNT_PATHS+=("$HOLDERPO_RUN_DIR" "${SLURM_SUBMIT_DIR:-$PWD}" "$HF_HOME" "$XDG_CACHE_HOME" "$TRITON_CACHE_DIR"
    "$HOLDERPO_DATA_DIR")
  if [[ "$HOLDERPO_CONTAINER_IMAGE" != /* ]]; then
    hp_log "WARNING: every node pulls $HOLDERPO_CONTAINER_IMAGE from its registry on every attempt; import it once" \
      "to a .sqsh on shared disk (enroot import, docs/containers.md) and set HOLDERPO_CONTAINER_IMAGE to its path"
  fi
}

# hp_fetch_ray_sub: ray.sub and NeMo RL's package_info.py into the attempt directory, from $NEMO_RL_HOME (a NeMo RL
# checkout on shared disk) or else from the image itself; refuses a NeMo RL other than HP_NEMO_RL_VERSION.x. Sets
# HP_RAY_SUB and HP_CODE_ROOT (the holder_nemo that runs: the image's /opt/holder_nemo, or this checkout).
hp_fetch_ray_sub() {
  local dir=$HOLDERPO_LOG_DIR/nemo_rl_release head version image_code=""
  mkdir -p "$dir"
  if [[ -n "${NEMO_RL_HOME:-}" ]]; then
    hp_log "ray.sub from NEMO_RL_HOME=$NEMO_RL_HOME"
    cp "$NEMO_RL_HOME/ray.sub" "$NEMO_RL_HOME/nemo_rl/package_info.py" "$dir/" ||
      hp_refuse "NEMO_RL_HOME=$NEMO_RL_HOME is not a NeMo RL tree (ray.sub, nemo_rl/package_info.py)"
  else
    # On ray.sub's head node (its first node in sorted order) and under the name of its head container: pyxis then
    # reuses this container for the head step instead of importing the image a second time.
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sort | sed -n 1p)
    hp_log "ray.sub from the image: $HOLDERPO_CONTAINER_IMAGE:$HOLDERPO_NEMO_RL_IN_IMAGE (on $head)"
    # shellcheck disable=SC2016  # expanded by the step's bash
    srun --nodes=1 --ntasks=1 --nodelist="$head" --container-image="$HOLDERPO_CONTAINER_IMAGE" \
      --container-name=ray-head --container-mounts="$dir:$dir" --no-container-mount-home bash -c \
      'cp "$1/ray.sub" "$1/nemo_rl/package_info.py" "$2/" && if [[ -d /opt/holder_nemo/holder_nemo ]]; then
         echo /opt/holder_nemo >"$2/image_code"; fi' copy "$HOLDERPO_NEMO_RL_IN_IMAGE" "$dir" ||
      hp_refuse "could not copy $HOLDERPO_NEMO_RL_IN_IMAGE/ray.sub out of $HOLDERPO_CONTAINER_IMAGE" \
        "(set HOLDERPO_NEMO_RL_IN_IMAGE, or NEMO_RL_HOME to a NeMo RL checkout of the container's version)"
    [[ ! -s "$dir/image_code" ]] || image_code=$(<"$dir/image_code")
  fi
  version=$(sed -nE 's/^(MAJOR|MINOR|PATCH) *= *([0-9]+).*/\2/p' "$dir/package_info.py" | paste -sd.)
  if [[ "$version" != "$HP_NEMO_RL_VERSION".* ]]; then
    [[ "${HOLDERPO_ALLOW_ANY_NEMO_RL:-}" == 1 ]] ||
      hp_refuse "ray.sub is from NeMo RL '$version'; these entries run NeMo RL $HP_NEMO_RL_VERSION.x" \
        "(ray.sub must match the container). Set HOLDERPO_ALLOW_ANY_NEMO_RL=1 to try anyway"
    hp_log "WARNING: NeMo RL $version, not $HP_NEMO_RL_VERSION.x (HOLDERPO_ALLOW_ANY_NEMO_RL=1)"
  fi
  HP_RAY_SUB=$dir/ray.sub
  # The holder_nemo that runs: the image's own when it has one (its labels then describe the code), else this
  # checkout, mounted and put on PYTHONPATH.
  case "${HOLDERPO_CODE:-${image_code:+image}}" in
    image) HP_CODE_ROOT=${image_code:-/opt/holder_nemo} ;;
    checkout | "")
      HP_CODE_ROOT=$HOLDERPO_HOME
      HP_MOUNT_PATHS+=("$HOLDERPO_HOME")
      ;;
    *) hp_refuse "HOLDERPO_CODE must be image or checkout, got '$HOLDERPO_CODE'" ;;
  esac
  hp_log "NeMo RL $version ray.sub; holder_nemo from $HP_CODE_ROOT"
}

# hp_write_driver_script RECIPE [OVERRIDES...]: HOLDERPO_LOG_DIR/driver.sh, which ray.sub runs in the head container.
hp_write_driver_script() {
  local driver
  read -r -a driver <<<"$HOLDERPO_DRIVER"
  {
    echo "#!/bin/bash"
    echo "# NeMo RL driver for job $SLURM_JOB_ID attempt $HP_RESTART (generated by slurm/lib/nemo_rl.sh), run by ray.sub"
    echo "set -euo pipefail"
    echo "# Not the submit directory: 'python -m' would import a holder_nemo checkout found in the working directory."
    printf 'cd %q\n' "$HOLDERPO_LOG_DIR"
    if [[ "$HP_CODE_ROOT" == "$HOLDERPO_HOME" ]]; then
      echo "# Set where the driver starts: NeMo RL hands its environment to every Ray actor."
      # shellcheck disable=SC2016  # expanded when the script runs
      printf 'export PYTHONPATH=%q${PYTHONPATH:+:$PYTHONPATH}\n' "$HOLDERPO_HOME"
    fi
    printf 'exec'
    printf ' %q' "${driver[@]}" --config "$@"
    echo
  } >"$HOLDERPO_LOG_DIR/driver.sh"
}

# hp_poll (called by hp_run_driver while ray.sub runs): ray.sub writes ENDED when a worker step ends before the head;
# once the driver has started that means a lost Ray worker (Ray notices long before Slurm would): stop and requeue.
hp_poll() {
  [[ -z "$HP_STOP_REASON" && -e "$HP_RAY_LOG_DIR/ENDED" && -e "$HP_RAY_LOG_DIR/ray-driver.log" ]] || return 0
  hp_err "ray.sub wrote $HP_RAY_LOG_DIR/ENDED while the driver runs: a Ray worker step ended"
  hp_request_stop "lost Ray worker"
}

# hp_check_lost_worker (after ray.sub ended): the same finding when hp_poll could not see it in time. A node that
# really dies is noticed by Ray within seconds and by Slurm only after SlurmdTimeout, so the driver may crash before
# ray.sub sees the worker step end: Ray's own report in the driver's log, or a worker step that is gone (ray.sub
# leaves it running when the head ends normally), also count as a lost worker.
hp_check_lost_worker() {
  local steps
  hp_poll
  [[ -z "$HP_STOP_REASON" && -e "$HP_RAY_LOG_DIR/ray-driver.log" ]] || return 0
  ((HP_DRIVER_RC != 0 && HP_DRIVER_RC != HP_EXIT_STOPPED)) || return 0
  if grep -qE "$HP_RAY_NODE_DIED" "$HP_RAY_LOG_DIR/ray-driver.log"; then
    hp_err "the driver's log reports a dead Ray node ($HP_RAY_LOG_DIR/ray-driver.log)"
  else
    ((SLURM_JOB_NUM_NODES > 1)) && steps=$(squeue -h -s -j "$SLURM_JOB_ID" -o %i) || return 0
    ! grep -qE '^[0-9]+\.[0-9]+$' <<<"$steps" || return 0
    hp_err "no Ray worker step is left running: a worker ended with the head"
  fi
  HP_STOP_REASON="lost Ray worker"
}

# hp_run_nemo_rl RECIPE_NAME [OVERRIDES...]: the whole flow; never returns. RECIPE_NAME is a file of recipes/ in the
# holder_nemo that runs, unless HOLDERPO_RECIPE (a path inside the container) is set.
hp_run_nemo_rl() {
  local recipe_name=$1 end mount mounts="" overrides=()
  shift
  declare -A seen=()
  hp_init_attempt checkpoints
  hp_nemo_rl_settings
  hp_fetch_ray_sub
  # The driver's save-and-exit deadline: the allocation's real end minus HOLDERPO_SAVE_MARGIN_S (absolute clock,
  # holder_nemo.nemo_rl.stop); the container has no squeue, so the end time goes in SLURM_JOB_END_TIME. NeMo RL's
  # own timer is a backstop: it counts from the start of training, so it can only fire later.
  overrides=("cluster.num_nodes=$SLURM_JOB_NUM_NODES" "cluster.gpus_per_node=$GPUS_PER_NODE"
    "checkpointing.checkpoint_dir=$HP_CKPT_DIR" "logger.log_dir=$HOLDERPO_LOG_DIR/nemo_rl"
    "++logger.wandb.id=$WANDB_RUN_ID" "++logger.wandb.resume=allow")
  end=$(hp_job_end_epoch)
  if [[ -n "$end" ]]; then
    export SLURM_JOB_END_TIME=$end HOLDERPO_SLURM_SAVE_MARGIN_S=$HOLDERPO_SAVE_MARGIN_S
    overrides+=("++checkpointing.checkpoint_must_save_by=$(hp_dhms $((end - HOLDERPO_SAVE_MARGIN_S - $(date +%s))))")
  fi
  hp_write_driver_script "${HOLDERPO_RECIPE:-$HP_CODE_ROOT/recipes/$recipe_name}" "${overrides[@]}" "$@"

  # ray.sub's inputs (its other variables, ports included, pass through from the environment).
  for mount in "${HP_MOUNT_PATHS[@]}"; do
    [[ -d "$mount" && -z "${seen[$mount]:-}" ]] || continue
    seen[$mount]=1
    mounts+=${mounts:+,}$mount:$mount
  done
  export CONTAINER=$HOLDERPO_CONTAINER_IMAGE MOUNTS=$mounts${HOLDERPO_CONTAINER_MOUNTS:+,$HOLDERPO_CONTAINER_MOUNTS}
  export COMMAND="bash ${HOLDERPO_LOG_DIR@Q}/driver.sh" BASE_LOG_DIR=$HOLDERPO_LOG_DIR/ray
  export SLURM_JOB_ACCOUNT=${SLURM_JOB_ACCOUNT-}  # ray.sub reads it under `set -u`; unset without accounting
  HP_RAY_LOG_DIR=$BASE_LOG_DIR/$SLURM_JOB_ID${SLURM_RESTART_COUNT:+-$SLURM_RESTART_COUNT}-logs  # ray.sub's LOG_DIR
  ln -sfn "$HP_RAY_LOG_DIR/ray-driver.log" "$HOLDERPO_LOG_DIR/driver.log"
  hp_log "mounts: $MOUNTS"
  # ray.sub has no USR1 trap: started with USR1 ignored, so a stray one cannot kill it (the stop goes by the file).
  # shellcheck disable=SC2016  # $0 is for the inner bash
  hp_run_driver "$HOLDERPO_LOG_DIR/ray.sub.log" bash -c 'trap "" USR1; exec bash "$0"' "$HP_RAY_SUB"
  hp_check_lost_worker
  hp_finish
}
