"""One directory per run: its checkpoints, figure and log, never shared with another run.

``<out>/<task>-<encoder>-<weighting>-<budget>-s<seed>-<time>-<pid>-<n>/`` is created with an
exclusive ``mkdir``, so two runs started in the same second (or a rerun) get two directories
and never overwrite each other's ``best.pt``. ``--resume DIR/last.pt`` continues in ``DIR``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from zoo import distributed as dist
from zoo.config import RESUMABLE, RunConfig


def run_name(cfg: RunConfig, budget: str) -> str:
    return f"{cfg.task}-{cfg.encoder.replace(':', '_')}-{cfg.weighting}-{budget}-s{cfg.seed}"


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


def check_resumable(saved: RunConfig, cfg: RunConfig, path: str | Path) -> None:
    """A checkpoint continues only the run it came from: every setting that changes what is learned
    must be the same (device, workers, data folder and registry files may differ)."""
    now = cfg.to_dict()
    diff = [f"{k}: {v!r} in the checkpoint, {now[k]!r} now" for k, v in saved.to_dict().items()
            if k not in RESUMABLE and now[k] != v]
    if diff:
        raise ValueError(f"checkpoint {path} is from another run and cannot be resumed with these settings; "
                         f"differences: {'; '.join(diff)}. Rerun without --resume, or with the checkpoint's settings")


def check_writable(out: str | Path) -> Path:
    """``--out`` must be a folder this user can write, checked before any training."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a folder for the results")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"--out {out} is not writable ({exc.strerror or exc}); give a folder you can write to") from None
    return out
