"""``--launcher slurm``: a grid as one Slurm job array, submitted through submitit (as DINOv2 and MDETR do).

- Each job of the grid (``zoo.runs.job.Job``) is the argument of :class:`SlurmRun`, a submitit
  ``Checkpointable``: a job that Slurm preempts or times out is requeued with the same argument, and
  continues from its run's ``last.pt`` (the runner the command hands down, ``zoo.bench.run_serialised``,
  called with ``find_resume=True``).
- Jobs return their row; the submitting process is the only one that merges rows into ``--out``, so
  nothing depends on file locks over a shared filesystem. ``<out>/slurm/submitted.json`` remembers
  which Slurm job runs which run: running the same command again collects the finished rows, shows
  what is queued or running, and submits only what is missing (a job that left the queue without a
  row is submitted again). ``--detach`` submits and exits.
- A job with several tasks (``--slurm-tasks``, by default one per GPU) runs zoo's data parallelism
  across them, the process group from Slurm's environment (submitit's ``TorchDistributedEnvironment``);
  its row carries the world size, as a torchrun row does.
- Job states come from ``squeue`` (live jobs) and submitit's result files (finished ones), so they need no
  Slurm accounting (``sacct``), which small clusters often leave off.

Defaults for the ``--slurm-*`` options come from the ``[slurm]`` block of the user's config file
(:func:`config_path`), so a lab sets its partition, account and setup lines once.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import time
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import submitit
from rich.console import Console
from rich.markup import escape

from zoo.core.errors import one_line
from zoo.core.files import atomic_write_text
from zoo.runs.grid import failure_row, record_failure, to_run, last_error
from zoo.runs.job import Job
from zoo.runs.results import locked, write_results

#: the environment variable naming the user's config file, over the default path
CONFIG_ENV = "ZOO_CONFIG"
#: seconds between two looks at the queue while waiting
POLL_S = 2.0
#: how many times a job that reaches its time limit is requeued (preemptions do not count)
MAX_TIMEOUTS = 20
#: Slurm's time limit formats (sbatch --time)
TIME_FORMATS = "MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS, DAYS-HOURS:MINUTES or DAYS-HOURS:MINUTES:SECONDS"


def config_path() -> Path:
    """``$ZOO_CONFIG``, else ``$XDG_CONFIG_HOME/zoo/config.toml`` (``~/.config/zoo/config.toml``)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "zoo" / "config.toml"


@dataclass(frozen=True)
class SlurmSettings:
    """Where and how a grid's jobs run on Slurm: one field per ``--slurm-*`` flag and ``[slurm]`` config key."""

    partition: str | None = None  # None: the cluster's default partition
    time: str = "60"  # per job, in Slurm's format
    gpus: int = 0  # per job
    tasks: int | None = None  # processes per job (None: one per GPU, at least one)
    cpus: int = 1  # per task
    mem: str | None = None  # per job, e.g. 16G
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load, a venv's activation)
    parallel: int | None = None  # jobs of the array running at once (None: as many as Slurm allows)

    @property
    def minutes(self) -> int:
        return time_minutes(self.time)

    @property
    def processes(self) -> int:
        return self.tasks or max(self.gpus, 1)


HELP = {
    "partition": "the partition to submit to (default: the cluster's default)",
    "time": "each job's time limit, in Slurm's format (e.g. 90, 1:30:00, 1-00:00:00; default 60 minutes); a job "
            "that reaches it is requeued and continues from its last.pt",
    "gpus": "GPUs per job (default 0)",
    "tasks": "processes per job, each a rank of zoo's data parallelism (default: one per GPU, else 1)",
    "cpus": "CPU cores per process (default 1)",
    "mem": "memory per job (e.g. 16G; default: the partition's)",
    "account": "the account to charge",
    "qos": "the quality of service",
    "setup": "a shell line each job runs first, e.g. 'source ~/venvs/zoo/bin/activate' (repeatable)",
    "parallel": "at most N jobs of the grid's array run at once",
}


def add_options(p: argparse.ArgumentParser) -> None:
    """``--launcher``, ``--detach`` and one ``--slurm-*`` flag per :class:`SlurmSettings` field."""
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="where a grid's jobs run: local (subprocesses here, --jobs at once) or slurm (one job array "
                        f"through submitit; defaults for --slurm-* from the [slurm] block of {config_path()} or "
                        f"${CONFIG_ENV})")
    p.add_argument("--detach", action="store_true",
                   help="slurm: submit and exit; running the same command again collects the finished rows")
    for f in fields(SlurmSettings):
        flag = "--slurm-" + f.name
        if f.name == "setup":
            p.add_argument(flag, dest="slurm_setup", action="append", default=None, metavar="LINE", help=HELP[f.name])
        else:
            kind = int if f.name in ("gpus", "tasks", "cpus", "parallel") else str
            metavar = "N" if kind is int else {"time": "TIME", "mem": "SIZE"}.get(f.name, "NAME")
            p.add_argument(flag, dest="slurm_" + f.name, type=kind, default=None, metavar=metavar, help=HELP[f.name])


