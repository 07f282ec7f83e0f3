"""What the NeMo RL entries decide before ray.sub brings Ray up, each rule a way a real cluster breaks them.

* One GPU option, ray.sub's ``--gres=gpu:N``: the entries' headers, a job submitted with ``--gpus-per-node`` refused
  (every srun reads ``SLURM_GPUS_PER_NODE`` back; Slurm >= 26.05 refuses it with ray.sub's ``--gres``; this cluster
  is 22.05, which does not: the rule is checked by ``stand_ins/srun``, which applies it as 26.05 does);
* ``SLURM_JOB_ACCOUNT`` empty (no accounting): ray.sub's unquoted ``-A $SLURM_JOB_ACCOUNT`` must not swallow
  ``--container-name=ray-head`` (``stand_ins/srun`` parses options as srun's getopt does and reports the name);
* ray.sub's head node (its ``name|ip`` sort), and the containers started on every node at once;
* pyxis' ``container_scope`` (global: a named container of an earlier job is reused with its old image);
* recipe overrides of what the entry sets itself (checkpoint and log directories, cluster shape) refused;
* W&B offline said in the job log, with how to sync; what runs recorded in ``attempt.env``.

The jobs here run the real entry on the local cluster with a stand-in NeMo RL tree whose ray.sub only records that
it ran (what ray.sub does with these inputs is ``test_nemo_rl_entry.py``, and under real pyxis
``tests/containers/test_pyxis_entries.py``); the rules without a cluster source ``slurm/lib`` with Slurm's clients
replaced by shell functions that record their calls.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from local_slurm import LocalSlurm
from slurm_runs import REPO, SLURM_DIR, read_env_file, wait_final

STAND_INS = Path(__file__).with_name("stand_ins")
NEMO_RL_TREE = os.environ.get("HOLDERPO_TEST_NEMO_RL_HOME")
GPU_ENTRIES = ("holderpo_7b.sh", "holderpo_32b.sh", "holderpo_alfworld.sh")


def stand_in_tree(tmp: Path) -> Path:
    """A NeMo RL 0.7.0 tree whose ray.sub records its inputs and exits 0."""
    tree = tmp / "nemo-rl"
    (tree / "nemo_rl").mkdir(parents=True, exist_ok=True)
    (tree / "nemo_rl" / "package_info.py").write_text("MAJOR = 0\nMINOR = 7\nPATCH = 0\n")
    (tree / "ray.sub").write_text(
        '#!/bin/bash\necho "stand-in ray.sub ran: account=[$SLURM_JOB_ACCOUNT] container=[$CONTAINER]"\n'
    )
    return tree


def ray_sub_ran(run_dir: Path) -> bool:
    return any("stand-in ray.sub ran" in log.read_text() for log in run_dir.glob("logs/*/ray.sub.log"))


def submit(cluster: LocalSlurm, tmp: Path, script: str, *overrides: str, options: tuple[str, ...] = (),
           **env: str) -> tuple[dict[str, str], str, Path]:  # fmt: skip
    """Run ``script`` to its end on the gpu partition (2 nodes) with the stand-in tree; (job info, job log, run)."""
    image = tmp / "image.sqsh"
    image.write_bytes(b"not really an image")
    run_dir = tmp / f"run-{len(list(tmp.glob('run-*')))}"
    env = {"PATH": f"{STAND_INS}:{os.environ['PATH']}", "HOLDERPO_TEST_REAL_SRUN": shutil.which("srun") or "srun",
           "HOLDERPO_CONTAINER_IMAGE": str(image), "NEMO_RL_HOME": str(stand_in_tree(tmp)),
           "HOLDERPO_RUN_DIR": str(run_dir), "HOLDERPO_CACHE_DIR": str(tmp / "cache"), "HOLDERPO_DATA_DIR": str(tmp),
           **env}  # fmt: skip
    partition = "--partition=cpu" if "smoke" in script else "--partition=gpu"
    opts = [partition, f"--output={tmp}/%x-%j.out", *(["--nodes=2"] if "smoke" not in script else []), *options]
    job = cluster.sbatch(SLURM_DIR / script, list(overrides), env=env, options=opts, cwd=tmp)
    info = wait_final(cluster, job)
    name = {
        "holderpo_7b.sh": "holderpo-7b",
        "holderpo_32b.sh": "holderpo-32b",
        "holderpo_alfworld.sh": "holderpo-alfworld",
    }.get(script, "holderpo-smoke-cpu")
    return info, (tmp / f"{name}-{job}.out").read_text(), run_dir


# ------------------------------------------------------------------------------------------------ GPU option


@pytest.mark.parametrize("script", GPU_ENTRIES)
def test_gpu_entries_ask_for_gpus_the_way_ray_sub_does(script: str) -> None:
    """ray.sub adds --gres=gpu:N to its steps; the header must use the same option (not --gpus-per-node, which
    every srun of the job reads back from SLURM_GPUS_PER_NODE: fatal together with --gres on Slurm >= 26.05)."""
    header = [line for line in (SLURM_DIR / script).read_text().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:8" in header, header
    assert not [line for line in header if re.search(r"--gpus(-per-node|-per-task|=| )", line)], header


def srun_stand_in(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``stand_ins/srun`` with a "real srun" that echoes the arguments it got."""
    return subprocess.run([str(STAND_INS / "srun"), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "HOLDERPO_TEST_REAL_SRUN": "/bin/echo", **env})  # fmt: skip


