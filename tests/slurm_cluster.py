"""A real one-node Slurm cluster for the tests: munge, slurmctld and slurmd started from a temp folder
(as ``../shared/notes/slurm.md`` found works: Debian's slurm-wlm, as root, no cgroups), on free ports
and with a munge daemon and key of its own, so it never touches the machine's /etc/munge or another
cluster. Stopped by the pids its daemons wrote.

Without Slurm's programs (or without root) the tests that need it skip with one line saying how to
get them; with ``ZOO_SLURM_TESTS=require`` (CI) they fail instead.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE = "ZOO_SLURM_TESTS"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "scancel")
HOW = ("install Slurm and munge (apt-get install slurm-wlm munge) and run the tests as root: they start a one-node "
       "cluster of their own (tests/slurm_cluster.py)")


class ClusterError(RuntimeError):
    pass


@dataclass
class Cluster:
    folder: Path
    conf: Path
    partition: str = "debug"

    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60,
                              env={**os.environ, "SLURM_CONF": str(self.conf)})
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start(folder: Path) -> Cluster:
    """Write a one-node configuration into ``folder`` and start its daemons; returns once the node is idle."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "log", "munge"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    munge = folder / "munge"
    munge.chmod(0o711)
    (munge / "munge.key").write_bytes(os.urandom(1024))
    (munge / "munge.key").chmod(0o400)
    subprocess.run(["munged", "--force", f"--socket={munge / 'munge.sock'}", f"--key-file={munge / 'munge.key'}",
                    f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                    f"--seed-file={munge / 'munged.seed'}"], check=True, capture_output=True, timeout=30)
    conf = folder / "slurm.conf"
    conf.write_text(f"""ClusterName=zootest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge / 'munge.sock'}
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}
SlurmdLogFile={folder / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    cluster = Cluster(folder, conf)
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-f", str(conf)], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = cluster.run("sinfo", "-h", "-o", "%t", check=False).strip()
        if state == "idle":
            return cluster
        time.sleep(0.5)
    log = (folder / "log" / "slurmd.log")
    tail = log.read_text().splitlines()[-3:] if log.exists() else []
    raise ClusterError(f"the node did not become idle in 30 s (sinfo: {state!r}; slurmd.log: {' | '.join(tail)})")


def stop(cluster: Cluster) -> None:
    """Cancel what is left of the tests' jobs, then stop the daemons by their pids."""
    try:
        ids = cluster.run("squeue", "-h", "-o", "%A", check=False).split()
        if ids:
            cluster.run("scancel", *sorted(set(ids)), check=False)
    except (OSError, subprocess.SubprocessError):
        pass
    for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
        pid = _pid(cluster.folder / pidfile)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def unavailable() -> str | None:
    """Why this machine cannot start the cluster, or None."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    if os.geteuid() != 0:
        return "not root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The session's one-node cluster (``SLURM_CONF`` set for the session while it runs)."""
    required = os.environ.get(REQUIRE) == "require"
    why = unavailable()
    if why:
        (pytest.fail if required else pytest.skip)(f"Slurm tests: {why}; {HOW}")
    folder = tmp_path_factory.mktemp("slurm", numbered=True)
    try:
        cluster = start(folder)
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):  # whatever did start
            pid = _pid(folder / pidfile)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        (pytest.fail if required else pytest.skip)(f"Slurm tests: the cluster did not start ({exc}); {HOW}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        stop(cluster)
