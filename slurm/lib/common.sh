# shellcheck shell=bash
# Shared logic of the HölderPO sbatch entries (sourced, never executed): the run directory and its owner, per-attempt
# logs, the W&B run id, and the one rule that turns every way an attempt can end into the job's fate.
# The table of stop paths is in docs/slurm.md; the driver's side is the stop contract of `holderpo train` and
# `holder_nemo.nemo_rl.run_grpo` (stop file, SIGUSR1, SIGTERM -> checkpoint at the next step boundary, exit 75).
#
# The rule (hp_finish), applied when the driver (the srun step, or NeMo RL's ray.sub) has ended, first match wins:
#   exit 0                                   -> the job ends 0 (complete when the driver wrote its COMPLETED marker)
#   SIGTERM reached this shell               -> the job ends with the driver's code: a cancel stops, a preempting
#                                               Slurm requeues a --requeue job by itself
#   set-up failed (NeMo RL entries: the image did not start on every node, or Ray did not come up, before the driver
#   started)                                 -> requeue when the run has progressed before (a later attempt, or a
#                                               checkpoint exists) and fewer than HOLDERPO_SETUP_RETRIES such requeues
#                                               came in a row; else the job ends with the cause (a new run's first
#                                               set-up failing is a configuration error, not a transient one)
#   a lost Ray worker, or no progress (the progress watchdog: no step, validation or checkpoint completed for the
#   progress timeout)                        -> requeue unless the same fault already requeued this job and no newer
#                                               checkpoint completed since (then the job ends naming the node or the
#                                               stall: no loop); a lost node is excluded from the next attempt;
#                                               a requeue while a node of the job no longer answers Slurm: Slurm's
#                                               own node-failure requeue, awaited (hp_await_node_failure_requeue)
#   SIGUSR1 while Slurm preempts the job (`scontrol show job` has a PreemptTime: with a GraceTime and
#   PreemptParameters=send_user_signal, on 22.05 SlurmctldParameters=preempt_send_user_signal, Slurm sends the
#   job's --signal at preemption and the grace time lets the stop path run)
#                                            -> requeue, also past HOLDERPO_MAX_RESTARTS (Slurm would requeue a
#                                               preempted --requeue job itself; a preemption is no loop of ours)
#   another stop request (SIGUSR1 / time limit; also when the checkpoint then outlived HOLDERPO_CKPT_TIMEOUT_S and
#   the steps were cancelled), the driver exited 75 (its own deadline), or the newest complete checkpoint advanced
#   during this attempt                      -> requeue
#   anything else (a crash before any progress)       -> the job ends with the driver's exit code, no requeue
# "requeue" is `scontrol requeue` while restarts < HOLDERPO_MAX_RESTARTS (but for a preemption), else the job ends
# with the driver's code.

# Owner: holder_nemo/run_control.py (EXIT_STOPPED; 2: config/errors.py) - tests/nemo_rl_plugin/test_plugin_stop.py
HP_EXIT_STOPPED=75
HP_EXIT_REFUSED=2

hp_log() { printf '[holderpo][%s][+%ss] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SECONDS" "$*"; }
hp_err() { hp_log "ERROR: $*" >&2; }
hp_refuse() {
  hp_err "$*"
  exit "$HP_EXIT_REFUSED"
}

# hp_sanitize STRING: letters, digits, '-', '_' only (W&B run ids, file names).
hp_sanitize() { printf '%s' "$1" | tr -c 'A-Za-z0-9_-' '-'; }

# hp_job_end_epoch: Unix time at which this allocation ends; empty when unknown or unlimited.
hp_job_end_epoch() {
  local end=${SLURM_JOB_END_TIME:-}  # exported by Slurm >= 23.02
  if [[ -z "$end" ]]; then
    end=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null) || return 0
    case "${end%%$'\n'*}" in "" | N/A | Unknown | NONE | UNLIMITED | INVALID) return 0 ;; esac
    end=$(date -d "${end%%$'\n'*}" +%s 2>/dev/null) || return 0
  fi
  echo "$end"
}

# hp_dhms SECONDS: NeMo RL's DD:HH:MM:SS (negative -> 00:00:00:00).
hp_dhms() {
  local s=$(($1 < 0 ? 0 : $1))
  printf '%02d:%02d:%02d:%02d' $((s / 86400)) $((s % 86400 / 3600)) $((s % 3600 / 60)) $((s % 60))
}

