"""Atomic writes and safe loading of checkpoints and result files."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    """The process umask (read by setting it and back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the mode a plain ``open`` would (mkstemp makes it 0600), then rename it over."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over ``path``: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` into a temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        _publish(tmp, path)
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
