"""Reading MNIST's IDX files, finding them on disk, and fetching them when online."""
from __future__ import annotations

import gzip
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX magic numbers: 0x0000 08 (unsigned byte) then the number of dimensions.
MAGIC = {3: 0x00000803, 1: 0x00000801}


class DataError(ValueError):
    """Data that cannot be used; the message names the file and what is wrong."""


def default_cache() -> Path:
    """Where MNIST is looked for (and downloaded to) when no root is given."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoo" / "mnist"


#: the largest IDX body zoo reads (MNIST's training images are 47 MB): a header that claims more, or a
#: gzip that would inflate past it, is refused before it is decompressed
MAX_IDX_BYTES = 1 << 31


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read one IDX file (raw or .gz) of unsigned bytes with ``ndim`` dimensions. The header is read
    first and the body only up to the size it declares (never a whole gzip stream into memory)."""
    path = Path(path)
    head = 4 + 4 * ndim
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read(head)
            if len(raw) < head:
                raise DataError(f"{path}: truncated: {len(raw)} bytes is shorter than the IDX header")
            magic = struct.unpack(">I", raw[:4])[0]
            if magic != MAGIC[ndim]:
                raise DataError(
                    f"{path}: wrong magic number 0x{magic:08x}, expected 0x{MAGIC[ndim]:08x} "
                    f"(an IDX file of unsigned bytes with {ndim} dimension(s))"
                )
            dims = struct.unpack(">" + "I" * ndim, raw[4:head])
            expected = 1
            for d in dims:  # Python integers: a header of huge dimensions cannot overflow
                expected *= d
            if expected > MAX_IDX_BYTES:
                raise DataError(f"{path}: the header declares {dims} ({expected:,} bytes), more than zoo reads "
                                f"({MAX_IDX_BYTES:,}); is it an MNIST file?")
            body = f.read(expected)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read or decompress: {exc}") from None
    if len(body) < expected:
        raise DataError(f"{path}: truncated: header says {dims} ({expected} bytes), file has {len(body)}")
    return np.frombuffer(body, dtype=np.uint8, count=expected).reshape(dims)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_folders(root: Path) -> list[Path]:
    """A flat folder, or torchvision's ``MNIST/raw`` layout under it."""
    return [root, root / "raw", root / "MNIST" / "raw"]


def find_mnist(root: Path) -> dict[str, Path] | None:
    """Paths of the four files in the first candidate folder that holds all of them."""
    for folder in candidate_folders(root):
        found = {key: _find_file(folder, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


@dataclass
class Mnist:
    """The MNIST arrays and where they came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def _read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, 3)
    y = read_idx(labels, 1)
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels; they must match")
    if y.size and y.max() > 9:
        raise DataError(f"{labels}: label {int(y.max())} is out of range; MNIST labels are 0-9")
    return x, y


BUNDLED = Path(__file__).resolve().parent / "mnist"  # 5,000 training + the 10,000 test digits, CC BY-SA 3.0


def load_mnist(root: str | Path | None = None, download: bool = True, bundled: bool | None = None) -> Mnist:
    """Load MNIST from ``root``, else ``$ZOO_DATA``, else the cache (downloading there if online),
    else the subset bundled with zoo (5,000 training digits, the 10,000 test digits).

    The digit counts come from the IDX headers: a 5,000-digit training subset loads as 5,000.
    A folder given explicitly that holds no MNIST is an error, never replaced by the bundled copy.
    ``ZOO_NO_BUNDLED=1`` (or ``bundled=False``) turns the bundled fallback off; ``ZOO_OFFLINE=1`` the
    download.
    """
    given = root if root is not None else os.environ.get("ZOO_DATA")
    folder = Path(given).expanduser() if given else default_cache()
    found = find_mnist(folder)
    if found is None and given is None and download and os.environ.get("ZOO_OFFLINE", "") in ("", "0"):
        found = _download(folder)
    if bundled is None:
        bundled = os.environ.get("ZOO_NO_BUNDLED", "") in ("", "0")
    if found is None and given is None and bundled and find_mnist(BUNDLED) is not None:
        return _load_bundled()
    if found is None:
        looked = ", ".join(str(p) for p in candidate_folders(folder))
        names = ", ".join(f"{s}[.gz]" for s in FILES.values())
        how = "" if given else " and could not download it (offline?)"
        raise DataError(
            f"MNIST not found{how}: looked for {names} in {looked}. Point zoo at the files with "
            f"--data-root DIR or the ZOO_DATA environment variable."
        )
    return _read(found, str(found["train_images"].parent))


def _read(found: dict[str, Path], source: str) -> Mnist:
    xtr, ytr = _read_pair(found["train_images"], found["train_labels"])
    xte, yte = _read_pair(found["test_images"], found["test_labels"])
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{found['train_images']} holds {xtr.shape[1]}x{xtr.shape[2]} images but "
                        f"{found['test_images']} holds {xte.shape[1]}x{xte.shape[2]}; train and test images must "
                        "have one size")
    return Mnist(xtr, ytr, xte, yte, source=source)


def _load_bundled() -> Mnist:
    """The bundled subset, said so on the console and in every row's ``data_source``."""
    mnist = _read(find_mnist(BUNDLED), "")
    note = f"train: {len(mnist.train_images):,} digits, bundled subset"
    mnist.source = f"{BUNDLED} ({note})"
    print(f"MNIST: no --data-root, $ZOO_DATA, cache or download; using the copy bundled with zoo ({note}, "
          f"test: {len(mnist.test_images):,} digits)", file=sys.stderr)
    return mnist


def _download(folder: Path) -> dict[str, Path] | None:
    """Fetch MNIST into ``folder`` with torchvision; None when offline or it fails."""
    try:
        from torchvision.datasets import MNIST

        folder.mkdir(parents=True, exist_ok=True)
        MNIST(str(folder), train=True, download=True)
        MNIST(str(folder), train=False, download=True)
    except Exception:  # offline, blocked, or a broken mirror: report "not found" with guidance
        return None
    return find_mnist(folder)
