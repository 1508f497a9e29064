"""Files written atomically: a temp file in the same folder, then a rename over the target, so a
reader (or a run killed mid-write) never sees half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask (read by setting it and back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str, path: Path) -> None:
    """Give the temp file the mode a plain ``open`` would (mkstemp makes it 0600), then rename it over."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def give_folder_mode(path: str | Path) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (mode 0700) the mode a plain ``mkdir`` would."""
    os.chmod(path, 0o777 & ~_umask())


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
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(out: str | Path, flag: str = "--out") -> Path:
    """``out`` must be a folder this user can write (created if missing), checked before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is a file, not a folder; give a folder for the results")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{flag} {out} is not writable ({exc.strerror or exc}); give a folder you can write to") from None
    return out


def check_writable_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` must be a file this user can write: not a folder, in a folder that is writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'model.onnx'}")
    check_writable(path.parent, f"{flag} {path}: its folder")
    return path