def test_srun_stand_in_parses_options_as_srun_does() -> None:
    # Slurm >= 26.05: --gpus-per-node (here from the environment, as srun reads it) and --gres=gpu are exclusive.
    both = srun_stand_in("--gres=gpu:8", "true", SLURM_GPUS_PER_NODE="8")
    assert both.returncode == 1 and "--gpus-per-node and --gres=gpu are mutually exclusive" in both.stderr
    assert srun_stand_in("--gres=gpu:8", "--nodes=1", "true").returncode == 0
    # getopt: -A takes the next word whatever it looks like, so an empty account swallows the container name.
    swallowed = srun_stand_in("-A", "--container-name=ray-head", "--nodes=1", "true")
    assert "account='--container-name=ray-head' container-name=<none>" in swallowed.stderr
    named = srun_stand_in("-A", "(null)", "--container-name=ray-head", "--container-image=/x.sqsh", "true")
    assert "account='(null)' container-name=ray-head dropped: --container-name=ray-head --container-image=/x" in (
        named.stderr
    )
    kept = srun_stand_in("-A", "a", "--container-name=ray-head", "--mpi=pmix", "true", HOLDERPO_TEST_SRUN_PYXIS="real")
    assert (
        "--container-name=ray-head" in kept.stdout
        and "pmix" not in kept.stdout
        and "dropped: --mpi=pmix" in (kept.stderr)
    )


@pytest.mark.slurm
def test_a_job_submitted_with_gpus_per_node_is_refused(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    info, out, run_dir = submit(slurm_cluster, tmp_path, "holderpo_7b.sh", options=("--gpus-per-node=8",))
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), out
    assert "submitted with --gpus-per-node (SLURM_GPUS_PER_NODE=8)" in out and "--gres=gpu:8 instead" in out
    assert not ray_sub_ran(run_dir)


