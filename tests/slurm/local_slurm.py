"""A real, private Slurm cluster on loopback for the tests: munged + slurmctld + several slurmd, all in one temp dir.

Debian's slurm-wlm and munge binaries, nothing written outside the temp dir (every client reads ``SLURM_CONF``;
munged gets its own key and socket). Nodes, all on 127.0.0.1, one slurmd each (``slurmd -N``):

* ``hp-cpu1`` (partition ``cpu``, default): 8 CPUs (oversubscribes the host; ``SlurmdParameters=config_overrides``)
  for the real CPU smoke jobs; partition ``cpu-urgent`` holds the same node at a higher ``PriorityTier``, so a job
  there preempts (``PreemptType=preempt/partition_prio``, ``PreemptMode=REQUEUE``) like a real higher-priority job;
* ``hp-gpu[1-4]`` (partition ``gpu``): 64 CPUs and ``gpu:8`` each, backed by 8 fake character devices, so
  ``sbatch --test-only`` checks the GPU entries against the shape of 8-GPU nodes, and two of them carry a real
  2-node Ray cluster started by NeMo RL's ``ray.sub`` (``test_nemo_rl_entry.py``); partition ``gpu-urgent`` holds
  them at a higher ``PriorityTier``, as ``cpu-urgent`` does ``hp-cpu1``.

Preemption is Slurm's default (``GraceTime=0``, no ``SlurmctldParameters``: SIGTERM to every step and the batch
shell, SIGKILL after ``KillWait``) unless ``preemption=PreemptionSettings(...)`` configures it as docs/slurm.md asks
a cluster admin to (``test_preemption.py``, on a cluster of its own so that the other tests keep the default).

What makes one host behave like separate nodes (each said where it is done):

* every slurmd runs in its own mount namespace whose ``/tmp/ray`` is a private directory, so each "node" has its own
  Ray temp dir (``ray.sub`` deletes ``/tmp/ray/session_*`` before every ``ray start``; on one shared ``/tmp`` the
  worker would delete the head's session, and other users' Ray sessions on this machine);
* a step's processes are tracked by process group (``proctrack/pgid``; a real cluster uses cgroups, which five
  slurmd on one host cannot share): when a step's task exits, Slurm kills what it left behind in its group, such as
  ``ray.sub``'s sidecars and the Ray daemons of ``ray start --head`` (with ``proctrack/linuxproc`` they re-parent
  away from the step, keep its output open, and the step never ends). ``Epilog=`` then kills, on each node, every
  process still carrying the job's ``SLURM_JOB_ID`` (and this cluster's ``SLURM_CONF``) in its environment, as the
  end of a job's cgroup would;
* each node name resolves to its own loopback address, ``127.0.1.N`` (``NODE_IPS``), through ``/etc/hosts``
  (``ensure_node_names_resolve``: appended once, only for the tests that need it), so resolving them sends no DNS
  query off the machine and Ray registers each node under its own address.

With ``pyxis=PyxisSettings(...)`` (the container tier, ``tests/containers``) the cluster loads the real pyxis
SPANK plugin (``/usr/local/lib/slurm/spank_pyxis.so``, built from NVIDIA/pyxis v0.24.0 outside the repository;
docs/containers.md) and its GPU nodes are the ``PYXIS_NODES`` (``hpx-gpu1..4``, no CPU node). Several slurmd on one
host would share enroot's data directory and corrupt each other's containers, so each node gets its own pyxis
``runtime_path`` (``/run/pyxis-<node>``): one slurm.conf per node that differs only in ``PlugStackConfig``
(``DebugFlags=NO_CONF_HASH`` lets slurmctld accept them), and an enroot.conf drop-in (``ENROOT_DROPIN``) that derives
enroot's runtime, cache and data paths from the ``PYXIS_RUNTIME_PATH`` pyxis gives every enroot call (from the node
name in pyxis' epilog, which has no ``PYXIS_RUNTIME_PATH``). ``KillWait=30``: with 5 s, pyxis' removal of a
container is itself killed and leaks it.

``cred_expire=5`` (default 120 s): Slurm holds a requeued job until its old credentials expire, so requeued jobs
start again after a few seconds instead of two minutes, without touching the job.

The daemons run in the foreground as children of this process (so they are reaped and their pids are known) and
are always stopped by ``stop()``: running jobs are cancelled first, then slurmd, slurmctld, munged get SIGTERM, then
SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo")
GPU_NODES = ("hp-gpu1", "hp-gpu2", "hp-gpu3", "hp-gpu4")
CPU_NODE = "hp-cpu1"
# The container tier's clusters: other names, other runtime paths. Its main cluster holds the first three (a 2-node
# job there has a spare node to go to when one is lost); a second cluster at the same time takes the fourth.
PYXIS_NODES = ("hpx-gpu1", "hpx-gpu2", "hpx-gpu3", "hpx-gpu4")
# Each node's own address, all on loopback: Ray keeps an address other than 127.0.0.1 as the node's IP (it replaces
# 127.0.0.1 and localhost by the host's interface address), so two "nodes" get two distinct 127.0.x.y addresses.
NODE_IPS = {
    CPU_NODE: "127.0.1.10",
    **{node: f"127.0.1.{i}" for i, node in enumerate(GPU_NODES, start=1)},
    **{node: f"127.0.2.{i}" for i, node in enumerate(PYXIS_NODES, start=1)},
}
PYXIS_PLUGIN = Path("/usr/local/lib/slurm/spank_pyxis.so")
ENROOT_DROPIN = Path("/usr/local/etc/enroot/enroot.conf.d/90-holderpo-test-nodes.conf")
# enroot evaluates each value (eval echo): paths below the node's pyxis runtime_path when it is one of ours
# (/run/pyxis-hpx-*), else empty, which leaves enroot's defaults in place for everything else on this host.
ENROOT_DROPIN_TEXT = """# holder_nemo tests (tests/slurm/local_slurm.py): several slurmd "nodes" on one host,
# each with its own enroot state under its pyxis runtime_path. Empty (enroot's defaults) outside those test clusters.
""" + "".join(
    f"{var} $(p=${{PYXIS_RUNTIME_PATH:-${{SLURM_SCRIPT_CONTEXT:+/run/pyxis-${{SLURMD_NODENAME:-}}}}}}; "
    f'case "$p" in /run/pyxis-hpx-?*) echo "$p/{sub}" ;; esac)\n'
    for var, sub in (("ENROOT_RUNTIME_PATH", "runtime"), ("ENROOT_CACHE_PATH", "cache"), ("ENROOT_DATA_PATH", "data"))
)
HOSTS_FILE = Path("/etc/hosts")
PRIVATE_MOUNTS = ("unshare", "--mount", "--propagation", "private")  # a mount namespace of the node's own
HOSTS_MARK = "# holder_nemo tests/slurm/local_slurm.py: a local Slurm node"

EPILOG = """#!{python}
# Epilog of the test cluster (tests/slurm/local_slurm.py): what proctrack/cgroup does on a real cluster. Kill every
# process on this node still carrying this job's id and one of this cluster's SLURM_CONF in its environment.
import os, signal
want = {{b"SLURM_JOB_ID=" + os.environ["SLURM_JOB_ID"].encode(),
         b"SLURMD_NODENAME=" + os.environ.get("SLURMD_NODENAME", "").encode()}}
