"""One directory per run: its checkpoints, figure and log, never shared with another run.

``<out>/<task>-<encoder>-<weighting>-<budget>-s<seed>-<time>-<pid>-<n>/`` is created with an
exclusive ``mkdir``, so two runs started in the same second (or a rerun) get two directories
and never overwrite each other's ``best.pt``. ``--resume DIR/last.pt`` continues in ``DIR``.

The process training in a directory holds a lock on it (``zoo.engine.checkpoint.hold``), released by
the OS when that process ends, killed or not; so a grid can tell an interrupted run (resume it) from a
running one (leave it alone).
"""
from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Iterator

from zoo.core import distributed as dist
from zoo.engine.checkpoint import LOCK as _LOCK, check_world_size, in_use, load_checkpoint
from zoo.engine.config import RunConfig, check_resumable
from zoo.runs.identity import RunIdentity


def run_name(cfg: RunConfig, budget: str) -> str:
    """The prefix of a run's folders (``RunIdentity.folder``)."""
    return RunIdentity.of(cfg, budget).folder


def new_run_dir(out: str | Path, cfg: RunConfig, budget: str) -> Path:
    """A fresh, empty run directory in ``out`` (rank 0 creates it; every rank gets its path)."""
    path = None
    if dist.is_main():
        parent = Path(out)
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            candidate = parent / f"{run_name(cfg, budget)}-{stamp}-{os.getpid()}-{n}"
            try:
                candidate.mkdir()  # exclusive: fails if another run took this name
            except FileExistsError:
                continue
            path = str(candidate)
            break
        else:  # pragma: no cover - a thousand runs of one combination in one second and process
            raise FileExistsError(f"cannot create a new run directory in {parent}")
    return Path(dist.broadcast_object(path))


def resumable_runs(out: str | Path, cfg: RunConfig, budget: str) -> Iterator[tuple[Path, dict]]:
    """Each run of ``cfg`` in ``out`` that could be continued (a ``last.pt`` of the same settings, no
    process training in it), newest first, with its checkpoint (memory-mapped). A finished run
    keeps its ``last.pt`` too: the caller tells them apart (a row, or the checkpoint's epoch)."""
    dirs = [Path(d) for d in glob.glob(os.path.join(glob.escape(str(out)), glob.escape(run_name(cfg, budget)) + "-*"))]
    for d in sorted(dirs, key=lambda d: d.stat().st_mtime, reverse=True):
        ckpt = d / "last.pt"
        if not ckpt.is_file() or in_use(d):
            continue
        try:
            saved = load_checkpoint(ckpt, mmap=True)
            check_resumable(RunConfig.from_dict(saved["config"]), cfg, ckpt)
            check_world_size(saved, ckpt, dist.world_size())
        except ValueError:  # another run's settings or process count (or a damaged file): never continued
            continue
        yield ckpt, saved


def unfinished_run(out: str | Path, cfg: RunConfig, budget: str) -> Path | None:
    """The ``last.pt`` of the newest resumable run of ``cfg`` in ``out`` (finished or not), or None. A
    grid asks for jobs without a good row and continues such a run instead of starting the job over
    (a run killed while being scored is scored)."""
    return next((ckpt for ckpt, _ in resumable_runs(out, cfg, budget)), None)


def training_done(saved: dict, cfg: RunConfig) -> bool:
    """Whether a checkpoint's run trained to its end: all its epochs, or stopped early on patience."""
    return saved["epoch"] >= cfg.epochs or bool(cfg.patience and saved.get("stale", 0) >= cfg.patience)


def remove_if_empty(run_dir: Path) -> None:
    """A run that failed before writing anything leaves no directory behind (its lock file aside)."""
    if all(p.name == _LOCK for p in run_dir.iterdir()):
        (run_dir / _LOCK).unlink(missing_ok=True)
        run_dir.rmdir()
