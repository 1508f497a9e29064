"""Checkpoints written atomically and loaded safely, and the lock a training process holds on its run
directory."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from zoo.core.files import publish


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` into a temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        publish(tmp, path)
    except RuntimeError as exc:  # torch's stream writer on a full disk: "unexpected pos ...", "file write failed"
        Path(tmp).unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise OSError(errno.EIO, f"{str(exc).splitlines()[0][:160]} ({free / 2**20:,.0f} MB free there; the disk may be "
                                 f"full)", str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load with ``weights_only=True`` (no arbitrary code); errors say what is wrong. ``mmap`` maps
    the tensors instead of reading them: reading a run's config costs nothing even at 500 MB."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be loaded (corrupt or not a zoo checkpoint): {exc}") from None
    missing = [k for k in ("model", "epoch", "config") if k not in state]  # the optimizer only in last.pt
    if missing:
        raise ValueError(f"checkpoint {path} is missing {missing}; is it a zoo checkpoint?")
    return state


def check_world_size(saved: dict[str, Any], path: str | Path, world: int) -> None:
    """A checkpoint resumes only under the number of processes that wrote it (``world``: this run's):
    each rank's share of every epoch, the global batch and the per-step schedule's length (OneCycle's
    total steps) all follow it, so another count would train another run (or fail epochs later,
    stepping the schedule past its end). Checkpoints from before the count was recorded say nothing."""
    was = saved.get("world_size")
    if was is None or int(was) == world:
        return

    def procs(n: int) -> str:
        return "one process" if n == 1 else f"{n} processes (torchrun)"

    how = "without torchrun" if int(was) == 1 else f"under torchrun with {was} processes (--nproc_per_node {was})"
    raise ValueError(f"checkpoint {path} was written by a run of {procs(int(was))} and this run has {procs(world)}: "
                     "the data each process trains on, the global batch and the learning-rate schedule follow the "
                     f"number of processes; resume it {how}, or start a new run without --resume")


# The process training in a run directory holds a lock on it, released by the OS when that process
# ends, killed or not; so a grid can tell an interrupted run (resume it) from a running one.
LOCK = ".run.lock"


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for one training process; a second process gets a one-line error."""
    f = open(Path(run_dir) / LOCK, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ValueError(f"{run_dir} is being trained by another process right now; wait for it to end, or start a "
                         "new run (without --resume)") from None
    try:
        yield
    finally:
        f.close()  # closing releases the lock


def in_use(run_dir: Path) -> bool:
    try:
        with hold(run_dir):
            return False
    except ValueError:
        return True


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata from a zoo ``.safetensors`` file or a training checkpoint (``best.pt``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors' own errors (header too large, invalid, truncated) and OSError
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ValueError(f"{path} is not a readable .safetensors file (empty, truncated, corrupt or not "
                             f"safetensors): {detail}") from None
        if "zoo" not in header:
            raise ValueError(f"{path} has no zoo metadata (task, encoder, config); is it a zoo model file?")
        try:
            return state, json.loads(header["zoo"])
        except ValueError:
            raise ValueError(f"{path}: its zoo metadata is not valid JSON; is it a zoo model file?") from None
    ckpt = load_checkpoint(path)
    return ckpt["model"], {"config": ckpt["config"], "info": ckpt.get("info", {})}