# hp_newest_step: N of the newest complete checkpoint HP_CKPT_DIR/step_N (both drivers write step_N only by renaming
# a finished temporary directory), -1 when there is none.
hp_newest_step() {
  local dir newest=-1
  for dir in "$HP_CKPT_DIR"/step_*; do
    [[ -d "$dir" && "${dir##*/step_}" =~ ^[0-9]+$ ]] && ((10#${dir##*/step_} > newest)) && newest=$((10#${dir##*/step_}))
  done
  echo "$newest"
}

# ------------------------------------------------------------------------------------------------- attempt setup
# hp_init_attempt CHECKPOINT_SUBDIR: run-level variables, the run directory's owner check, the attempt's log
# directory. CHECKPOINT_SUBDIR ("" or "checkpoints") is where the driver writes step_N/ and COMPLETED, relative to the
# run directory. A finished run is the driver's to detect (it exits 0 at once), after it has checked that the recipe
# and overrides are the run's own: a resubmission that changes them must be refused, not reported complete.
hp_init_attempt() {
  : "${SLURM_JOB_ID:?submit this script with sbatch (SLURM_JOB_ID is not set)}"
  HP_RESTART=${SLURM_RESTART_COUNT:-0}
  HOLDERPO_RUNS_ROOT=${HOLDERPO_RUNS_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}/runs}
  HOLDERPO_RUN_DIR=${HOLDERPO_RUN_DIR:-$HOLDERPO_RUNS_ROOT/$(hp_sanitize "${SLURM_JOB_NAME:-holderpo}")-$SLURM_JOB_ID}
  HOLDERPO_MAX_RESTARTS=${HOLDERPO_MAX_RESTARTS:-20}
  HOLDERPO_CKPT_TIMEOUT_S=${HOLDERPO_CKPT_TIMEOUT_S:-240}
  [[ "$HOLDERPO_MAX_RESTARTS" =~ ^[0-9]+$ ]] ||
    hp_refuse "HOLDERPO_MAX_RESTARTS must be an integer >= 0, got '$HOLDERPO_MAX_RESTARTS'"
  [[ "$HOLDERPO_CKPT_TIMEOUT_S" =~ ^[1-9][0-9]*$ ]] ||
    hp_refuse "HOLDERPO_CKPT_TIMEOUT_S must be an integer >= 1 (seconds), got '$HOLDERPO_CKPT_TIMEOUT_S'"
  HOLDERPO_SETUP_RETRIES=${HOLDERPO_SETUP_RETRIES:-2}
  [[ "$HOLDERPO_SETUP_RETRIES" =~ ^[0-9]+$ ]] ||
    hp_refuse "HOLDERPO_SETUP_RETRIES must be an integer >= 0, got '$HOLDERPO_SETUP_RETRIES'"
  [[ "${HOLDERPO_EXCLUDE_LOST_NODE:-1}" =~ ^[01]$ ]] ||
    hp_refuse "HOLDERPO_EXCLUDE_LOST_NODE must be 0 or 1, got '$HOLDERPO_EXCLUDE_LOST_NODE'"
  HOLDERPO_SILENT_NODE_WAIT_S=${HOLDERPO_SILENT_NODE_WAIT_S:-15}
  [[ "$HOLDERPO_SILENT_NODE_WAIT_S" =~ ^[1-9][0-9]*$ ]] ||
    hp_refuse "HOLDERPO_SILENT_NODE_WAIT_S must be an integer >= 1 (seconds), got '$HOLDERPO_SILENT_NODE_WAIT_S'"
  HOLDERPO_PROGRESS_TIMEOUT_S=${HOLDERPO_PROGRESS_TIMEOUT_S:-}
  HOLDERPO_PROGRESS_POLL_S=${HOLDERPO_PROGRESS_POLL_S:-60}
  [[ -z "$HOLDERPO_PROGRESS_TIMEOUT_S" || "$HOLDERPO_PROGRESS_TIMEOUT_S" =~ ^([1-9][0-9]*|off)$ ]] ||
    hp_refuse "HOLDERPO_PROGRESS_TIMEOUT_S must be an integer >= 1 (seconds), 'off', or unset (the default from" \
      "the run's measured step time), got '$HOLDERPO_PROGRESS_TIMEOUT_S'"
  [[ "$HOLDERPO_PROGRESS_POLL_S" =~ ^[1-9][0-9]*$ ]] ||
    hp_refuse "HOLDERPO_PROGRESS_POLL_S must be an integer >= 1 (seconds), got '$HOLDERPO_PROGRESS_POLL_S'"
  mkdir -p "$HOLDERPO_RUN_DIR"
  HOLDERPO_RUN_DIR=$(cd "$HOLDERPO_RUN_DIR" && pwd)
  hp_claim_run_dir
  # One directory per attempt, <job>-<restart count>, holding the stop file: a stale request can never stop a later
  # attempt.
  HOLDERPO_LOG_DIR=$HOLDERPO_RUN_DIR/logs/$SLURM_JOB_ID-$HP_RESTART
  HOLDERPO_STOP_FILE=$HOLDERPO_LOG_DIR/STOP
  mkdir -p "$HOLDERPO_LOG_DIR"
  rm -f "$HOLDERPO_STOP_FILE"
  [[ -z "$HP_STOP_REASON" ]] || : >"$HOLDERPO_STOP_FILE"  # signalled during start-up
  HP_CKPT_DIR=$HOLDERPO_RUN_DIR${1:+/$1}
  # One progress record per run: the driver keeps the longest step interval an earlier attempt measured from it,
  # and the watchdog ignores a record older than this attempt (--since).
  HOLDERPO_PROGRESS_FILE=$HOLDERPO_RUN_DIR/progress.json
  HP_ATTEMPT_START=$(date +%s)
  export HOLDERPO_HOME HOLDERPO_RUN_DIR HOLDERPO_LOG_DIR HOLDERPO_STOP_FILE HOLDERPO_PROGRESS_FILE
  hp_setup_wandb
  hp_log "job $SLURM_JOB_ID attempt $HP_RESTART (restart limit $HOLDERPO_MAX_RESTARTS) on $(hostname)"
  hp_log "run dir $HOLDERPO_RUN_DIR; attempt logs $HOLDERPO_LOG_DIR"
  {
    printf 'job_id=%s\nrestart_count=%s\nhost=%s\nstart_utc=%s\n' "$SLURM_JOB_ID" "$HP_RESTART" "$(hostname)" \
      "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'allocation_end_epoch=%s\nnodes=%s\n' "$(hp_job_end_epoch)" "${SLURM_JOB_NODELIST:-}"
    printf 'wandb_run_id=%s\nwandb_mode=%s\n' "$WANDB_RUN_ID" "$WANDB_MODE"
    # The checkout that launched the job; what runs is recorded by the entry (hp_record_provenance).
    printf 'checkout=%s\ncheckout_git_sha=%s\n' "$HOLDERPO_HOME" \
      "$(git -C "$HOLDERPO_HOME" rev-parse HEAD 2>/dev/null || echo unknown)"
  } >"$HOLDERPO_LOG_DIR/attempt.env"
  # No writer can be running (this job owns the run directory): a temporary NeMo RL checkpoint left by a killed
  # save is garbage, and the next save of that step would otherwise write into it.
  local stale
  for stale in "$HP_CKPT_DIR"/tmp_step_*; do
    [[ -e "$stale" ]] || continue
    hp_log "removing $stale (a save that never completed)"
    rm -rf "$stale"
  done
  HP_START_STEP=$(hp_newest_step)
  hp_log "newest complete checkpoint at start: step $HP_START_STEP (-1: none)"
}

# hp_refuse_run_layout_overrides KEY=WHERE... -- OVERRIDES...: refuse a recipe override of a key the entry sets
# itself (each KEY=WHERE names the key and what the entry sets it to). The batch shell watches the checkpoint
# directory for progress and completion and mounts the run directory in the containers: an override passed after
# the entry's own value would win in the driver and silently split the run across two places.
hp_refuse_run_layout_overrides() {
  local -A owned=()
  local pair arg key
  while (($#)) && [[ "$1" != -- ]]; do
    pair=$1
    owned[${pair%%=*}]=${pair#*=}
    shift
  done
  shift || true
  for arg in "$@"; do
    key=${arg#\~}
    key=${key#++}
    key=${key#+}
    key=${key%%=*}
    [[ -n "${owned[$key]:-}" ]] || continue
    hp_refuse "override '$arg' refused: this entry sets $key to ${owned[$key]}, and the batch shell watches and" \
      "mounts that place; another value would split the run. Choose the run directory with HOLDERPO_RUN_DIR (or" \
      "HOLDERPO_RUNS_ROOT); the cluster shape follows the allocation (sbatch --nodes, --gres=gpu:N)"
  done
}

# hp_claim_run_dir: one live job per run directory. RUN_DIR/owner_job holds the owning job id (created with
# noclobber, so of two jobs starting together one wins). Another job may take over only once Slurm says the owner is
# no longer pending or running (its requeues keep the same id, so they pass). A query that fails (the controller
# unreachable or busy) says nothing about the owner: the directory is not handed over on it.
hp_claim_run_dir() {
  local owner_file=$HOLDERPO_RUN_DIR/owner_job owner state
  if (set -o noclobber && echo "$SLURM_JOB_ID" >"$owner_file") 2>/dev/null; then
    return 0
  fi
  owner=$(<"$owner_file")
  [[ "$owner" == "$SLURM_JOB_ID" ]] && return 0
  if ! state=$(hp_job_state "$owner"); then
    hp_refuse "cannot tell whether job $owner, which owns the run directory $HOLDERPO_RUN_DIR, still writes it:" \
      "squeue failed $HP_QUERY_TRIES times ($state). Not taking the directory over; resubmit when Slurm answers," \
      "or use another HOLDERPO_RUN_DIR"
  fi
  case "$state" in
    PENDING | RUNNING | SUSPENDED | CONFIGURING | COMPLETING | REQUEUE* | RESIZING | SIGNALING | STAGE_OUT | STOPPED)
      hp_refuse "run directory $HOLDERPO_RUN_DIR belongs to job $owner ($state); not starting a second writer." \
        "Wait for it or cancel it (scancel $owner), or use another HOLDERPO_RUN_DIR" ;;
  esac
  hp_log "taking over run directory from job $owner (${state:-gone})"
  echo "$SLURM_JOB_ID" >"$owner_file.$SLURM_JOB_ID" && mv -f "$owner_file.$SLURM_JOB_ID" "$owner_file"
}

HP_QUERY_TRIES=3     # squeue attempts before a query counts as failed
HP_QUERY_PAUSE_S=5   # seconds between them (a controller busy for a moment answers the next one)

# hp_job_state JOB: prints the job's state as `squeue -h -j JOB -o %T` reports it: "" once the job has ended (squeue
# prints nothing for a finished job it still holds, and fails with "Invalid job id specified" for one it has purged,
# after MinJobAge). Returns 1, printing squeue's last error, when every try failed any other way: that is no answer.
hp_job_state() {
  local out try
  for ((try = 1; try <= HP_QUERY_TRIES; try++)); do
    if out=$(squeue -h -j "$1" -o %T 2>&1); then
      grep -m1 -E '^[A-Z_]+$' <<<"$out" || true
      return 0
    fi
    if [[ "$out" == *"Invalid job id specified"* ]]; then
      return 0
    fi
    ((try == HP_QUERY_TRIES)) || sleep "$HP_QUERY_PAUSE_S"
  done
  printf '%s' "${out//$'\n'/ }"
  return 1
}

# hp_setup_wandb: one W&B run across every attempt: the id is chosen once per run directory (or taken from
# HOLDERPO_WANDB_RUN_ID) and kept in RUN_DIR/wandb_run_id; WANDB_RESUME=allow makes W&B append to it.
hp_setup_wandb() {
  local id_file=$HOLDERPO_RUN_DIR/wandb_run_id
  WANDB_RUN_ID=${HOLDERPO_WANDB_RUN_ID:-}
  [[ -n "$WANDB_RUN_ID" || ! -s "$id_file" ]] || WANDB_RUN_ID=$(<"$id_file")
  [[ -n "$WANDB_RUN_ID" ]] || WANDB_RUN_ID=$(hp_sanitize "${SLURM_JOB_NAME:-holderpo}-$SLURM_JOB_ID-$(date -u +%Y%m%d%H%M%S)")
  if [[ ! -s "$id_file" || "$(<"$id_file")" != "$WANDB_RUN_ID" ]]; then
    echo "$WANDB_RUN_ID" >"$id_file.tmp.$$" && mv -f "$id_file.tmp.$$" "$id_file"
  fi
  export WANDB_RUN_ID WANDB_RESUME=${WANDB_RESUME:-allow} WANDB_MODE=${WANDB_MODE:-offline}
  export WANDB_DIR=${WANDB_DIR:-$HOLDERPO_RUN_DIR}
}

# hp_record_result CODE WHY: the attempt's outcome, for humans, for the tests and for the rule of later attempts
# (cause: what ended it, as hp_finish classified it; newest_step: the newest complete checkpoint then; node: the lost
# node, when known).
hp_record_result() {
  printf 'exit_code=%s\nreason=%s\ncause=%s\nnewest_step=%s\nnode=%s\nend_utc=%s\n' "$1" "$2" "${HP_CAUSE:-}" \
    "${HP_NEWEST:-}" "${HP_LOST_NODE:-}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$HOLDERPO_LOG_DIR/result.env"
}

# hp_previous_results: the result.env of this job's earlier attempts, newest first (an attempt Slurm killed, e.g.
# preempted, left none: it is skipped).
hp_previous_results() {
  local n file
  for ((n = HP_RESTART - 1; n >= 0; n--)); do
    file=$HOLDERPO_RUN_DIR/logs/$SLURM_JOB_ID-$n/result.env
    [[ ! -r "$file" ]] || echo "$file"
  done
}

# hp_result_field FILE KEY: one field of a result.env.
hp_result_field() { sed -n "s/^$2=//p" "$1" | head -1; }

# ------------------------------------------------------------------------------------------------- signals
HP_STOP_REASON=""  # why a stop was requested: USR1, TERM, "lost Ray worker" or "no progress"
HP_SETUP_FAILED=""  # what failed before the driver started (NeMo RL entries), when it did
HP_LOST_NODE=""  # the node a lost Ray worker ran on, when known
HP_DRIVER_PID=""
HP_WATCHDOG_PID=""
HP_REQUEUED=0

# hp_request_stop WHY: ask the driver to checkpoint at its next step boundary (the stop file) and start the deadline.
hp_request_stop() {
  ((HP_REQUEUED)) && return 0  # `scontrol requeue` makes Slurm terminate this attempt: expected
  [[ -n "$HP_STOP_REASON" && "$1" != TERM ]] || HP_STOP_REASON=$1
  [[ -n "${HOLDERPO_STOP_FILE:-}" ]] || return 0  # before hp_init_attempt, which creates the stop file
  hp_log "stop requested ($1): the driver checkpoints at its next step boundary ($HOLDERPO_STOP_FILE)"
  : >"$HOLDERPO_STOP_FILE"
  hp_start_watchdog
}

# hp_start_watchdog: HOLDERPO_CKPT_TIMEOUT_S after the stop request, cancel the job's steps if the driver still runs.
# The driver has had its chance to checkpoint by then: hp_cancel_steps kills the steps' tasks at once (SIGKILL); the
# stop was requested, so the job is requeued and resumes from the newest complete checkpoint (a half-written one is
# never named step_N).
hp_start_watchdog() {
  [[ -n "$HP_DRIVER_PID" && -z "$HP_WATCHDOG_PID" ]] || return 0
  (
    trap 'kill "$!" 2>/dev/null; exit 0' TERM
    sleep "$HOLDERPO_CKPT_TIMEOUT_S" &
    wait "$!"
    # A stop that came during the set-up (image import, Ray bring-up, model load) finds no step of this attempt to
    # save: the newest complete checkpoint is all there is, and killing the set-up loses nothing else.
    if [[ "$(hp_progress_state)" == "not armed" ]]; then
      hp_log "driver still running ${HOLDERPO_CKPT_TIMEOUT_S}s after the stop request (HOLDERPO_CKPT_TIMEOUT_S)" \
        "without a completed step in this attempt (still setting up; nothing newer than checkpoint step" \
        "$(hp_newest_step) to save): cancelling the job's steps"
    else
      hp_err "driver still running ${HOLDERPO_CKPT_TIMEOUT_S}s after the stop request (HOLDERPO_CKPT_TIMEOUT_S):" \
        "cancelling the job's steps"
    fi
    hp_cancel_steps
  ) &
  HP_WATCHDOG_PID=$!
}

# hp_cancel_steps: `scancel JOB.STEP` for every running step of this job but the batch step. Without --signal,
# scancel asks slurmctld to kill a step with SIGKILL at once (src/scancel/scancel.c, _cancel_step_id: no signal given
# -> slurm_kill_job_step(job, step, SIGKILL)): no SIGTERM first and no KillWait, which apply to a whole job's end.
# Every caller wants exactly that: the driver already ignored its stop request, or it has ended and these are
# leftovers (ray.sub's worker step).
hp_cancel_steps() {
  local step
  for step in $(squeue -h -s -j "$SLURM_JOB_ID" -o %i 2>/dev/null); do
    [[ "$step" =~ ^[0-9]+\.[0-9]+$ ]] || continue
    hp_log "cancelling step $step"
    scancel "$step" 2>/dev/null || true  # it may have ended meanwhile
  done
  return 0
}

hp_install_traps() {
  unset HOLDERPO_STOP_FILE  # per attempt (hp_init_attempt), never inherited from the submitting shell
  trap 'hp_request_stop USR1' USR1
  trap 'hp_request_stop TERM' TERM
  trap 'hp_on_exit' EXIT
}

hp_on_exit() {
  local rc=$?
  trap - EXIT
  set +e
  [[ -z "$HP_WATCHDOG_PID" ]] || kill "$HP_WATCHDOG_PID" 2>/dev/null
  if [[ -n "$HP_DRIVER_PID" ]] && kill -0 "$HP_DRIVER_PID" 2>/dev/null; then
    hp_err "batch shell exiting while the driver runs; cancelling the job's steps"
    hp_cancel_steps
  fi
  hp_log "batch shell exiting with code $rc"
  exit "$rc"
}

# ------------------------------------------------------------------------------------------------- driver
# hp_run_driver LOG_FILE CMD [ARGS...]: run the driver in the background, so traps run at once, and wait for it,
# calling hp_poll (if an entry defines it) every few seconds; sets HP_DRIVER_RC.
hp_run_driver() {
  local log_file=$1
  shift
  hp_log "driver: $*"
  hp_log "driver log: $log_file"
  "$@" >"$log_file" 2>&1 &
  HP_DRIVER_PID=$!
  [[ -z "$HP_STOP_REASON" ]] || hp_start_watchdog  # a signal arrived during setup: the stop file exists already
  while kill -0 "$HP_DRIVER_PID" 2>/dev/null; do
    sleep 2 &
    wait "$!" 2>/dev/null || true  # a trapped signal ends this wait at once; its trap runs
    if declare -F hp_poll >/dev/null; then hp_poll; fi
    hp_check_progress
  done
  HP_DRIVER_RC=0
  wait "$HP_DRIVER_PID" || HP_DRIVER_RC=$?
  HP_DRIVER_PID=""
  if [[ -n "$HP_WATCHDOG_PID" ]]; then
    kill "$HP_WATCHDOG_PID" 2>/dev/null || true
    HP_WATCHDOG_PID=""
  fi
  hp_log "driver exited with code $HP_DRIVER_RC"
}

# hp_progress_check [ARGS...]: progress.py's check of this attempt's progress record (exit 0 progressing, 1 stalled,
# 3 not armed: no step completed by this attempt's driver); needs only the host's python3 and this checkout.
hp_progress_check() {
  python3 -I "$HOLDERPO_HOME/holder_nemo/nemo_rl/progress.py" check "$HOLDERPO_PROGRESS_FILE" \
    --since "$HP_ATTEMPT_START" "$@"
}

# hp_progress_state: "not armed" when this attempt's driver has completed no step yet, else "".
hp_progress_state() {
  local rc=0
  [[ -n "${HOLDERPO_PROGRESS_FILE:-}" ]] || return 0
  hp_progress_check >/dev/null 2>&1 || rc=$?
  ((rc != 3)) || echo "not armed"
}

# hp_check_progress (every HOLDERPO_PROGRESS_POLL_S while the driver runs): the progress watchdog. The driver rewrites
# HOLDERPO_PROGRESS_FILE at each completed step, validation and checkpoint (holder_nemo/nemo_rl/progress.py); once
# this attempt's driver has completed a step, no such event for the timeout (HOLDERPO_PROGRESS_TIMEOUT_S, else
# progress.py's default from the run's own measured step time) is a hang: request a stop (the driver checkpoints if
# it still can; HOLDERPO_CKPT_TIMEOUT_S later its steps are cancelled), and hp_finish requeues. The check needs only
# the host's python3 and this checkout's progress.py (standard library), not the container.
HP_NEXT_PROGRESS_CHECK=0
HP_PROGRESS_BLIND=0
HP_STALL=""
hp_check_progress() {
  local out rc=0
  [[ -z "$HP_STOP_REASON" && -n "${HOLDERPO_PROGRESS_FILE:-}" ]] || return 0
  [[ "${HOLDERPO_PROGRESS_TIMEOUT_S:-}" != off ]] || return 0
  ((SECONDS >= HP_NEXT_PROGRESS_CHECK)) || return 0
  HP_NEXT_PROGRESS_CHECK=$((SECONDS + HOLDERPO_PROGRESS_POLL_S))
  out=$(hp_progress_check ${HOLDERPO_PROGRESS_TIMEOUT_S:+--timeout "$HOLDERPO_PROGRESS_TIMEOUT_S"} 2>&1) || rc=$?
  case "$rc" in
    0 | 3) return 0 ;;  # progressing, or not armed yet (no step completed by this attempt's driver)
    1)
      HP_STALL=$out
      hp_err "progress watchdog: $out"
      hp_request_stop "no progress"
      ;;
    *)
      ((HP_PROGRESS_BLIND)) || hp_log "WARNING: the progress watchdog cannot run (python3 -I" \
        "$HOLDERPO_HOME/holder_nemo/nemo_rl/progress.py check, exit $rc): ${out//$'\n'/ }"
      HP_PROGRESS_BLIND=1
      ;;
  esac
}

# ------------------------------------------------------------------------------------------------- outcome
# hp_finish: the rule at the top of this file; never returns.
hp_finish() {
  local rc=$HP_DRIVER_RC why previous again broken exclude silent preempted=""
  hp_cancel_steps  # whatever still runs (ray.sub leaves its worker step behind when the head ends)
  HP_NEWEST=$(hp_newest_step)
  HP_CAUSE=""
  if ((rc == 0)); then
    HP_CAUSE=complete
    if [[ -e "$HP_CKPT_DIR/COMPLETED" ]]; then
      hp_log "run complete"
      hp_record_result 0 "complete"
    else
      hp_log "driver exited 0 without writing $HP_CKPT_DIR/COMPLETED (e.g. --dry-run): not complete, not requeued"
      hp_record_result 0 "exited 0, run not complete"
    fi
    exit 0
  fi
  if [[ "$HP_STOP_REASON" == TERM ]]; then
    HP_CAUSE=term
    hp_log "driver exited $rc after SIGTERM (cancel or preemption): not requeueing (a preempting Slurm requeues" \
      "--requeue jobs itself; newest checkpoint step $HP_NEWEST)"
    hp_record_result "$rc" "stopped by SIGTERM"
    exit "$rc"
  fi
  [[ "$HP_STOP_REASON" != USR1 ]] || preempted=$(hp_preempt_time)
  if [[ -n "$HP_SETUP_FAILED" ]]; then
    HP_CAUSE=setup
    why="set-up failed ($HP_SETUP_FAILED)"
    if ((HP_RESTART == 0 && HP_NEWEST < 0)); then
      hp_fail "$rc" "set-up failed" "$why on the first attempt of a new run: not retrying (an image, account or" \
        "node problem that a retry would meet again; see $HOLDERPO_LOG_DIR)"
    fi
    previous=$(hp_consecutive_causes setup)
    if ((previous >= HOLDERPO_SETUP_RETRIES)); then
      hp_fail "$rc" "set-up failed" "$why after $previous set-up retries in a row" \
        "(HOLDERPO_SETUP_RETRIES=$HOLDERPO_SETUP_RETRIES): not retrying again; see $HOLDERPO_LOG_DIR"
    fi
    why+="; the run had progressed before, so retrying ($((previous + 1)) of at most $HOLDERPO_SETUP_RETRIES in a row)"
  elif [[ "$HP_STOP_REASON" == "lost Ray worker" || "$HP_STOP_REASON" == "no progress" ]]; then
    if [[ "$HP_STOP_REASON" == "lost Ray worker" ]]; then
      HP_CAUSE=lost_worker again="lost Ray worker again, no progress"
      why="stop requested (lost Ray worker${HP_LOST_NODE:+ on $HP_LOST_NODE})"
    else
      HP_CAUSE=no_progress again="no progress again"
      why="stop requested (no progress: ${HP_STALL:-no step, validation or checkpoint completed in time})"
    fi
    previous=$(hp_last_fault_step "$HP_CAUSE")
    if [[ -n "$previous" ]] && ((HP_NEWEST <= previous)); then
      broken=${HP_LOST_NODE:+; node $HP_LOST_NODE looks broken (an admin can drain it: scontrol update}
      broken+=${HP_LOST_NODE:+ NodeName=$HP_LOST_NODE State=DRAIN Reason=...)}
      hp_fail "$rc" "$again" "$why, again: this job was requeued for the same fault at checkpoint step $previous" \
        "and no newer checkpoint completed since (newest: step $HP_NEWEST). Not requeueing into a loop$broken." \
        "Resume by hand once fixed: HOLDERPO_RUN_DIR=$HOLDERPO_RUN_DIR sbatch <same script and overrides>"
    fi
  elif [[ -n "$preempted" ]]; then
    HP_CAUSE=preempted
    why="stop requested (USR1: Slurm preempts this job, PreemptTime=$preempted)"
  elif [[ -n "$HP_STOP_REASON" ]]; then
    HP_CAUSE=stop
    why="stop requested ($HP_STOP_REASON)"
  elif ((rc == HP_EXIT_STOPPED)); then
    HP_CAUSE=stop
    why="driver checkpointed and stopped on its own (exit $rc)"
  elif ((HP_NEWEST > HP_START_STEP)); then
    HP_CAUSE=crash_after_progress
    why="driver exited $rc after progress (newest checkpoint step $HP_START_STEP -> $HP_NEWEST)"
  else
    HP_CAUSE=crash
    hp_fail "$rc" "driver failed" "driver failed with exit code $rc before any new checkpoint; not requeueing" \
      "(see $HOLDERPO_LOG_DIR)"
  fi
  if ((HP_RESTART >= HOLDERPO_MAX_RESTARTS)) && [[ "$HP_CAUSE" == preempted ]]; then
    hp_log "restart limit reached ($HP_RESTART requeues, HOLDERPO_MAX_RESTARTS=$HOLDERPO_MAX_RESTARTS), but a" \
      "preemption is requeued all the same, as Slurm would requeue it"
  elif ((HP_RESTART >= HOLDERPO_MAX_RESTARTS)); then
    hp_fail "$rc" "restart limit reached" "$why, but the restart limit is reached ($HP_RESTART requeues," \
      "HOLDERPO_MAX_RESTARTS=$HOLDERPO_MAX_RESTARTS). Resume by hand: HOLDERPO_RUN_DIR=$HOLDERPO_RUN_DIR sbatch" \
      "<same script and overrides>"
  fi
  # The node to keep the next attempt off, decided while this attempt still runs (see hp_exclusion_list).
  exclude=""
  [[ "$HP_CAUSE" != lost_worker || -z "$HP_LOST_NODE" ]] || exclude=$(hp_exclusion_list "$HP_LOST_NODE")
  # A node of the job that no longer answers Slurm (whatever the cause: the driver's error may not name it): Slurm's
  # own requeue, see hp_await_node_failure_requeue.
  silent=$(hp_silent_node)
  [[ -z "$silent" ]] || hp_await_node_failure_requeue "$rc" "$why" "$exclude" "$silent"
  hp_log "$why; newest checkpoint step $HP_NEWEST; requeueing job $SLURM_JOB_ID (restart $((HP_RESTART + 1)) of at" \
    "most $HOLDERPO_MAX_RESTARTS)"
  HP_REQUEUED=1
  hp_record_result "$rc" "requeued"
  # From the requeue on, Slurm ends this attempt: SIGTERM to every process of the batch step (the commands below
  # included), SIGKILL after KillWait. Ignored here (and so in the commands started from here), so that the one
  # update after the requeue is not killed half-way.
  trap '' TERM
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    HP_REQUEUED=0
    hp_err "scontrol requeue failed (is the job submitted with --requeue?); resume by hand:" \
      "HOLDERPO_RUN_DIR=$HOLDERPO_RUN_DIR sbatch <same script and overrides>"
    hp_record_result "$rc" "requeue failed"
    exit "$rc"
  fi
  # Slurm refuses ExcNodeList for a running job ("Job is no longer pending execution") and takes it once the requeue
  # made the job pending again (Slurm 22.05: at once, while the requeued job is still COMPLETING).
  if [[ -n "$exclude" ]]; then
    if scontrol update JobId="$SLURM_JOB_ID" ExcNodeList="$exclude"; then
      hp_log "the next attempt excludes $exclude (ExcNodeList)"
    else
      hp_log "WARNING: could not exclude $HP_LOST_NODE from the next attempt (scontrol update ExcNodeList failed)"
    fi
  fi
  exit 0
}

# hp_silent_node: the node of this job that no longer answers Slurm, "" when none: a step of the job still runs there
# HOLDERPO_SILENT_NODE_WAIT_S (15) seconds after hp_cancel_steps cancelled it. A live node's slurmd kills a cancelled
# step's tasks at once; a dead node (power, kernel, or its slurmd killed with the rest) keeps its steps listed until
# slurmctld marks it DOWN, SlurmdTimeout after it last answered.
hp_silent_node() {
  local deadline=$((SECONDS + ${HOLDERPO_SILENT_NODE_WAIT_S:-15})) step nodes listed
  while true; do
    listed=""
    while read -r step nodes; do
      [[ "$step" =~ ^[0-9]+\.[0-9]+$ && -n "$nodes" ]] || continue
      listed="$step $nodes"
    done < <(squeue -h -s -j "$SLURM_JOB_ID" -o "%i %N" 2>/dev/null)
    [[ -n "$listed" ]] || return 0
    if ((SECONDS >= deadline)); then
      # The step's node that is not this batch shell's own (which answers: this shell runs there).
      nodes=$(scontrol show hostnames "${listed#* }" 2>/dev/null | grep -vxF "${SLURMD_NODENAME:-}" | head -1)
      hp_log "step ${listed%% *} still runs on ${listed#* } ${HOLDERPO_SILENT_NODE_WAIT_S:-15}s after its cancel:" \
        "${nodes:-that node} does not answer Slurm" >&2
      echo "${nodes:-${listed#* }}"
      return 0
    fi
    sleep 1
  done
}

# hp_await_node_failure_requeue CODE WHY EXCLUDE NODE: the requeue of a job whose NODE no longer answers Slurm is
# Slurm's own. A job requeued by `scontrol requeue` while one of its nodes does not answer stays COMPLETING until
# slurmctld marks that node DOWN (SlurmdTimeout), and then (Slurm 22.05, measured on the local Slurm with a plain
# 2-node --gres=gpu:8 job) starts again WITHOUT its GPUs: no SLURM_GPUS_ON_NODE, every GPU step refused ("Invalid
# generic resource (gres) specification"), and a second requeue never started. Slurm's own requeue on the node's
# failure (the entries submit with --requeue) comes at the same moment, when it marks the node DOWN, and keeps the
# GPUs. So: record this attempt as requeued for the lost worker (the next attempt reads it, as after our requeue),
# and wait; Slurm's requeue ends this batch shell with SIGTERM, whose trap adds EXCLUDE to ExcNodeList (taken once
# the job is pending again). Should Slurm not requeue within SlurmdTimeout + 120 s (the node answered again, or no
# --requeue), return to hp_finish, which requeues as usual.
hp_await_node_failure_requeue() {
  local rc=$1 why=$2 exclude=$3 node=$4 timeout deadline
  if ! scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -qE '(^| )Requeue=1( |$)'; then
    return 0  # Slurm would end the job NODE_FAIL: requeue it ourselves (it may start without GPUs; see above)
  fi
  timeout=$(scontrol show config 2>/dev/null | sed -nE 's/^SlurmdTimeout *= *([0-9]+).*/\1/p')
  deadline=$((SECONDS + ${timeout:-300} + 120))
  hp_log "$why; newest checkpoint step $HP_NEWEST; $node does not answer Slurm, so Slurm requeues the job" \
    "itself when it marks it DOWN (SlurmdTimeout=${timeout:-?}s): a job requeued by scontrol before that restarts" \
    "without its GPUs (Slurm 22.05). Waiting for it"
  HP_REQUEUED=1
  hp_record_result "$rc" "requeued"
  # shellcheck disable=SC2064  # the list is fixed now
  trap "hp_exclude_after_node_failure '$exclude' '$node'" TERM
  while ((SECONDS < deadline)); do
    sleep 5 &
    wait "$!" 2>/dev/null || true  # Slurm's SIGTERM ends this wait at once; its trap runs
  done
  trap '' TERM
  hp_log "Slurm did not requeue the job within SlurmdTimeout + 120 s ($node answered again?): requeueing it"
  HP_REQUEUED=0
}

# hp_exclude_after_node_failure EXCLUDE NODE: the TERM trap while Slurm requeues the job for NODE's failure.
hp_exclude_after_node_failure() {
  trap '' TERM
  if [[ -n "$1" ]] && scontrol update JobId="$SLURM_JOB_ID" ExcNodeList="$1"; then
    hp_log "Slurm requeued the job for the failure of $2; the next attempt excludes $1 (ExcNodeList)"
  else
    hp_log "Slurm requeued the job for the failure of $2 (DOWN until it registers again or an admin resumes it)"
  fi
  exit 0
}

# hp_preempt_time: when Slurm selected this job for preemption (`scontrol show job`'s PreemptTime), "" when it has
# not (None) or the query failed. With PreemptParameters=send_user_signal (22.05: SlurmctldParameters=
# preempt_send_user_signal) a preemption reaches the batch shell as the job's own --signal (B:USR1), as the time
# limit's does: this tells the two apart.
hp_preempt_time() {
  local when
  when=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -oE '(^| )PreemptTime=[^ ]+' | head -1 | cut -d= -f2) ||
    when=""
  case "$when" in None | Unknown | "(null)") when="" ;; esac
  echo "$when"
}

# hp_fail CODE REASON MESSAGE...: end the job with CODE, no requeue; REASON goes to result.env.
hp_fail() {
  local rc=$1 reason=$2
  shift 2
  hp_err "$*"
  hp_record_result "$rc" "$reason"
  exit "$rc"
}

# hp_consecutive_causes CAUSE: how many of this job's directly preceding attempts were requeued for CAUSE.
hp_consecutive_causes() {
  local file count=0
  while read -r file; do
    [[ "$(hp_result_field "$file" cause)" == "$1" && "$(hp_result_field "$file" reason)" == requeued ]] || break
    count=$((count + 1))
  done < <(hp_previous_results)
  echo "$count"
}

# hp_last_fault_step CAUSE: the newest checkpoint step at this job's last requeue for CAUSE; "" when there was none.
hp_last_fault_step() {
  local file
  while read -r file; do
    if [[ "$(hp_result_field "$file" cause)" == "$1" && "$(hp_result_field "$file" reason)" == requeued ]]; then
      hp_result_field "$file" newest_step
      return 0
    fi
  done < <(hp_previous_results)
}

# hp_exclusion_list NODE: the ExcNodeList that keeps the requeued job off NODE as well as the nodes it already
# excludes; "" (with the reason logged) when it should not: HOLDERPO_EXCLUDE_LOST_NODE=0, or the partition could not
# hold the job without them (a job excluded from more nodes than it can spare pends for ever, Reason=BadConstraints).
hp_exclusion_list() {
  local node=$1 current list excluded total
  if [[ "${HOLDERPO_EXCLUDE_LOST_NODE:-1}" != 1 ]]; then
    hp_log "not excluding $node from the next attempt (HOLDERPO_EXCLUDE_LOST_NODE=$HOLDERPO_EXCLUDE_LOST_NODE)" >&2
    return 0
  fi
  current=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -oE '(^| )ExcNodeList=[^ ]*' | head -1 |
    cut -d= -f2) || current=""
  [[ "$current" != "(null)" ]] || current=""
  list=${current:+$current,}$node
  excluded=$(scontrol show hostnames "$list" 2>/dev/null | sort -u | wc -l) || excluded=0
  total=$(sinfo -h -N -p "${SLURM_JOB_PARTITION:-}" -o %N 2>/dev/null | sort -u | wc -l) || total=0
  if ((total - excluded < ${SLURM_JOB_NUM_NODES:-1})); then
    hp_log "not excluding $node from the next attempt: partition ${SLURM_JOB_PARTITION:-?} has $total node(s)," \
      "the job needs ${SLURM_JOB_NUM_NODES:-1} and would exclude $excluded (it could never start again)" >&2
    return 0
  fi
  echo "$list"
}
