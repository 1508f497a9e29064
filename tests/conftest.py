"""Shared fixtures and helpers: tiny MNIST-format IDX files written by the tests themselves, user registry
files, and ``python -m zoo.bench`` run in this process."""
from __future__ import annotations

import gzip
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REAL_MNIST = os.environ.get("ZOO_DATA")

# Tests never download, and never read the user's own Hugging Face cache: huggingface_hub reads these
# when first imported (by timm), which is after this file. Tests that need a cache fill one (hf_cache).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="zoo-tests-hf-")


def rect_digit(label: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A hand-made 'digit': a filled rectangle whose place and size encode the label.

    Returns the image and the rectangle (x0, y0, x1, y1), inclusive pixel bounds: its Otsu
    mask is exactly the rectangle, its enclosing circle has centre the rectangle's middle and
    radius half the diagonal between corner pixel centres.
    """
    x0 = 3 + (label % 5) * 2
    y0 = 3 + (label // 5) * 6
    w, h = 6 + label % 3, 8 + label % 4
    if rng is not None:
        x0 += int(rng.integers(0, 2))
        y0 += int(rng.integers(0, 2))
    img = np.zeros((28, 28), np.uint8)
    img[y0 : y0 + h, x0 : x0 + w] = 200 + label * 5
    return img, (x0, y0, x0 + w - 1, y0 + h - 1)


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_mnist(folder: Path, n_train: int = 200, n_test: int = 60, gz: bool = True, seed: int = 0) -> Path:
    """Write the four MNIST IDX files of rectangle digits into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.stack([rect_digit(int(l), rng)[0] for l in labels])
        write_idx(folder / f"{split}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, gz)
    return folder


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(autouse=True)
def _no_download(monkeypatch, tmp_path):
    """Tests never download: the cache points at an empty temp folder and torchvision's fetch fails."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_NO_BUNDLED", "1")  # tests that want the bundled copy say so
    import zoo.data.idx as idx

    monkeypatch.setattr(idx, "_download", lambda folder: None)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache of this test's own (huggingface_hub reads the folder at each call)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def fill_hub_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "a" * 40) -> Path:
    """A Hub repo as huggingface_hub caches it: ``models--ORG--NAME/snapshots/<rev>/<file>`` plus
    ``refs/main`` naming the revision. Returns the snapshot folder."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot


def write_registry(folder: Path, entries: dict[str, Any], name: str = "r.yaml") -> Path:
    """A user registry file ``folder/name`` holding ``entries`` (kind -> name -> entry, as in
    ``registry.yaml``); returns its path, for ``--registry`` or ``zoo.load_registry([path])``."""
    path = folder / name
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def scratch_encoder(**settings: Any) -> dict[str, Any]:
    """A registry entry: the scratch encoder with ``settings``."""
    return {"target": "zoo.encoders.scratch:ScratchEncoder", "settings": settings}


def foreground_task(heads: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                    **fields: Any) -> dict[str, Any]:
    """A registry entry: a task on the MNIST foreground data, by default one binary mask head scored by
    IoU, with ``fields`` (budget, quick, monitor, ...)."""
    return {"target": "zoo.tasks.mnist:ForegroundTask",
            "heads": heads or {"mask": {"head": "binary_mask", "loss": "bce", "target": "mask"}},
            "metrics": metrics or {"iou": {"metric": "iou", "head": "mask", "target": "mask"}}, **fields}


def run_cli(args: list[str], capsys, speed: bool = True) -> tuple[int, str]:
    """``python -m zoo.bench ARGS --quiet --no-figures`` (and ``--no-speed`` unless ``speed``) in this process:
    its exit code and its stderr as one line (rich wraps long lines)."""
    from zoo.bench import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main([*args, "--quiet", "--no-figures", *([] if speed else ["--no-speed"])])
    return rc, capsys.readouterr().err.replace("\n", " ")


def assert_clear(rc: int, err: str, *expect: str) -> None:
    """A bad input's report: exit code 2, one ``error:`` line holding each of ``expect``, no traceback,
    and nothing trained (the error comes before the first epoch)."""
    assert rc == 2, err
    assert "Traceback" not in err
    assert "error:" in err, err
    message = err[err.index("error:"):]
    for e in expect:
        assert e in message, (e, err)
    assert "epoch 1/" not in err, "the error must come before the first training step"