# ------------------------------------------------------------------------------------------ data directory


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("script", "var"), [("holderpo_7b.sh", "HOLDERPO_DATA_DIR"), ("holderpo_alfworld.sh", "ALFWORLD_DATA")]
)
def test_a_missing_data_directory_is_refused_before_bring_up(
    slurm_cluster: LocalSlurm, tmp_path: Path, script: str, var: str
) -> None:
    """A data directory that is not there would not be mounted and the driver would fail only after the image import,
    Ray bring-up and model load (issue 23): the entry refuses it first, naming the variable."""
    missing = tmp_path / "no-such-data"
    info, out, run_dir = submit(slurm_cluster, tmp_path, script, **{var: str(missing)})
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), out
    assert f"{var}={missing}: no such directory" in out and f"set {var} to it" in out, out
    assert not ray_sub_ran(run_dir)
    # The ALFWorld entry reads only its games: a missing HOLDERPO_DATA_DIR does not stop it.
    if script == "holderpo_alfworld.sh":
        (tmp_path / "games").mkdir()
        info, out, run_dir = submit(slurm_cluster, tmp_path, script, ALFWORLD_DATA=str(tmp_path / "games"),
                                    HOLDERPO_DATA_DIR=str(missing))  # fmt: skip
        assert info["JobState"] == "COMPLETED" and ray_sub_ran(run_dir), out


# --------------------------------------------------------------------------------------- run layout overrides


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("script", "override", "owner"),
    [
        ("holderpo_7b.sh", "checkpointing.checkpoint_dir=/elsewhere/ckpt", "the run directory's checkpoints/"),
        ("holderpo_7b.sh", "logger.log_dir=/elsewhere/logs", "each attempt's logs/<job>-<n>/nemo_rl"),
        ("holderpo_32b.sh", "cluster.num_nodes=8", "the allocation's node count"),
        ("holderpo_7b.sh", "++cluster.gpus_per_node=4", "the allocation's GPUs per node"),
        ("holderpo_smoke_cpu.sh", "checkpointing.checkpoint_dir=/elsewhere", "the run directory"),
    ],
)
def test_overrides_of_what_the_entry_sets_are_refused(
    slurm_cluster: LocalSlurm, tmp_path: Path, script: str, override: str, owner: str
) -> None:
    """The batch shell watches RUN_DIR/checkpoints for progress and completion and mounts the run directory: an
    override after the entry's own value would win in the driver and split the run. Refused before anything runs."""
    info, out, run_dir = submit(slurm_cluster, tmp_path, script, "grpo.max_num_steps=2", override)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), out
    assert f"override '{override}' refused" in out and owner in out and "HOLDERPO_RUN_DIR" in out, out
    assert not (run_dir / "logs").exists()


# ------------------------------------------------------------------------------------- W&B and provenance


