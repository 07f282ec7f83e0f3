# shellcheck shell=bash
# The NeMo RL entries (holderpo_7b.sh, holderpo_32b.sh, holderpo_alfworld.sh). NeMo RL's own ray.sub, of the
# container's NeMo RL version, brings Ray up in pyxis containers (head and workers retried, ports pinned), runs the
# driver inside the head container and exits with the driver's code. This file only prepares ray.sub's inputs and
# watches it; common.sh decides what the attempt's end means. Sourced after common.sh; see docs/slurm.md.

HP_NEMO_RL_VERSION=0.7  # major.minor of the ray.sub used; holder_nemo.nemo_rl.run_grpo checks the container's
HP_MOUNT_PATHS=()       # directories mounted at their own paths in every container (entries may add theirs)
HP_DATA_VARS=()         # variables naming the data directories the recipe reads [HOLDERPO_DATA_DIR]; entries set theirs
# What Ray writes when a node died under a task or an actor (Ray 2.x): how the driver's log names a lost node. The
# last is the GCS's own verdict, which the driver prints as "(raylet) The node with node id: ... and address:
# A.B.C.D and node name: ... has been marked dead because the detector has missed too many heartbeats from it"
# (Ray 2.60, seen on the local Slurm before a crash whose own error said only "its worker process has died").
HP_RAY_NODE_DIED='actor died because its node has died|node it was running on is dead|NodeDiedError'
HP_RAY_NODE_DIED+='|has been marked dead because the detector has missed too many heartbeats'
# What Ray 2.60 raises in the driver for a call to an actor it cannot connect to while the GCS has not declared the
# actor dead (hp_unreachable_actor_node): "ray.exceptions.ActorUnavailableError: The actor ... is unavailable: The
# actor is temporarily unavailable: RpcError: ... failed to connect to all addresses; last error: UNKNOWN:
# ipv4:A.B.C.D:PORT: Failed to connect to remote host: Connection refused" (the actor's own address).
HP_RAY_ACTOR_UNREACHABLE='ActorUnavailableError'

