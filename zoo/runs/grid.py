"""Running a grid of benchmark jobs: each combination in its own subprocess (as timm's bulk
runner does), so one crash, hang or out-of-memory costs one row, never the grid.

- A job whose row is already in ``--out`` (same task, encoder, weighting, budget and seed) is
  skipped, so a grid interrupted by a session's end is finished by running the same command;
  unless the row's ``budget_hash`` says it was trained under other settings (the budget in
  ``registry.yaml`` changed since): then it is trained again and its new row replaces the old.
- A job that fails, runs out of memory or passes ``--job-timeout`` leaves a row saying so
  (``status``, ``error``, its log) and the grid goes on; a later run of the grid retries it.
  Such a row never replaces a finished one.
- A job whose earlier run was interrupted (a ``last.pt`` in ``--out`` with the same settings, no
  process training in it) is continued from that checkpoint (``--resume``), so a run longer than
  a session is finished by running the same command in the next one.
- ``--jobs N`` runs N jobs at once (one GPU holds many small runs); each job's output goes to
  ``<out>/logs/<task>-<encoder>-<weighting>-<budget>-s<seed>.log``, each attempt appended under a
  ``=== <time> <job> <command>`` line; a job is a file (``zoo.runs.job``) that
  ``python -m zoo.bench --job FILE`` runs, kept beside the log when the job failed.
- ``--launcher slurm`` runs the same jobs as a Slurm job array (``zoo.runs.slurm``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from zoo.engine.config import budget_fingerprint
from zoo.runs.job import Job
from zoo.runs.keys import row_key
from zoo.runs.results import load_rows, locked, machine, merge_rows, write_rows
from zoo.runs.rundir import unfinished_run


@dataclass
class _Running:
    job: Job
    path: Path  # the job's file
    proc: subprocess.Popen
    log: Path
    offset: int  # where this attempt's output starts in ``log`` (earlier attempts stay above it)
    start: float = field(default_factory=time.monotonic)

    def text(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")


def last_error(text: str) -> str:
    # the last error line, else the last line that is not a rich rule (a job's banner)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] != "─"]
    for ln in reversed(lines):
        if ln.startswith("error:") or "Error" in ln.split(":")[0]:
            return ln[:300]
    return lines[-1][:300] if lines else "(no output)"


def record_failure(out: Path, row: dict[str, Any], header: str) -> None:
    """Write a failure row unless the folder already has a finished row with its key."""
    with locked(out):
        rows = load_rows(out)
        done = any(row_key(r) == row_key(row) and not r.get("status") for r in rows)
        if not done:
            write_rows(out, merge_rows(rows, [row]), header)


def to_run(jobs: list[Job], out: Path, console: Console) -> list[Job]:
    """The jobs of a grid without a finished row in ``out`` of their budget (any launcher), each said."""
    done = {row_key(r): r for r in load_rows(out) if not r.get("status")}
    todo = []
    for job in jobs:
        row, now = done.get(job.key), budget_fingerprint(job.cfg)
        if row is not None and row.get("budget_hash", now) == now:  # rows from before the hash: kept
            console.print(f"skip {job.label}: its row is in {out} already")
        else:
            if row is not None:
                console.print(f"retrain {job.label}: its row in {out} was trained "
                              f"under other settings (budget_hash {row['budget_hash']}, now {now}); the new row "
                              "replaces it")
            todo.append(job)
    return todo


def failure_row(job: Job, status: str, error: str, log: str | Path, seconds: float | None = None) -> dict[str, Any]:
    """The row of a job that did not finish: its key, what happened, and where its output is; ``seconds``, the
    time it ran on this machine (a job run elsewhere, on Slurm, has its node and times in its log)."""
    ran = {} if seconds is None else {"wall_seconds": round(seconds, 1), "machine": machine()}
    return {**job.ident.fields, "status": status, "error": error, **ran, "log": str(log), "command": job.command}


def run_grid(jobs: list[Job], out: Path, n_parallel: int, timeout: float | None, header: str,
             console: Console) -> None:
    """Run ``jobs`` in subprocesses (``python -m zoo.bench --job FILE``), at most ``n_parallel`` at once; each
    writes its row (or its failure's) into ``out``."""
    todo = to_run(jobs, out, console)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: list[_Running] = []
    total, finished = len(todo), 0
    while todo or running:
        while todo and len(running) < n_parallel:
            job = todo.pop(0)
            log = logs / f"{job.ident.folder}.log"
            job.resume = str(unfinished_run(out, job.cfg, job.mode) or "") or None
            path = job.write(logs)  # beside its log; kept when the job fails, to rerun it alone
            cmd = [sys.executable, "-m", "zoo.bench", "--job", str(path)]
            # appended, never truncated: an interrupted attempt's output is what explains it
            with open(log, "a") as f:
                f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.label}: python -m zoo.bench --job {path}\n")
                f.flush()
                offset = f.tell()  # before the child writes: it shares this file offset
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                running.append(_Running(job, path, proc, log, offset))
            how = f"resume from {job.resume}" if job.resume else "start"
            console.print(f"{how} {job.label}  (log {log})")
        time.sleep(0.5)
        for r in list(running):
            elapsed = time.monotonic() - r.start
            rc = r.proc.poll()
            if rc is None and timeout and elapsed > timeout:
                r.proc.kill()
                r.proc.wait()
                rc = "timeout"
            if rc is None:
                continue
            running.remove(r)
            finished += 1
            name = r.job.label
            if rc == 0:
                r.path.unlink(missing_ok=True)  # a failed job's file stays: its log names it, to rerun it alone
                console.print(f"[{finished}/{total}] done {name} ({elapsed:.0f} s)")
                continue
            text = r.text()
            if rc == "timeout":
                status, error = "timeout", f"killed after {timeout:.0f} s (--job-timeout)"
            elif rc < 0:  # a signal: SIGKILL with no traceback is most often the OS out-of-memory killer
                status = "killed"
                error = f"killed by signal {-rc}" + (" (the OS out-of-memory killer?)" if rc == -9 else "")
            else:
                status, error = failure_of(text)
            record_failure(out, failure_row(r.job, status, error, r.log, elapsed), header)
            console.print(f"[{finished}/{total}] [red]{status}[/] {name}: {escape(error)}")


def failure_of(text: str) -> tuple[str, str]:
    """The status and error line of a job that exited with an error, from its output."""
    status = "out of memory" if "OutOfMemoryError" in text or "out of memory" in text else "failed"
    return status, last_error(text)