confs = {confs!r}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) in (os.getpid(), os.getppid()):
        continue
    try:
        with open(f"/proc/{{pid}}/environ", "rb") as fh:
            env = set(fh.read().split(b"\\0"))
        if want <= env and env & confs:
            os.kill(int(pid), signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
"""


@dataclass(frozen=True)
class PreemptionSettings:
    """Preemption as docs/slurm.md ("Preemption that checkpoints") asks a cluster admin to set it: the preemptable
    partitions ``cpu`` and ``gpu`` get ``GraceTime``, slurmctld ``SlurmctldParameters=preempt_send_user_signal``
    (``send_user_signal``), and ``KillWait`` its value (30 s as the docs ask, for pyxis' container removal)."""

    grace_time: int = 90
    send_user_signal: bool = True
    kill_wait: int = 30


@dataclass(frozen=True)
class PyxisSettings:
    """pyxis' plugstack options for a test cluster (``container_scope``: ``job`` or pyxis' default ``global``)."""

    container_scope: str = "job"

    def plugstack_line(self, node: str) -> str:
        options = [f"runtime_path={pyxis_runtime_path(node)}"]
        if self.container_scope != "global":  # global is pyxis' default: written as a site that never set it
            options.append(f"container_scope={self.container_scope}")
        return f"required {PYXIS_PLUGIN} {' '.join(options)}\n"


def pyxis_runtime_path(node: str) -> Path:
    return Path(f"/run/pyxis-{node}")


def missing_pyxis() -> str | None:
    """Why the pyxis clusters cannot run here (None when enroot and pyxis are installed)."""
    if shutil.which("enroot") is None or not PYXIS_PLUGIN.exists():
        return (f"enroot and/or pyxis not installed ({PYXIS_PLUGIN}); they are built from fetched sources "
                "(NVIDIA/enroot v4.1.2, NVIDIA/pyxis v0.24.0), see docs/containers.md")  # fmt: skip
    return None


def install_enroot_dropin() -> None:
    """Write ENROOT_DROPIN (idempotent; see its text)."""
    if not ENROOT_DROPIN.exists() or ENROOT_DROPIN.read_text() != ENROOT_DROPIN_TEXT:
        ENROOT_DROPIN.parent.mkdir(parents=True, exist_ok=True)
        ENROOT_DROPIN.write_text(ENROOT_DROPIN_TEXT)


def remove_pyxis_state(nodes: Sequence[str]) -> None:
    """Every container and image pyxis/enroot left under the nodes' runtime paths (unmounting what is mounted)."""
    for node in nodes:
        root = pyxis_runtime_path(node)
        if not root.exists():
            continue
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(f"{root}/")]  # fmt: skip
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def missing_binaries() -> list[str]:
    """Names of the Slurm / munge executables that are not installed."""
    found = []
    for name in DAEMONS + CLIENTS:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            found.append(name)
    return found


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns a truthy value; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class LocalSlurm:
    """Owns the temp dir, the config and the daemon processes."""

    def __init__(
        self,
        base: Path,
        pyxis: PyxisSettings | None = None,
        gpu_nodes: int | Sequence[str] | None = None,
        preemption: PreemptionSettings | None = None,
        slurmd_timeout: int | None = None,
    ) -> None:
        """``pyxis``: the container tier's cluster, no CPU node, its GPU nodes from ``PYXIS_NODES`` (``gpu_nodes``:
        how many, default 2, or which: two pyxis clusters at once must not share a node name, which keys the
        node's pyxis/enroot state); else the plain one (the CPU node and the first ``gpu_nodes`` of ``GPU_NODES``).
        ``preemption``: see ``PreemptionSettings`` (None: Slurm's default preemption). ``slurmd_timeout``: Slurm's
        ``SlurmdTimeout`` (None: its default, 300 s), how long slurmctld waits for a node that stopped answering
        before it marks it DOWN (``kill_node``)."""
        self.base = base
        self.slurmd_timeout = slurmd_timeout
        self.pyxis = pyxis
        self.preemption = preemption
        names = GPU_NODES if pyxis is None else PYXIS_NODES
        if gpu_nodes is None or isinstance(gpu_nodes, int):
            chosen = names[: gpu_nodes or (len(names) if pyxis is None else 2)]
        else:
            chosen = tuple(gpu_nodes)
            assert set(chosen) <= set(names), f"unknown node names {chosen}"
        self.gpu_nodes, self.cpu_nodes = chosen, (() if pyxis else (CPU_NODE,))
        self.nodes = (*self.cpu_nodes, *self.gpu_nodes)
        self.conf = base / "slurm.conf"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.private_ray_tmp = False  # set by start(): whether each node has its own /tmp/ray
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for var in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if var != "SLURM_CONF":  # a developer running the tests inside an allocation
                del self.env[var]

    # ------------------------------------------------------------------------------------------- set-up
    def _write_config(self) -> None:
        b = self.base
        for sub in ("munge", "state", "run", "log", "spool", "fakedev", "nodes"):
            (b / sub).mkdir(parents=True, exist_ok=True)
        for n in range(8):
            dev = b / "fakedev" / f"nvidia{n}"
            if not dev.exists():
                os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a char device with /dev/null's numbers
        ctld_port, cpu_port, *gpu_ports = _free_ports(2 + len(self.gpu_nodes))
        epilog = b / "epilog.py"
        confs = {f"SLURM_CONF={conf}".encode() for conf in self.confs()}
        epilog.write_text(EPILOG.format(python=sys.executable, confs=confs))
        epilog.chmod(0o755)
        gpus = ",".join(self.gpu_nodes)
        preempt = self.preemption
        grace = f" GraceTime={preempt.grace_time}" if preempt else ""
        kill_wait = preempt.kill_wait if preempt else 5 if self.pyxis is None else 30
        ctld_params = "SlurmctldParameters=preempt_send_user_signal\n" if preempt and preempt.send_user_signal else ""
        slurmd_timeout = f"SlurmdTimeout={self.slurmd_timeout}\n" if self.slurmd_timeout else ""
        cpu_lines = f"""NodeName={CPU_NODE} NodeHostname=localhost NodeAddr=127.0.0.1 Port={cpu_port} CPUs=8 \
RealMemory=8192 State=UNKNOWN
PartitionName=cpu Nodes={CPU_NODE} Default=YES MaxTime=INFINITE State=UP PriorityTier=1{grace}
PartitionName=cpu-urgent Nodes={CPU_NODE} MaxTime=INFINITE State=UP PriorityTier=2
"""
        pyxis_lines = ""
        if self.pyxis is not None:
            (b / "plugstack").mkdir(exist_ok=True)
            for node in self.gpu_nodes:
                (b / "plugstack" / f"{node}.conf").write_text(self.pyxis.plugstack_line(node))
            pyxis_lines = f"DebugFlags=NO_CONF_HASH\nPlugStackConfig={b}/plugstack/{self.gpu_nodes[0]}.conf\n"
        self.conf.write_text(
            f"""ClusterName={"holderpoci" if self.pyxis is None else "holderpx"}
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={b}/munge/munge.socket,cred_expire=5
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
GresTypes=gpu
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool/%n
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd-%n.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
SlurmctldPort={ctld_port}
ReturnToService=2
JobCompType=jobcomp/filetxt
JobCompLoc={b}/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
MinJobAge=600
KillWait={kill_wait}
Epilog={epilog}
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{ctld_params}{slurmd_timeout}DefMemPerCPU=256
{pyxis_lines}{cpu_lines if self.cpu_nodes else ""}NodeName={gpus} NodeHostname=localhost NodeAddr=127.0.0.1 \
Port=[{",".join(map(str, gpu_ports))}] CPUs=64 Sockets=2 CoresPerSocket=32 ThreadsPerCore=1 RealMemory=1000000 \
Gres=gpu:8 State=UNKNOWN
PartitionName=gpu Nodes={gpus} MaxTime=INFINITE State=UP PriorityTier=1{grace} {"" if self.cpu_nodes else "Default=YES"}
{"" if self.pyxis else f"PartitionName=gpu-urgent Nodes={gpus} MaxTime=INFINITE State=UP PriorityTier=2"}
"""
        )
        (b / "gres.conf").write_text(f"NodeName={gpus} Name=gpu File={b}/fakedev/nvidia[0-7]\n")
        if self.pyxis is not None:  # one slurm.conf per node, differing only in PlugStackConfig
            text = self.conf.read_text()
            for node in self.gpu_nodes:
                self.node_conf(node).write_text(
                    text.replace(f"PlugStackConfig={b}/plugstack/{self.gpu_nodes[0]}.conf",
                                 f"PlugStackConfig={b}/plugstack/{node}.conf")
                )  # fmt: skip

    def confs(self) -> list[Path]:
        """Every slurm.conf of this cluster (a job's processes carry their node's in SLURM_CONF)."""
        return [self.conf, *(self.node_conf(node) for node in self.gpu_nodes)]

    def node_conf(self, node: str) -> Path:
        """The slurm.conf this node's slurmd reads."""
        return self.conf if self.pyxis is None else self.base / f"slurm-{node}.conf"

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = open(self.base / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        self.procs.append((name, proc))

    def start(self) -> None:
        b = self.base
        b.mkdir(parents=True, exist_ok=True)
        b.chmod(0o755)  # munged wants its socket directory reachable
        self._write_config()
        key = b / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = b / "munge" / "munge.socket"
        self._spawn(
            "munged",
            [_binary("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--log-file={b}/munge/munged.log", f"--pid-file={b}/munge/munged.pid", f"--seed-file={b}/munge/seed"],
        )  # fmt: skip
        wait_until(sock.exists, 20, "munged's socket")
        self._spawn("slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        probe = [*PRIVATE_MOUNTS, "true"]
        self.private_ray_tmp = shutil.which("unshare") is not None and subprocess.run(probe).returncode == 0
        if self.pyxis is not None:
            install_enroot_dropin()
            remove_pyxis_state(self.gpu_nodes)
        for node in self.nodes:
            self._spawn(f"slurmd-{node}", self._slurmd_argv(node))
        wait_until(self._all_idle, 60, f"all nodes idle (logs in {b / 'log'})", interval=0.1)

    def _slurmd_argv(self, node: str) -> list[str]:
        slurmd = [_binary("slurmd"), "-D", "-f", str(self.node_conf(node)), "-N", node]
        if not self.private_ray_tmp:
            return slurmd
        # The node's own /tmp/ray: a bind mount in a mount namespace of its own (unshare and sh exec, so the pid
        # spawned is slurmd's, and every process of the node, slurmstepd and its tasks included, is in it).
        ray_tmp = self.base / "nodes" / node / "tmp-ray"
        ray_tmp.mkdir(parents=True, exist_ok=True)
        bind = 'mkdir -p /tmp/ray && mount --bind "$0" /tmp/ray && exec "$@"'
        return [*PRIVATE_MOUNTS, "--", "/bin/sh", "-c", bind, str(ray_tmp), *slurmd]

    # ------------------------------------------------------------------------------------------- node death
    def _slurmd(self, node: str) -> subprocess.Popen:
        found = [proc for name, proc in self.procs if name == f"slurmd-{node}"]
        assert len(found) == 1, f"no single slurmd of {node}: {self.procs}"
        return found[0]

    def node_pids(self, node: str) -> set[int]:
        """Every process of ``node`` on this host: its slurmd, the slurmstepd it started (they re-parent to init,
        so not found by descent) and all their tasks (ray.sub's step, raylet, Ray workers, ...). Found by the mount
        namespace that slurmd runs in (its private /tmp/ray): no process of another node, of another cluster or of
        the host shares it. Needs ``private_ray_tmp``."""
        assert self.private_ray_tmp, "the nodes share the host's mount namespace: a node's processes cannot be told"
        slurmd = self._slurmd(node)
        namespace = os.readlink(f"/proc/{slurmd.pid}/ns/mnt") if slurmd.poll() is None else None
        host = os.readlink("/proc/self/ns/mnt")
        if namespace is None or namespace == host:
            return set()
        pids = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/mnt") == namespace:
                    pids.add(int(pid))
        return pids

    def kill_node(self, node: str) -> int:
        """A node's death: SIGKILL every process of ``node`` (``node_pids``) at once, again until none is left (a
        dying raylet or slurmstepd may still fork), and reap its slurmd. Slurm hears nothing: slurmctld marks the
        node DOWN (Not responding) only ``SlurmdTimeout`` later. Returns how many processes were killed."""
        killed: set[int] = set()
        for _ in range(50):
            pids = self.node_pids(node) - {os.getpid()}
            if not pids:
                break
            # Stopped first, all of them, then killed: no process of the node sees another die and reports it (a
            # raylet would tell the GCS that its worker died), as on a node that loses power.
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in pids:
                    with suppress(ProcessLookupError):
                        os.kill(pid, sig)
            killed |= pids
            time.sleep(0.05)
        else:
            raise RuntimeError(f"processes of {node} keep appearing: {self.node_pids(node)}")
        self._slurmd(node).wait(timeout=30)
        return len(killed)

    def restart_node(self, node: str, timeout: float = 120) -> None:
        """Bring a node killed by ``kill_node`` back into service: a new slurmd (in a new mount namespace, with the
        node's own /tmp/ray), then ``scontrol update NodeName=... State=RESUME`` when Slurm had marked it DOWN or
        DRAIN, and wait until it is idle. Idempotent for a node that is up."""
        slurmd = self._slurmd(node)
        if slurmd.poll() is not None:
            self.procs = [(name, proc) for name, proc in self.procs if proc is not slurmd]
            self._spawn(f"slurmd-{node}", self._slurmd_argv(node))

        def idle() -> bool:
            state = self.run(["sinfo", "-h", "-n", node, "-o", "%T"], check=False).stdout.strip()
            if state.rstrip("*") in ("down", "drained", "draining", "fail"):
                self.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
            return state == "idle"

        wait_until(idle, timeout, f"{node} idle again (logs in {self.base / 'log'})", interval=0.5)

    def _all_idle(self) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                log = self.base / "log" / f"{name}.stdout"
                raise RuntimeError(f"{name} exited with {proc.returncode} during start-up: {log.read_text()[-2000:]}")
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False)
        if out.returncode:
            return False
        states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
        return set(states) == set(self.nodes) and set(states.values()) == {"idle"}

    # ------------------------------------------------------------------------------------------- teardown
    def stop(self, grace: float = 15.0) -> None:
        """Cancel every job, wait for them to end, stop the daemons (slurmd, slurmctld, munged); never raises."""
        with suppress(Exception):
            if any(name == "slurmctld" and proc.poll() is None for name, proc in self.procs):
                jobs = self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=15).stdout.split()
                if jobs:
                    self.run(["scancel", *jobs], check=False, timeout=15)
                    with suppress(TimeoutError):
                        wait_until(lambda: not self.running_jobs(), 30, "cancelled jobs to end", interval=0.5)
        order = {"slurmd": 0, "slurmctld": 1, "munged": 2}
        for _name, proc in sorted(self.procs, key=lambda item: order[item[0].split("-")[0]]):
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=grace)
        self.procs.clear()
        if self.pyxis is not None:
            remove_pyxis_state(self.gpu_nodes)

    def running_jobs(self) -> list[str]:
        out = self.run(["squeue", "-h", "-t", "RUNNING,COMPLETING,CONFIGURING", "-o", "%i"], check=False, timeout=15)
        return out.stdout.split()

    # ------------------------------------------------------------------------------------------- clients
    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a Slurm client against this cluster (stdout/stderr captured as text)."""
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env={**self.env, **(env or {})},
            cwd=cwd or self.base,
        )  # fmt: skip
        if check and proc.returncode:
            raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sbatch(self, script: Path, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
               options: Sequence[str] = (), cwd: Path | None = None) -> str:  # fmt: skip
        """Submit; returns the job id."""
        out = self.run(["sbatch", "--parsable", *options, str(script), *args], env=env, cwd=cwd)
        return out.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, Reason, ...)."""
        out = self.run(["scontrol", "-o", "show", "job", job_id])
        fields = {}
        for token in out.stdout.split():
            key, sep, value = token.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def wait_job(self, job_id: str, predicate: Callable[[dict[str, str]], bool], timeout: float, what: str) -> dict:
        return wait_until(lambda: (info := self.job(job_id)) and predicate(info) and info, timeout, what)


@contextmanager
def local_slurm(
    base: Path,
    pyxis: PyxisSettings | None = None,
    gpu_nodes: int | Sequence[str] | None = None,
    preemption: PreemptionSettings | None = None,
    slurmd_timeout: int | None = None,
) -> Iterator[LocalSlurm]:
    cluster = LocalSlurm(base, pyxis, gpu_nodes, preemption, slurmd_timeout)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def ensure_node_names_resolve() -> str | None:
    """Make every node name resolve to its own loopback address (``NODE_IPS``) through /etc/hosts, appending one
    marked line per missing name; None when done, else why it cannot be. Checked by reading the file, never by a
    lookup: a name missing there would go out as a DNS query."""
    try:
        text = HOSTS_FILE.read_text()
    except OSError as exc:
        return f"cannot read {HOSTS_FILE}: {exc}"
    listed: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            listed.setdefault(name, fields[0])  # the resolver takes the first line naming it
    wrong = {name: ip for name, ip in listed.items() if name in NODE_IPS and ip != NODE_IPS[name]}
    if wrong:
        return f"{HOSTS_FILE} maps {wrong}; the tests need {NODE_IPS} (remove those lines)"
    missing = [name for name in NODE_IPS if name not in listed]
    if not missing:
        return None
    lines = "".join(f"{NODE_IPS[name]} {name} {HOSTS_MARK}\n" for name in missing)
    try:
        with HOSTS_FILE.open("a") as fh:
            fh.write(("" if text.endswith("\n") else "\n") + lines)
    except OSError as exc:
        return f"node names {missing} do not resolve and {HOSTS_FILE} is not writable ({exc})"
    return None


def job_pids(cluster: LocalSlurm, job_id: str, node: str | None = None) -> set[int]:
    """Every process of this cluster's job ``job_id`` on this host (by its environment, as the Epilog finds them);
    with ``node``, only that node's (``SLURMD_NODENAME``, which Slurm gives every task, inside a container too)."""
    want = {f"SLURM_JOB_ID={job_id}".encode(), *([f"SLURMD_NODENAME={node}".encode()] if node else [])}
    confs = {f"SLURM_CONF={conf}".encode() for conf in cluster.confs()}
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = set(fh.read().split(b"\0"))
            if want <= env and env & confs:
                pids.add(int(pid))
        except OSError:
            continue
    return pids


def job_sockets(pids: set[int]) -> list[str]:
    """``ss`` lines of the TCP/UDP sockets (any state) owned by ``pids``."""
    out = subprocess.run(["ss", "-tunapH"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if any(int(p) in pids for p in _pids_in(line))]


def off_loopback(line: str) -> bool:
    """Whether an ``ss -tunapH`` line has a local or peer address that is neither loopback nor unset (``*``)."""
    fields = line.split()
    return not all(_loopback_or_unset(address) for address in fields[4:6])


def _loopback_or_unset(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").split("%", 1)[0].removeprefix("::ffff:")
    return host in ("*", "0.0.0.0", "::", "::1") or host.startswith("127.")


def _pids_in(line: str) -> list[str]:
    return [part.split(",", 1)[0] for part in line.split("pid=")[1:]]