hp_nemo_rl_settings() {
  HOLDERPO_CONTAINER_IMAGE=${HOLDERPO_CONTAINER_IMAGE:-nvcr.io#nvidia/nemo-rl:v0.7.0}
  HOLDERPO_NEMO_RL_IN_IMAGE=${HOLDERPO_NEMO_RL_IN_IMAGE:-/opt/nemo-rl}
  HOLDERPO_DRIVER=${HOLDERPO_DRIVER:-python -m holder_nemo.nemo_rl.run_grpo}
  HOLDERPO_SAVE_MARGIN_S=${HOLDERPO_SAVE_MARGIN_S:-600}
  HOLDERPO_CACHE_DIR=${HOLDERPO_CACHE_DIR:-$HOLDERPO_RUNS_ROOT/cache}
  [[ "$HOLDERPO_SAVE_MARGIN_S" =~ ^[0-9]+$ ]] ||
    hp_refuse "HOLDERPO_SAVE_MARGIN_S must be an integer >= 0 (seconds), got '$HOLDERPO_SAVE_MARGIN_S'"
  # One GPU option, ray.sub's: it adds --gres=gpu:GPUS_PER_NODE to each of its steps, and every srun of the job also
  # reads SLURM_GPUS_PER_NODE back as --gpus-per-node, a combination Slurm >= 26.05 refuses at every step.
  if [[ -n "${SLURM_GPUS_PER_NODE:-}" ]]; then
    hp_refuse "the job was submitted with --gpus-per-node (SLURM_GPUS_PER_NODE=$SLURM_GPUS_PER_NODE): every srun" \
      "reads it back, and ray.sub adds --gres=gpu:N to its steps; Slurm >= 26.05 refuses the two together." \
      "Submit with --gres=gpu:$SLURM_GPUS_PER_NODE instead (the entries' header uses --gres)"
  fi
  # ray.sub's GPUS_PER_NODE follows the allocation (it checks it against the partition's GRES).
  export GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-}
  [[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] ||
    hp_refuse "no GPUs in this allocation (SLURM_GPUS_ON_NODE='$GPUS_PER_NODE'); submit with --gres=gpu:N"
  # Compute nodes are often offline and a container's root read-only (--no-container-mount-home): models come from
  # a pre-filled HF_HOME and every cache goes to a writable shared directory, mounted like the run directory.
  export HOLDERPO_DATA_DIR=${HOLDERPO_DATA_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/data}
  export HF_HOME=${HF_HOME:-$HOLDERPO_CACHE_DIR/huggingface} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
  export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$HOLDERPO_CACHE_DIR/xdg}
  export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$HOLDERPO_CACHE_DIR/triton}
  mkdir -p "$HF_HOME" "$XDG_CACHE_HOME" "$TRITON_CACHE_DIR"
  HP_MOUNT_PATHS+=("$HOLDERPO_RUN_DIR" "${SLURM_SUBMIT_DIR:-$PWD}" "$HF_HOME" "$XDG_CACHE_HOME" "$TRITON_CACHE_DIR"
    "$HOLDERPO_DATA_DIR")
  # A data directory that is not there would not be mounted, and the driver would fail only after the image import,
  # Ray bring-up and model load: refuse now (the recipe's own files are checked by the driver's strict pre-flight).
  local var
  ((${#HP_DATA_VARS[@]})) || HP_DATA_VARS=(HOLDERPO_DATA_DIR)
  for var in "${HP_DATA_VARS[@]}"; do
    [[ -d "${!var}" ]] || hp_refuse "$var=${!var}: no such directory on $(hostname) (the recipe reads its data" \
      "there, mounted into the containers): prepare it on shared disk (holderpo data prepare, docs/data.md) and" \
      "set $var to it"
  done
  if [[ "$HOLDERPO_CONTAINER_IMAGE" != /* ]]; then
    hp_log "WARNING: every node pulls $HOLDERPO_CONTAINER_IMAGE from its registry on every attempt; import it once" \
      "to a .sqsh on shared disk (enroot import, docs/containers.md) and set HOLDERPO_CONTAINER_IMAGE to its path"
  fi
}

# hp_find_pyxis_line: sets HP_PLUGSTACK (the cluster's SPANK plugstack, PlugStackConfig, or the file it includes
# that holds pyxis) and HP_PYXIS_LINE (pyxis' line there, "" when absent); returns 1 when it cannot be read.
hp_find_pyxis_line() {
  local file line pattern files
  HP_PYXIS_LINE=""
  HP_PLUGSTACK=$(scontrol show config 2>/dev/null | sed -n 's/^PlugStackConfig *= *//p')
  [[ -n "$HP_PLUGSTACK" && "$HP_PLUGSTACK" != "(null)" ]] ||
    HP_PLUGSTACK=$(dirname "${SLURM_CONF:-/etc/slurm/slurm.conf}")/plugstack.conf
  [[ -r "$HP_PLUGSTACK" ]] || return 1
  files=("$HP_PLUGSTACK")
  while read -r pattern; do  # `include GLOB` lines (relative to the plugstack's directory)
    [[ "$pattern" == /* ]] || pattern=$(dirname "$HP_PLUGSTACK")/$pattern
    for file in $pattern; do [[ -r "$file" ]] && files+=("$file"); done
  done < <(sed -nE 's/^[[:space:]]*include[[:space:]]+//p' "$HP_PLUGSTACK")
  for file in "${files[@]}"; do
    line=$(grep -E '^[[:space:]]*(required|optional)[[:space:]]+[^[:space:]]*spank_pyxis\.so' "$file" | tail -1) ||
      continue
    HP_PLUGSTACK=$file HP_PYXIS_LINE=$line
    return 0
  done
}

# hp_check_container_scope: ray.sub names its containers ray-head and ray-worker. With pyxis' default
# container_scope=global such a container outlives its job, and the next job on that node reuses it as is,
# ignoring --container-image: it would run the earlier job's image (and each leftover holds an unpacked image).
# container_scope=job (an admin setting) names them per job and removes them when the job ends.
hp_check_container_scope() {
  local scope
  if ! hp_find_pyxis_line; then
    hp_log "WARNING: cannot read the SPANK plugstack ($HP_PLUGSTACK) to check pyxis' container_scope; it must be" \
      "'job' (docs/slurm.md, first GPU run)"
    return 0
  fi
  if [[ -z "$HP_PYXIS_LINE" ]]; then
    hp_log "WARNING: no pyxis line in $HP_PLUGSTACK: cannot check pyxis' container_scope (it must be 'job')"
    return 0
  fi
  scope=$(grep -oE 'container_scope=[a-z]+' <<<"$HP_PYXIS_LINE" | tail -1) || true
  scope=${scope#container_scope=}
  if [[ "${scope:-global}" == job ]]; then
    hp_log "pyxis container_scope=job ($HP_PLUGSTACK): this job's containers are its own"
    return 0
  fi
  if [[ "${HOLDERPO_ALLOW_GLOBAL_CONTAINER_SCOPE:-}" == 1 ]]; then
    hp_log "WARNING: pyxis container_scope=${scope:-global} (HOLDERPO_ALLOW_GLOBAL_CONTAINER_SCOPE=1): a ray-head or" \
      "ray-worker container left on a node by an earlier job would be reused with its old image"
    return 0
  fi
  hp_refuse "pyxis runs with container_scope=${scope:-global} (${scope:+set}${scope:-the default} in $HP_PLUGSTACK:" \
    "'$HP_PYXIS_LINE'). ray.sub names its containers ray-head and ray-worker, so a container an earlier job left on" \
    "a node is reused as is and --container-image is ignored: this job could run another job's image. Ask the" \
    "cluster admin to add container_scope=job to that line (pyxis then removes each job's containers when it ends);" \
    "to run anyway on nodes you know hold no such container (enroot list), set HOLDERPO_ALLOW_GLOBAL_CONTAINER_SCOPE=1"
}

# hp_ray_head_node: the node ray.sub makes the head: it resolves every node to an address (host, then getent, then
# nslookup) and takes the first "name|address" line in `sort` order, under this same locale. A plain sort of the
# names differs when one name is a prefix of another (node1, node10 -> ray.sub picks node10).
hp_ray_head_node() {
  local node address pairs=()
  for node in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
    address=$(hp_node_address "$node")
    pairs+=("$node|${address:-$node}")
  done
  printf '%s\n' "${pairs[@]}" | sort | head -1 | cut -d'|' -f1
}

# hp_node_address NODE: the address ray.sub resolves NODE to, and so the one Ray registers the node under (host, then
# getent, then nslookup, as ray.sub does); "" when none answers.
hp_node_address() {
  local address
  address=$(host "$1" 2>/dev/null | awk '/has address/ { print $4 }' | head -1 || true)
  [[ -n "$address" ]] || address=$(getent hosts "$1" 2>/dev/null | awk '{ print $1 }' | head -1 || true)
  [[ -n "$address" ]] || address=$(nslookup "$1" 2>/dev/null | awk '/^Address: / { print $2 }' | head -1 || true)
  echo "$address"
}

# hp_prepare_containers: start the containers ray.sub will reuse, on every node at once (pyxis reuses a container
# of the same name within the job, so ray.sub's head and worker steps import nothing): the head's, named ray-head,
# also copies ray.sub and package_info.py out of the image (unless NEMO_RL_HOME gives them) and reports the
# holder_nemo the image carries; the workers', named ray-worker, only start. Sets HP_RAY_SUB, HP_CODE_ROOT and
# HP_IMAGE_CODE_* (the image's holder_nemo, if any); refuses a NeMo RL other than HP_NEMO_RL_VERSION.x.
hp_prepare_containers() {
  local dir=$HOLDERPO_LOG_DIR/nemo_rl_release head version copy="" worker_pid="" rc=0 workers sum_pid
  mkdir -p "$dir"
  head=$(hp_ray_head_node)
  if [[ -n "${NEMO_RL_HOME:-}" ]]; then
    hp_log "ray.sub from NEMO_RL_HOME=$NEMO_RL_HOME"
    cp "$NEMO_RL_HOME/ray.sub" "$NEMO_RL_HOME/nemo_rl/package_info.py" "$dir/" ||
      hp_refuse "NEMO_RL_HOME=$NEMO_RL_HOME is not a NeMo RL tree (ray.sub, nemo_rl/package_info.py)"
  else
    copy=$HOLDERPO_NEMO_RL_IN_IMAGE
    hp_log "ray.sub from the image: $HOLDERPO_CONTAINER_IMAGE:$HOLDERPO_NEMO_RL_IN_IMAGE"
  fi
  workers=$((SLURM_JOB_NUM_NODES - 1))
  # The image's checksum (provenance) while the nodes import it: the first time, reading a large image takes a while.
  hp_image_sha256 "$HOLDERPO_CONTAINER_IMAGE" >"$dir/image_sha256" &
  sum_pid=$!
  hp_log "starting the containers: ray-head on $head, ray-worker on the $workers other node(s), all at once"
  if ((workers > 0)); then
    srun --nodes="$workers" --ntasks="$workers" --ntasks-per-node=1 --exclude="$head" \
      --container-image="$HOLDERPO_CONTAINER_IMAGE" --container-name=ray-worker --no-container-mount-home true &
    worker_pid=$!
  fi
  # shellcheck disable=SC2016  # expanded by the step's bash
  srun --nodes=1 --ntasks=1 --nodelist="$head" --container-image="$HOLDERPO_CONTAINER_IMAGE" \
    --container-name=ray-head --container-mounts="$dir:$dir" --no-container-mount-home bash -c '
      set -e
      [[ -z "$1" ]] || cp "$1/ray.sub" "$1/nemo_rl/package_info.py" "$2/"
      if [[ -d /opt/holder_nemo/holder_nemo ]]; then
        version=$(sed -nE "s/^__version__ *= *\"([^\"]+)\".*/\1/p" /opt/holder_nemo/holder_nemo/__init__.py)
        printf "path=/opt/holder_nemo\nversion=%s\ngit_sha=%s\n" "$version" "${HOLDER_NEMO_GIT_SHA:-unknown}" \
          >"$2/image_holder_nemo.env"
      fi' prepare "$copy" "$dir" || rc=$?
  if [[ -n "$worker_pid" ]] && ! wait "$worker_pid"; then rc=1; fi
  wait "$sum_pid" || true
  if ((rc != 0)); then
    # A registry's rate limit or a full enroot disk fails here as a wrong image path does: hp_finish tells them apart
    # by whether the run has progressed before (set-up failed, bounded retry by requeue).
    hp_err "could not start $HOLDERPO_CONTAINER_IMAGE on every node${copy:+ or copy $copy/ray.sub out of it} (set" \
      "HOLDERPO_NEMO_RL_IN_IMAGE, or NEMO_RL_HOME to a NeMo RL checkout of the container's version)"
    HP_SETUP_FAILED="the image did not start on every node${copy:+, or ray.sub could not be copied out of it}"
    HP_DRIVER_RC=1
    hp_finish
  fi
  version=$(sed -nE 's/^(MAJOR|MINOR|PATCH) *= *([0-9]+).*/\2/p' "$dir/package_info.py" | paste -sd.)
  HP_NEMO_RL_FULL_VERSION=$version
  if [[ "$version" != "$HP_NEMO_RL_VERSION".* ]]; then
    [[ "${HOLDERPO_ALLOW_ANY_NEMO_RL:-}" == 1 ]] ||
      hp_refuse "ray.sub is from NeMo RL '$version'; these entries run NeMo RL $HP_NEMO_RL_VERSION.x" \
        "(ray.sub must match the container). Set HOLDERPO_ALLOW_ANY_NEMO_RL=1 to try anyway"
    hp_log "WARNING: NeMo RL $version, not $HP_NEMO_RL_VERSION.x (HOLDERPO_ALLOW_ANY_NEMO_RL=1)"
  fi
  HP_RAY_SUB=$dir/ray.sub
  # The holder_nemo that runs: the image's own when it has one (its labels then describe the code), whatever
  # NEMO_RL_HOME says about ray.sub; else this checkout, mounted and put on PYTHONPATH.
  HP_IMAGE_CODE=""
  [[ ! -s "$dir/image_holder_nemo.env" ]] || HP_IMAGE_CODE=$(sed -n 's/^path=//p' "$dir/image_holder_nemo.env")
  case "${HOLDERPO_CODE:-${HP_IMAGE_CODE:+image}}" in
    image)
      [[ -n "$HP_IMAGE_CODE" ]] || hp_refuse "HOLDERPO_CODE=image, but $HOLDERPO_CONTAINER_IMAGE has no /opt/holder_nemo"
      HP_CODE_ROOT=$HP_IMAGE_CODE
      ;;
    checkout | "")
      HP_CODE_ROOT=$HOLDERPO_HOME
      HP_MOUNT_PATHS+=("$HOLDERPO_HOME")
      ;;
    *) hp_refuse "HOLDERPO_CODE must be image or checkout, got '$HOLDERPO_CODE'" ;;
  esac
  hp_log "NeMo RL $version ray.sub; holder_nemo from $HP_CODE_ROOT"
}

# hp_image_sha256 IMAGE: sha256 of an image file, computed once per (path, size, mtime) and kept in
# HOLDERPO_CACHE_DIR/image_sha256; "" for a registry reference (its digest is the registry's: pin it with @sha256).
hp_image_sha256() {
  local image=$1 key sums=$HOLDERPO_CACHE_DIR/image_sha256 sum
  [[ -f "$image" ]] || return 0
  key="$(stat -c '%s %Y' "$image") $image"
  sum=""
  [[ ! -r "$sums" ]] || sum=$(awk -v k="$key" 'substr($0, 66) == k { s = $1 } END { print s }' "$sums")
  if [[ -z "$sum" ]]; then
    sum=$(sha256sum "$image" | cut -d' ' -f1)
    echo "$sum $key" >>"$sums"
  fi
  echo "$sum"
}

# hp_record_provenance: what actually runs, appended to the attempt's attempt.env: the image (path, size, sha256),
# NeMo RL's version and where ray.sub came from, and the holder_nemo that runs (its source, version and git SHA).
hp_record_provenance() {
  local dir=$HOLDERPO_LOG_DIR/nemo_rl_release version sha source ray_sub=image:$HOLDERPO_NEMO_RL_IN_IMAGE/ray.sub
  [[ -z "${NEMO_RL_HOME:-}" ]] || ray_sub=NEMO_RL_HOME:$NEMO_RL_HOME/ray.sub
  if [[ "$HP_CODE_ROOT" == "$HOLDERPO_HOME" ]]; then
    source="checkout:$HOLDERPO_HOME"
    version=$(sed -nE 's/^__version__ *= *"([^"]+)".*/\1/p' "$HOLDERPO_HOME/holder_nemo/__init__.py")
    sha=$(git -C "$HOLDERPO_HOME" rev-parse HEAD 2>/dev/null || echo unknown)
    [[ -z "$(git -C "$HOLDERPO_HOME" status --porcelain -- holder_nemo recipes 2>/dev/null)" ]] || sha+="+modified"
  else
    source="image:$HP_CODE_ROOT"
    version=$(sed -n 's/^version=//p' "$dir/image_holder_nemo.env")
    sha=$(sed -n 's/^git_sha=//p' "$dir/image_holder_nemo.env")
  fi
  {
    printf 'image=%s\n' "$HOLDERPO_CONTAINER_IMAGE"
    if [[ -f "$HOLDERPO_CONTAINER_IMAGE" ]]; then
      printf 'image_bytes=%s\nimage_sha256=%s\n' "$(stat -c %s "$HOLDERPO_CONTAINER_IMAGE")" \
        "$(cat "$dir/image_sha256" 2>/dev/null)"
    else
      printf 'image_sha256=unknown (a registry reference: pin it with @sha256:<digest>, or import it to a .sqsh)\n'
    fi
    printf 'nemo_rl_version=%s\nray_sub=%s\nray_sub_sha256=%s\n' "$HP_NEMO_RL_FULL_VERSION" "$ray_sub" \
      "$(sha256sum "$HP_RAY_SUB" | cut -d' ' -f1)"
    printf 'holder_nemo_source=%s\nholder_nemo_version=%s\nholder_nemo_git_sha=%s\n' "$source" "$version" "$sha"
  } >>"$HOLDERPO_LOG_DIR/attempt.env"
  hp_log "runs: holder_nemo $version ($source, git $sha) on $HOLDERPO_CONTAINER_IMAGE" \
    "$(sed -n 's/^image_sha256=/sha256 /p' "$HOLDERPO_LOG_DIR/attempt.env")"
}

# hp_report_wandb RECIPE OVERRIDES...: NeMo RL logs to W&B when logger.wandb_enabled is true; these entries default
# to WANDB_MODE=offline (compute nodes often have no internet), which W&B itself would only mention in the driver's
# log. Say it in the job log, with where the offline run is and how to upload it.
hp_report_wandb() {
  local recipe=$1 arg enabled=""
  shift
  [[ "${WANDB_MODE:-}" == offline ]] || return 0
  ! grep -qE '^[[:space:]]+wandb_enabled:[[:space:]]*true' "$recipe" 2>/dev/null || enabled="the recipe"
  for arg in "$@"; do
    case "$arg" in
      *logger.wandb_enabled=[Tt]rue | *logger.wandb_enabled=1) enabled="the override $arg" ;;
      *logger.wandb_enabled=*) enabled="" ;;
    esac
  done
  [[ -n "$enabled" ]] || return 0
  hp_log "WARNING: W&B is enabled ($enabled) but WANDB_MODE=offline (this entry's default): nothing is uploaded" \
    "while the job runs. Each attempt writes its offline run under $HOLDERPO_RUN_DIR/logs/<job>-<n>/nemo_rl/wandb/;" \
    "upload them, into the one W&B run $WANDB_RUN_ID, from a machine with internet access:" \
    "wandb sync $HOLDERPO_RUN_DIR/logs/*/nemo_rl/wandb/wandb/offline-run-*   (or export WANDB_MODE=online before" \
    "sbatch if the compute nodes reach W&B)"
}

# hp_ray_sub_account: ray.sub passes `-A $SLURM_JOB_ACCOUNT` unquoted to every srun. Empty (a cluster without
# accounting), srun would take the next argument, --container-name=ray-head, as the account and start the head in
# an unnamed container; give it the job's account as Slurm reports it ("(null)" without accounting, which srun
# accepts for a step of the job).
hp_ray_sub_account() {
  [[ -z "${SLURM_JOB_ACCOUNT:-}" ]] || return 0
  SLURM_JOB_ACCOUNT=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -oE '(^| )Account=[^ ]*' | head -1 |
    cut -d= -f2)
  export SLURM_JOB_ACCOUNT=${SLURM_JOB_ACCOUNT:-(null)}
  hp_log "SLURM_JOB_ACCOUNT was empty: ray.sub gets the job's account as Slurm reports it, '$SLURM_JOB_ACCOUNT'"
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

# hp_check_bring_up (after ray.sub ended): ray.sub failed before it started the driver (no ray-driver.log): a head or
# worker step that did not start, Ray that did not come up. A set-up failure for hp_finish, not a driver failure.
hp_check_bring_up() {
  [[ -z "$HP_STOP_REASON" && ! -e "$HP_RAY_LOG_DIR/ray-driver.log" ]] || return 0
  ((HP_DRIVER_RC != 0)) || return 0
  # shellcheck disable=SC2034  # read by hp_finish (common.sh)
  HP_SETUP_FAILED="Ray bring-up: ray.sub exited $HP_DRIVER_RC before it started the driver (ray.sub.log)"
}

# hp_node_of_address IP: the allocation's node that resolves to IP (as ray.sub resolves it), "" when none does.
hp_node_of_address() {
  local node
  for node in $(scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null); do
    if [[ "$(hp_node_address "$node")" == "$1" ]]; then
      echo "$node"
      return 0
    fi
  done
}

# hp_unreachable_actor_node: sets HP_UNREACHABLE_NODE to the node, other than ray.sub's head, whose actor the
# driver's last ActorUnavailableError could not connect to (its address ipv4:A.B.C.D:PORT); "" when there is none.
# Why that names a lost node: when a call to an actor fails on the network, Ray 2.60 waits for the GCS's word on the
# actor (timeout_ms_task_wait_for_death_info, 1 s) and raises ActorUnavailableError only if none came. An actor
# process that died on a live node is reported by that node's raylet at once (ActorDiedError, "its worker process
# has died"); nobody reports an actor whose raylet died with it, and the GCS declares such a node dead only after
# its health checks fail (15 s by default: "The actor died because its node has died"), by which time the driver has
# crashed on the error. So a connection refused at the actor's own address on another node, with no word from the
# GCS, is that node's Ray gone (node death, raylet crash). Not the head's: the driver runs there, and an actor there
# that refuses connections while its node lives is a crash of that actor. A misjudged crash costs one attempt: a
# lost worker requeues once without a newer checkpoint, then ends the job naming the node.
hp_unreachable_actor_node() {
  local ip
  HP_UNREACHABLE_NODE=""
  ip=$(grep -E "$HP_RAY_ACTOR_UNREACHABLE" "$HP_RAY_LOG_DIR/ray-driver.log" 2>/dev/null |
    grep -oE 'ipv4:[0-9]+(\.[0-9]+){3}:[0-9]+' | tail -1 | grep -oE '[0-9]+(\.[0-9]+){3}') || return 0
  HP_UNREACHABLE_NODE=$(hp_node_of_address "$ip")
  [[ "$HP_UNREACHABLE_NODE" != "$(hp_ray_head_node)" ]] || HP_UNREACHABLE_NODE=""
}

# hp_lost_node: sets HP_LOST_NODE to the node Ray reports dead in the driver's log ("ip: A.B.C.D" of an
# ActorDiedError, "Node IP: A.B.C.D" of a task's node, "and address: A.B.C.D" of the GCS's verdict; else the node whose actor an ActorUnavailableError could not
# reach, hp_unreachable_actor_node, as Ray 2.60 reports an actor on a node that just died), mapped to the
# allocation's node of that address. Without such a report, a 2-node job whose worker step ended (ENDED) lost its
# one worker node, the node that is not ray.sub's head. "" when neither tells (more nodes, or an address no node of
# the allocation resolves to).
hp_lost_node() {
  local ip address
  HP_LOST_NODE=""
  [[ -r "$HP_RAY_LOG_DIR/ray-driver.log" ]] || return 0
  ip=$(grep -oE '((^|[[:space:]])ip|Node IP|and address): [0-9]+(\.[0-9]+){3}' "$HP_RAY_LOG_DIR/ray-driver.log" |
    tail -1 |
    grep -oE '[0-9]+(\.[0-9]+){3}') || ip=""
  if [[ -n "$ip" ]]; then
    # shellcheck disable=SC2034  # read by hp_finish (common.sh)
    HP_LOST_NODE=$(hp_node_of_address "$ip")
    [[ -n "$HP_LOST_NODE" ]] || hp_log "Ray reports the node at $ip dead, which no node of the allocation resolves to"
    return 0
  fi
  hp_unreachable_actor_node
  if [[ -n "$HP_UNREACHABLE_NODE" ]]; then
    HP_LOST_NODE=$HP_UNREACHABLE_NODE
  elif ((SLURM_JOB_NUM_NODES == 2)) && [[ -e "$HP_RAY_LOG_DIR/ENDED" ]]; then
    address=$(hp_ray_head_node)
    HP_LOST_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | grep -vxF "$address" | head -1)
  fi
}