def time_minutes(value: str) -> int:
    """Minutes (rounded up) of a Slurm time limit; a value in another format is a one-line error."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not m:
        raise ValueError(f"--slurm-time {value!r} is not a Slurm time limit; valid: {TIME_FORMATS} "
                         "(e.g. 90, 1:30:00, 2-00:00:00)")
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # DAYS-HOURS[:MINUTES[:SECONDS]]
        hours, mins, secs = (parts + [0, 0])[:3]
        seconds = ((int(days) * 24 + hours) * 60 + mins) * 60 + secs
    elif len(parts) == 1:
        seconds = parts[0] * 60
    elif len(parts) == 2:  # MINUTES:SECONDS
        seconds = parts[0] * 60 + parts[1]
    else:
        seconds = (parts[0] * 60 + parts[1]) * 60 + parts[2]
    if seconds <= 0:
        raise ValueError(f"--slurm-time {value!r}: a time limit must be longer than 0")
    return math.ceil(seconds / 60)


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The ``[slurm]`` block of the user's config file ({} without one); unknown keys and wrong types are a
    one-line error naming the file."""
    path = path or config_path()
    if not path.is_file():
        if os.environ.get(CONFIG_ENV):
            raise ValueError(f"${CONFIG_ENV} names {path}, which is not a file")
        return {}
    try:
        block = tomllib.loads(path.read_text()).get("slurm", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as TOML ({exc})") from None
    valid = [f.name for f in fields(SlurmSettings)]
    if not isinstance(block, dict) or set(block) - set(valid):
        bad = sorted(set(block) - set(valid)) if isinstance(block, dict) else block
        raise ValueError(f"{path}: [slurm] has unknown key(s) {bad}; valid: {', '.join(valid)}")
    out = dict(block)
    if isinstance(out.get("setup"), str):
        out["setup"] = [out["setup"]]
    for k, v in out.items():
        ok = (isinstance(v, list) and all(isinstance(x, str) for x in v) if k == "setup" else
              isinstance(v, int) and not isinstance(v, bool) if k in ("gpus", "tasks", "cpus", "parallel") else
              isinstance(v, (str, int)) and not isinstance(v, bool))
        if not ok:
            raise ValueError(f"{path}: [slurm] {k} = {v!r} has the wrong type")
    if "setup" in out:
        out["setup"] = tuple(out["setup"])
    for key in ("time", "mem"):  # (TOML gives 90 or 16000 as numbers; Slurm reads them as text)
        if key in out:
            out[key] = str(out[key])
    return out


def settings(args: argparse.Namespace) -> SlurmSettings:
    """The command's Slurm settings: its flags over the config file's ``[slurm]`` block over the defaults,
    checked (format, ranges) before anything is planned or submitted."""
    s = replace(SlurmSettings(), **read_config())
    given = {f.name: getattr(args, "slurm_" + f.name) for f in fields(SlurmSettings)
             if getattr(args, "slurm_" + f.name, None) is not None}
    if "setup" in given:
        given["setup"] = tuple(given["setup"])
    s = replace(s, **given)
    s.minutes  # noqa: B018 - the time limit's format, checked now
    for name, lo in (("gpus", 0), ("tasks", 1), ("cpus", 1), ("parallel", 1)):
        v = getattr(s, name)
        if v is not None and v < lo:
            raise ValueError(f"--slurm-{name} must be an integer >= {lo}, got {v}")
    if s.mem is not None and not re.fullmatch(r"\d+[KMGT]?", str(s.mem)):
        raise ValueError(f"--slurm-mem {s.mem!r} is not a Slurm memory size; valid: a number of megabytes, or one "
                         "with a unit K, M, G or T (e.g. 16G)")
    return s


def _sinfo(*args: str) -> str:
    try:
        proc = subprocess.run(["sinfo", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ValueError("--launcher slurm: sinfo is not installed on this machine; submit from a machine of the "
                         "cluster (a login node), or run the grid here with --launcher local") from None
    except subprocess.TimeoutExpired:
        raise ValueError("--launcher slurm: sinfo did not answer within 60 s; is the Slurm controller up?") from None
    if proc.returncode != 0:
        # its last two lines say what failed (the lines above repeat the retries)
        lines = list(dict.fromkeys(ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()))
        said = "; ".join(lines[-2:]) or f"exit status {proc.returncode}"
        raise ValueError(f"--launcher slurm: cannot reach Slurm: sinfo says {said!r}")
    return proc.stdout


def check_cluster(s: SlurmSettings) -> None:
    """The cluster answers, has the partition, and the partition has GPUs when jobs ask for them: each a
    one-line error before anything is submitted."""
    parts = [p.strip() for p in _sinfo("-h", "-o", "%P").split()]
    names = [p.rstrip("*") for p in parts]
    default = next((p.rstrip("*") for p in parts if p.endswith("*")), None)
    if s.partition is not None and s.partition not in names:
        raise ValueError(f"--slurm-partition {s.partition!r}: no such partition; valid: {', '.join(names)} (sinfo)")
    partition = s.partition or default
    if partition is None:
        raise ValueError(f"--launcher slurm: the cluster has no default partition; give --slurm-partition (one of "
                         f"{', '.join(names)})")
    if s.gpus:
        gres = {g.strip() for g in _sinfo("-h", "-p", partition, "-o", "%G").split()}
        if not any("gpu" in g for g in gres):
            raise ValueError(f"--slurm-gpus {s.gpus}: partition {partition!r} has no GPUs (its nodes' GRES: "
                             f"{', '.join(sorted(gres)) or 'none'}); leave --slurm-gpus out or give a partition with "
                             "GPUs")


#: what runs one job in a Slurm job: ``runner(job, err, write=False, find_resume=True)`` returns its row on rank 0
#: (``zoo.bench.run_serialised``, what ``--job FILE`` runs). The command hands it down, as the local launcher runs
#: ``python -m zoo.bench --job FILE``: this layer never imports the entry point above it.
Runner = Callable[..., "dict[str, Any] | None"]


class SlurmRun(submitit.helpers.Checkpointable):
    """What a Slurm job runs: ``runner`` on one serialised job (``Job.to_dict()``); returns its row on rank 0.
    Checkpointable: preempted or timed out, submitit requeues it with the same job, which finds its run's last.pt
    when it starts again. ``runner`` is pickled by reference (a module-level function), so the job imports it."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def __call__(self, job: dict[str, Any]) -> dict[str, Any] | None:
        if submitit.JobEnvironment().num_tasks > 1:
            # the process group from Slurm's environment; every process sees all of the job's GPUs (zoo picks
            # LOCAL_RANK's), so CUDA_VISIBLE_DEVICES is left as Slurm set it
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return self.runner(Job.from_dict(job), Console(stderr=True, soft_wrap=True), write=False, find_resume=True)


class Book:
    """``<out>/slurm/submitted.json``: which Slurm job (and submitit folder) runs which run of ``out``."""

    def __init__(self, out: Path) -> None:
        self.path = out / "slurm" / "submitted.json"
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.entries = {}
        except ValueError:
            raise ValueError(f"{self.path} is not a zoo Slurm record; move it away (its jobs are then submitted "
                             "again)") from None

    @staticmethod
    def name(job: Job) -> str:
        return json.dumps(list(job.key), default=str)

    def get(self, job: Job) -> dict[str, Any] | None:
        return self.entries.get(self.name(job))

    def put(self, job: Job, entry: dict[str, Any] | None) -> None:
        if entry is None:
            self.entries.pop(self.name(job), None)
        else:
            self.entries[self.name(job)] = entry

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.entries, indent=1))


def queue_states() -> dict[str, str] | None:
    """Each live job's (and array task's) state, from ``squeue``: PENDING, RUNNING, ...; None when the
    controller does not answer (for a moment: no job is judged lost from that)."""
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    return dict(line.split("|", 1) for line in proc.stdout.split() if "|" in line)


def _slurm_job(entry: dict[str, Any]) -> Any:
    return submitit.SlurmJob(folder=entry["folder"], job_id=entry["job_id"], tasks=(0,))


def _finished(entry: dict[str, Any]) -> bool:
    return _slurm_job(entry).paths.result_pickle.exists()


def _collect(job: Job, entry: dict[str, Any], out: Path, header: str, console: Console) -> str:
    """Merge a finished Slurm job's row (or its failure's) into ``out``; returns done or failed."""
    sj = _slurm_job(entry)
    where = {"launcher": "slurm", "slurm_job": entry["job_id"], "log": str(sj.paths.stderr)}
    try:
        row = sj.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as exc:
        record_failure(out, {**failure_row(job, "failed", last_error(str(exc)), sj.paths.stderr), **where},
                       header)
        console.print(f"[red]failed[/] {escape(job.label)}: {escape(last_error(str(exc)))} (log {sj.paths.stderr})")
        return "failed"
    write_results(out, [{**row, **where}], header)
    console.print(f"done {escape(job.label)} (Slurm job {entry['job_id']})")
    return "done"


def run_grid(jobs: list[Job], out: Path, s: SlurmSettings, header: str, console: Console, runner: Runner,
             detach: bool = False) -> int:
    """Run ``jobs`` as a Slurm job array, each by ``runner`` (:data:`Runner`): collect what finished, submit what is
    missing, then wait for the rest (unless ``detach``). Returns how many jobs are still queued or running."""
    out = out.resolve()  # the jobs run in another working directory
    todo = to_run(jobs, out, console)
    if not todo:
        return 0
    counts = {"done": 0, "failed": 0}
    with locked(out):  # (this machine's lock: two submitting commands never book the same job twice)
        book = Book(out)
        live = queue_states()
        if live is None:
            raise ValueError("--launcher slurm: squeue does not answer; is the Slurm controller up?")
        waiting: list[tuple[Job, dict[str, Any]]] = []
        missing: list[Job] = []
        for job in todo:
            entry = book.get(job)
            if entry is not None and _finished(entry):
                counts[_collect(job, entry, out, header, console)] += 1
                book.put(job, None)
            elif entry is not None and entry["job_id"] in live:
                waiting.append((job, entry))
            else:
                if entry is not None:
                    console.print(f"resubmit {escape(job.label)}: Slurm job {entry['job_id']} left the queue "
                                  "without a row (cancelled, or the node failed)")
                    record_failure(out, {**failure_row(job, "failed", f"Slurm job {entry['job_id']} left the queue "
                                                       "without a row", entry.get("log", "")),
                                         "launcher": "slurm", "slurm_job": entry["job_id"]}, header)
                missing.append(job)
        if missing:
            # a run longer than its time limit is requeued at each limit, up to MAX_TIMEOUTS times
            executor = submitit.SlurmExecutor(folder=out / "slurm" / "%j", max_num_timeout=MAX_TIMEOUTS)
            params = dict(time=s.minutes, nodes=1, ntasks_per_node=s.processes, cpus_per_task=s.cpus,
                          job_name=f"zoo-{out.name}", signal_delay_s=min(90, max(10, s.minutes * 60 // 10)))
            params.update({k: v for k, v in dict(partition=s.partition, gpus_per_node=s.gpus or None, mem=s.mem,
                                                 account=s.account, qos=s.qos, setup=list(s.setup) or None,
                                                 array_parallelism=s.parallel).items() if v is not None})
            executor.update_parameters(**params)
            for job in missing:
                job.out, job.resume = str(out), None  # a job finds its run's last.pt itself (a requeue does too)
            try:
                submitted = executor.map_array(SlurmRun(runner), [job.to_dict() for job in missing])
            except submitit.core.utils.FailedJobError as exc:
                said = one_line(exc, 300, tail=True)  # sbatch gives its reason last
                raise ValueError(f"--launcher slurm: sbatch refused the job array: {said}") from None
            for job, sj in zip(missing, submitted):
                entry = {"job_id": sj.job_id, "folder": str(out / "slurm" / "%j"), "log": str(sj.paths.stderr),
                         "label": job.label}
                book.put(job, entry)
                waiting.append((job, entry))
            array = submitted[0].job_id.split("_")[0]
            console.print(f"submitted {len(missing)} jobs as Slurm array {array} (logs in {out / 'slurm'})",
                          soft_wrap=True)
        book.save()
    shown = ""
    while True:  # (once at least: the states line says what the first look collected)
        live = queue_states()
        states = {"pending": 0, "running": 0}
        for job, entry in list(waiting):
            state = live.get(entry["job_id"], "?") if live is not None else "?"  # "?": not judged this time
            if _finished(entry):  # (looked at after squeue: a job that left the queue has its result by now)
                counts[_collect(job, entry, out, header, console)] += 1
            elif live is not None and entry["job_id"] not in live:
                # gone from the queue without a result (cancelled, or killed with its node): a failure row now, and
                # off the book, so the next run of the command submits it again (from its last.pt)
                error = (f"Slurm job {entry['job_id']} left the queue without a row (cancelled, or killed by "
                         "Slurm); its log says why")
                record_failure(out, {**failure_row(job, "failed", error, entry["log"]),
                                     "launcher": "slurm", "slurm_job": entry["job_id"]}, header)
                console.print(f"[red]failed[/] {escape(job.label)}: {escape(error)} (log {entry['log']})")
                counts["failed"] += 1
            else:
                states["running" if state in ("RUNNING", "COMPLETING") else "pending"] += 1
                continue
            waiting.remove((job, entry))
            with locked(out):  # (a finished job leaves the book: its row, or its failure's, is in out)
                book = Book(out)
                book.put(job, None)
                book.save()
        line = ", ".join(f"{n} {k}" for k, n in {**states, **counts}.items())
        if line != shown:
            console.print(f"slurm: {line}")
            shown = line
        if detach or not waiting:
            break
        time.sleep(POLL_S)
    return len(waiting)