@pytest.mark.slurm
def test_wandb_offline_is_said_in_the_job_log_with_how_to_sync(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    info, out, run_dir = submit(slurm_cluster, tmp_path, "holderpo_7b.sh", "logger.wandb_enabled=true")
    assert info["JobState"] == "COMPLETED" and ray_sub_ran(run_dir), out
    line = next((line for line in out.splitlines() if "W&B is enabled" in line), out)
    assert "the override logger.wandb_enabled=true" in line and "WANDB_MODE=offline" in line
    assert f"wandb sync {run_dir}/logs/*/nemo_rl/wandb/wandb/offline-run-*" in line
    assert read_env_file(next((run_dir / "logs").iterdir()) / "attempt.env")["wandb_run_id"] in line
    # Not enabled: no warning.
    _, quiet, _ = submit(slurm_cluster, tmp_path, "holderpo_7b.sh", "logger.wandb_enabled=false")
    assert "W&B is enabled" not in quiet


@pytest.mark.slurm
def test_attempt_env_records_what_runs(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """The stock image case (no /opt/holder_nemo in the image): this checkout runs, and attempt.env says so, with the
    image file's checksum and the ray.sub used; the empty account ray.sub would get is replaced by the job's."""
    info, out, run_dir = submit(slurm_cluster, tmp_path, "holderpo_7b.sh")
    assert info["JobState"] == "COMPLETED", out
    env = read_env_file(next((run_dir / "logs").iterdir()) / "attempt.env")
    image = tmp_path / "image.sqsh"
    assert env["image"] == str(image) and env["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert env["holder_nemo_source"] == f"checkout:{REPO}" and env["holder_nemo_version"] == "0.1.0"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert env["holder_nemo_git_sha"].startswith(head.strip()) and env["nemo_rl_version"] == "0.7.0"
    tree = tmp_path / "nemo-rl"
    assert env["ray_sub"] == f"NEMO_RL_HOME:{tree}/ray.sub"
    assert env["ray_sub_sha256"] == hashlib.sha256((tree / "ray.sub").read_bytes()).hexdigest()
    ray_sub_log = (next((run_dir / "logs").iterdir()) / "ray.sub.log").read_text()
    assert f"stand-in ray.sub ran: account=[(null)] container=[{image}]" in ray_sub_log


# --------------------------------------------------------------------------- head node, containers, scope

LIB = r"""
set -euo pipefail
source "$HOLDERPO_HOME/slurm/lib/common.sh"
source "$HOLDERPO_HOME/slurm/lib/nemo_rl.sh"
"""
FAKE_CLIENTS = r"""
scontrol() {
  case "$*" in
    "show hostnames"*) printf '%s\n' $NODES ;;
    "show config") [[ -z "${PLUGSTACK:-}" ]] || echo "PlugStackConfig         = $PLUGSTACK" ;;
    "show job"*) echo "   UserId=root(0) GroupId=root(0) Account=(null) QOS=normal" ;;
  esac
}
getent() { [[ "$1" == hosts ]] && printf '10.0.0.%s %s\n' "${2##*[a-z]}" "$2"; }
host() { return 1; }
nslookup() { return 1; }
srun() {  # records each step's options and when it started and ended; the worker steps take a while
  local record="$*" t0
  t0=$(date +%s.%N)
  [[ "$record" == *ray-worker* ]] && sleep 1
  echo "$t0 $(date +%s.%N) $record" >>"$DIR/srun_calls"
}
"""


def run_lib(tmp: Path, body: str, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": "/usr/bin:/bin", "HOLDERPO_HOME": str(REPO), "DIR": str(tmp), **env}
    return subprocess.run(["bash", "-c", LIB + FAKE_CLIENTS + body], env=full, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def ray_sub_head(tree: Path, nodes: str) -> str:
    """ray.sub's own choice of head node: its lines from 'Sort nodes' to 'head_node=' of the fetched tree, run with
    the same stand-in name resolution."""
    text = (tree / "ray.sub").read_text()
    start = text.index("# Sort nodes alphabetically")
    snippet = text[start : text.index("head_node=${nodes_array[0]}", start)] + 'echo "${nodes_array[0]}"\n'
    body = f"nodes_array=({nodes}); ip_addresses_array=(); for n in {nodes}; do " \
           'ip_addresses_array+=("$(getent hosts $n | cut -d" " -f1)"); done\n' + snippet  # fmt: skip
    return run_lib(tree, body, NODES=nodes).stdout.strip().splitlines()[-1]


def test_head_node_is_ray_subs_and_every_node_starts_its_container_at_once(tmp_path: Path) -> None:
    """On nodes node1, node10, node2 ray.sub's head is node10 (it sorts 'name|ip'); the entry starts the ray-head
    container there and the ray-worker containers on the others in a step running at the same time, so no worker
    waits for the head's image import."""
    body = r"""
SLURM_JOB_ID=7 SLURM_JOB_NUM_NODES=3 SLURM_JOB_NODELIST=x HOLDERPO_LOG_DIR=$DIR HOLDERPO_CONTAINER_IMAGE=/img.sqsh
HOLDERPO_NEMO_RL_IN_IMAGE=/opt/nemo-rl NEMO_RL_HOME=$TREE
hp_ray_head_node
hp_prepare_containers
"""
    tree = stand_in_tree(tmp_path)
    proc = run_lib(tmp_path, body, NODES="node1 node10 node2", TREE=str(tree))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "node10"
    calls = [line.split(" ", 2) for line in (tmp_path / "srun_calls").read_text().splitlines()]
    (head,) = [c for c in calls if "--container-name=ray-head" in c[2]]
    (workers,) = [c for c in calls if "--container-name=ray-worker" in c[2]]
    assert "--nodelist=node10" in head[2] and "--container-image=/img.sqsh" in head[2]
    assert "--exclude=node10" in workers[2] and "--nodes=2" in workers[2] and "--ntasks-per-node=1" in workers[2]
    assert float(head[0]) < float(workers[1]) and float(workers[0]) < float(head[1]) + 0.5, calls  # overlapping
    if NEMO_RL_TREE and (Path(NEMO_RL_TREE) / "ray.sub").exists():
        assert ray_sub_head(Path(NEMO_RL_TREE), "node1 node10 node2") == "node10"


@pytest.mark.parametrize(
    ("line", "allow", "refused", "said"),
    [
        ("required /usr/local/lib/slurm/spank_pyxis.so container_scope=job", "", False, "container_scope=job"),
        ("required /usr/local/lib/slurm/spank_pyxis.so runtime_path=/run/pyxis", "", True, "the default"),
        ("optional spank_pyxis.so container_scope=global", "", True, "container_scope=global (set"),
        ("required /usr/local/lib/slurm/spank_pyxis.so", "1", False, "HOLDERPO_ALLOW_GLOBAL_CONTAINER_SCOPE=1"),
        ("", "", False, "no pyxis line in"),
    ],
)
def test_container_scope_is_checked_at_start(tmp_path: Path, line: str, allow: str, refused: bool, said: str) -> None:
    """pyxis' plugstack line (through an `include` of plugstack.conf.d, as sites write it) decides: container_scope
    =job passes; global, or pyxis' default, is refused with the line and the admin setting; the override warns."""
    (tmp_path / "plugstack.conf.d").mkdir()
    (tmp_path / "plugstack.conf").write_text(f"include {tmp_path}/plugstack.conf.d/*.conf\n")
    (tmp_path / "plugstack.conf.d" / "pyxis.conf").write_text(line + "\n")
    body = "SLURM_JOB_ID=7; hp_check_container_scope; echo passed"
    proc = run_lib(tmp_path, body, PLUGSTACK=str(tmp_path / "plugstack.conf"),
                   HOLDERPO_ALLOW_GLOBAL_CONTAINER_SCOPE=allow)  # fmt: skip
    assert (proc.returncode == 2) == refused and ("passed" in proc.stdout) != refused, proc.stdout + proc.stderr
    assert said in proc.stdout + proc.stderr
    if refused:
        assert "container_scope=job" in proc.stderr and "reused" in proc.stderr


def test_empty_account_becomes_the_jobs_own(tmp_path: Path) -> None:
    proc = run_lib(tmp_path, 'SLURM_JOB_ID=7 SLURM_JOB_ACCOUNT=""; hp_ray_sub_account; echo "[$SLURM_JOB_ACCOUNT]"')
    assert proc.stdout.splitlines()[-1] == "[(null)]", proc.stderr
    proc = run_lib(tmp_path, 'SLURM_JOB_ID=7 SLURM_JOB_ACCOUNT=proj; hp_ray_sub_account; echo "[$SLURM_JOB_ACCOUNT]"')
    assert proc.stdout.splitlines()[-1] == "[proj]"


# ------------------------------------------------------------------------------------------ README cluster flow


def readme_cluster_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## On a cluster", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


@pytest.mark.slurm
def test_readme_cluster_flow_evaluates_where_sbatch_puts_the_run(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """README's cluster flow: the data extra is installed before `holderpo data prepare`, and `holderpo eval` is
    shown the checkpoint path a default `sbatch slurm/holderpo_7b.sh` run uses (the entry's own run directory)."""
    lines = readme_cluster_block()
    prepare = next(i for i, line in enumerate(lines) if line.startswith("holderpo data prepare"))
    assert any(re.search(r"pip install .*\[[a-z,]*data[a-z,]*\]", line) for line in lines[:prepare]), lines
    eval_path = next(line.split()[2] for line in lines if line.startswith("holderpo eval"))
    info, out, _ = submit(slurm_cluster, tmp_path, "holderpo_7b.sh", HOLDERPO_RUN_DIR="")
    assert info["JobState"] == "COMPLETED", out
    job = info["JobId"]
    run_dir = Path(re.search(r"run dir (\S+);", out).group(1))
    assert run_dir == tmp_path / "runs" / f"holderpo-7b-{job}"
    assert (
        f"checkpointing.checkpoint_dir={run_dir}/checkpoints"
        in (run_dir / "logs" / f"{job}-0" / "driver.sh").read_text()
    )
    assert tmp_path / eval_path.replace("<jobid>", job) == run_dir / "checkpoints" / "step_500"


IMAGE_SRUN = r"""
srun() {  # a step "in the image": --container-image runs it in a mount namespace whose /opt is $IMAGE_OPT
  local args=() image=""
  for a in "$@"; do case "$a" in --container-image=*) image=1 ;; --*) ;; *) args+=("$a") ;; esac; done
  if [[ -n "$image" ]]; then
    unshare --mount --propagation private bash -c 'mount --bind "$IMAGE_OPT" /opt && exec "$@"' bash "${args[@]}"
  else
    "${args[@]}"
  fi
}
"""


@pytest.mark.parametrize("with_nemo_rl_home", [True, False], ids=["NEMO_RL_HOME", "ray.sub from the image"])
def test_the_images_holder_nemo_runs_whatever_nemo_rl_home_says(tmp_path: Path, with_nemo_rl_home: bool) -> None:
    """The derived image (it carries /opt/holder_nemo): its holder_nemo runs, also when NEMO_RL_HOME gives ray.sub
    (NEMO_RL_HOME only says where ray.sub comes from); the checkout is neither mounted nor put on PYTHONPATH, and
    attempt.env names the image's code. The "image" is a directory bound over /opt in the step's own mount
    namespace (the stub srun below), so the entry's own step script runs as it does in a container."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"]).returncode:
        pytest.skip("needs unshare --mount (root) to give a step its own /opt")
    opt = tmp_path / "image-opt"
    (opt / "holder_nemo" / "holder_nemo").mkdir(parents=True)
    (opt / "holder_nemo" / "holder_nemo" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    shutil.copytree(stand_in_tree(tmp_path), opt / "nemo-rl")
    body = r"""
SLURM_JOB_ID=7 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=x HOLDERPO_LOG_DIR=$DIR/attempt HP_RESTART=0
HOLDERPO_CONTAINER_IMAGE=/img.sqsh HOLDERPO_NEMO_RL_IN_IMAGE=/opt/nemo-rl HOLDERPO_DRIVER="python -m x"
HOLDER_NEMO_GIT_SHA=abc123 HOLDERPO_CACHE_DIR=$DIR/cache
mkdir -p "$HOLDERPO_LOG_DIR" "$HOLDERPO_CACHE_DIR"; : >"$HOLDERPO_LOG_DIR/attempt.env"
[[ -z "$NRH" ]] || NEMO_RL_HOME=$NRH
hp_prepare_containers
hp_record_provenance
hp_write_driver_script /opt/holder_nemo/recipes/r.yaml
echo "mounts=${HP_MOUNT_PATHS[*]}"
"""
    env = {"NODES": "n1", "IMAGE_OPT": str(opt), "NRH": str(tmp_path / "nemo-rl") if with_nemo_rl_home else "",
           "HOLDER_NEMO_GIT_SHA": "abc123"}  # fmt: skip
    proc = run_lib(tmp_path, IMAGE_SRUN + body, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    attempt = tmp_path / "attempt"
    provenance = read_env_file(attempt / "attempt.env")
    assert (provenance["holder_nemo_source"], provenance["holder_nemo_version"]) == ("image:/opt/holder_nemo", "9.9.9")
    assert provenance["holder_nemo_git_sha"] == "abc123"
    assert "PYTHONPATH" not in (attempt / "driver.sh").read_text()
    assert str(REPO) not in proc.stdout.split("mounts=")[-1]