# hp_check_lost_worker (after ray.sub ended): the same finding when hp_poll could not see it in time. A node that
# really dies is noticed by Ray within seconds and by Slurm only after SlurmdTimeout (squeue still lists its step),
# so the driver may crash before ray.sub sees the worker step end. A crashed driver's log that reports a dead Ray
# node, or an actor on another node that Ray could not reach (hp_unreachable_actor_node: what Ray 2.60 raises in the
# first second of a node's death), or a worker step that is gone (ray.sub leaves it running when the head ends
# normally), also count as a lost worker.
hp_check_lost_worker() {
  local steps
  hp_poll
  [[ -z "$HP_STOP_REASON" && -e "$HP_RAY_LOG_DIR/ray-driver.log" ]] || return 0
  ((HP_DRIVER_RC != 0 && HP_DRIVER_RC != HP_EXIT_STOPPED)) || return 0
  if grep -qE "$HP_RAY_NODE_DIED" "$HP_RAY_LOG_DIR/ray-driver.log"; then
    hp_err "the driver's log reports a dead Ray node ($HP_RAY_LOG_DIR/ray-driver.log)"
  elif hp_unreachable_actor_node && [[ -n "$HP_UNREACHABLE_NODE" ]]; then
    hp_err "the driver crashed on an actor it could not reach on $HP_UNREACHABLE_NODE (Ray's ActorUnavailableError," \
      "before Ray or Slurm declared the node dead: $HP_RAY_LOG_DIR/ray-driver.log): that node's Ray is gone"
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
  hp_refuse_run_layout_overrides "checkpointing.checkpoint_dir=the run directory's checkpoints/ (HOLDERPO_RUN_DIR)" \
    "logger.log_dir=each attempt's logs/<job>-<n>/nemo_rl" "cluster.num_nodes=the allocation's node count" \
    "cluster.gpus_per_node=the allocation's GPUs per node" -- "$@"
  hp_init_attempt checkpoints
  hp_nemo_rl_settings
  hp_check_container_scope
  hp_prepare_containers
  hp_record_provenance
  # The driver's save-and-exit deadline: the allocation's real end minus HOLDERPO_SAVE_MARGIN_S (absolute clock,
  # holder_nemo.run_control); the container has no squeue, so the end time goes in SLURM_JOB_END_TIME. NeMo RL's
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
  hp_report_wandb "${HOLDERPO_RECIPE:-$HOLDERPO_HOME/recipes/$recipe_name}" "$@"

  # ray.sub's inputs (its other variables, ports included, pass through from the environment).
  for mount in "${HP_MOUNT_PATHS[@]}"; do
    [[ -d "$mount" && -z "${seen[$mount]:-}" ]] || continue
    seen[$mount]=1
    mounts+=${mounts:+,}$mount:$mount
  done
  export CONTAINER=$HOLDERPO_CONTAINER_IMAGE MOUNTS=$mounts${HOLDERPO_CONTAINER_MOUNTS:+,$HOLDERPO_CONTAINER_MOUNTS}
  export COMMAND="bash ${HOLDERPO_LOG_DIR@Q}/driver.sh" BASE_LOG_DIR=$HOLDERPO_LOG_DIR/ray
  hp_ray_sub_account
  HP_RAY_LOG_DIR=$BASE_LOG_DIR/$SLURM_JOB_ID${SLURM_RESTART_COUNT:+-$SLURM_RESTART_COUNT}-logs  # ray.sub's LOG_DIR
  ln -sfn "$HP_RAY_LOG_DIR/ray-driver.log" "$HOLDERPO_LOG_DIR/driver.log"
  hp_log "mounts: $MOUNTS"
  # ray.sub has no USR1 trap: started with USR1 ignored, so a stray one cannot kill it (the stop goes by the file).
  # shellcheck disable=SC2016  # $0 is for the inner bash
  hp_run_driver "$HOLDERPO_LOG_DIR/ray.sub.log" bash -c 'trap "" USR1; exec bash "$0"' "$HP_RAY_SUB"
  hp_classify_ray_sub_end
  hp_finish
}

# hp_check_step_signal (after ray.sub ended): a SIGUSR1 or SIGTERM sent to the job's steps and not to this batch
# shell (`scancel --signal=USR1|TERM <job>` without --batch; a preemption with GraceTime but without
# send_user_signal sends SIGTERM so) hits every process of ray.sub's head and worker steps at once: their
# bash (no trap: it dies, and with it, by process group, Ray's daemons and the driver, before any checkpoint), so
# ray.sub exits with the head's 128+signal (measured on the local Slurm: 138, 143, and then no worker step left).
# The signal keeps its meaning, as with --batch, but nothing was saved at the stop: USR1 requeues, SIGTERM ends the
# job (a preemption's SIGTERM, with a PreemptTime, requeues: the job would end otherwise, not be requeued by
# Slurm); the run resumes from the newest complete checkpoint. 143 is also what ray.sub's head sidecar makes of a
# lost worker (kill -TERM 0, a minute after ENDED): with ENDED, hp_poll has named that already.
hp_check_step_signal() {
  local signal
  [[ -z "$HP_STOP_REASON" && ! -e "$HP_RAY_LOG_DIR/ENDED" ]] || return 0
  case "$HP_DRIVER_RC" in
    138) signal=USR1 ;;
    143) signal=TERM ;;
    *) return 0 ;;
  esac
  hp_err "ray.sub's head step was killed by SIG$signal (exit $HP_DRIVER_RC): the signal went to the job's steps, not" \
    "to this batch shell (scancel --signal=$signal without --batch?), and ended Ray and the driver before it could" \
    "checkpoint; the run resumes from the newest complete checkpoint. Use scancel --batch for a stop that saves"
  HP_STOP_REASON=$signal
  [[ "$signal" != TERM || -z "$(hp_preempt_time)" ]] || HP_STOP_REASON=USR1
}

# hp_classify_ray_sub_end (after ray.sub ended): what hp_finish needs to know of it: a signal that reached the job's
# steps but not this shell, a lost Ray worker (and its node), or a set-up failure.
hp_classify_ray_sub_end() {
  hp_check_step_signal
  hp_check_lost_worker
  [[ "$HP_STOP_REASON" != "lost Ray worker" ]] || hp_lost_node
  hp_check_bring_up
}
