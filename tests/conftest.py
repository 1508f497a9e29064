"""Shared fixtures and helpers: tiny MNIST-format IDX files written by the tests themselves, small datasets in
each bring-your-own-data format (COCO, Pets, npz, image folders), user registry files, and ``python -m zoo.bench``
run in this process."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

REAL_MNIST = os.environ.get("ZOO_DATA")
ROOT = Path(__file__).resolve().parent.parent

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


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A seeded random colour image, (h, w, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """A COCO polygon: the rectangle (x0, y0)-(x1, y1) as a flat list of corner coordinates."""
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def write_coco(root: Path) -> Path:
    """Two splits; category ids 1 ('cat') and 7 ('dog'): contiguous indices 1 and 2."""
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train", 4), ("val", 2)):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            name = f"{split}_{i}.jpg"
            cv2.imwrite(str(root / split / name), rgb(40, 60, i))
            images.append({"id": i + 1, "file_name": name, "height": 40, "width": 60})
        # image 1: a big cat square with a small dog square on top of it (overlap)
        anns.append({"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square(5, 5, 35, 35)], "area": 900, "iscrowd": 0})
        anns.append({"id": 2, "image_id": 1, "category_id": 7, "segmentation": [square(10, 10, 20, 20)], "area": 100, "iscrowd": 0})
        # image 2: a crowd RLE (uncompressed counts, column-major) of dog covering column 0 rows 0-9
        anns.append({"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 1, "area": 10,
                     "segmentation": {"size": [40, 60], "counts": [0, 10, 2390]}})
        # unknown category and an invalid polygon: skipped and counted, never a crash
        anns.append({"id": 4, "image_id": 2, "category_id": 99, "segmentation": [square(1, 1, 5, 5)], "area": 16, "iscrowd": 0})
        anns.append({"id": 5, "image_id": 2, "category_id": 1, "segmentation": [[1.0, 2.0, 3.0]], "area": 1, "iscrowd": 0})
        # images 3.. have no annotations: all background
        data = {"images": images, "annotations": anns,
                "categories": [{"id": 7, "name": "dog"}, {"id": 1, "name": "cat"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def write_pets(root: Path, n: int = 6, lists: bool = True) -> Path:
    """``n`` Oxford-IIIT Pet images and trimaps under ``root`` (a pet square with a boundary ring), with the
    official split lists unless ``lists`` is False."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for i in range(n):
        name = f"Abyssinian_{i + 1}"
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), rgb(30, 40, i))
        tri = np.full((30, 40), 2, np.uint8)
        tri[5:25, 10:30] = 3
        tri[7:23, 12:28] = 1
        cv2.imwrite(str(root / "annotations" / "trimaps" / f"{name}.png"), tri)
    if lists:
        names = [f"Abyssinian_{i + 1} 1 1 1" for i in range(n)]
        (root / "annotations" / "trainval.txt").write_text("\n".join(names[:4]) + "\n")
        (root / "annotations" / "test.txt").write_text("\n".join(names[4:]) + "\n")
    return root


def write_npz(path: Path, n: int = 20, stacked: bool = False, classes: int = 4) -> Path:
    """An npz of ``n`` grey images and masks of ``classes`` classes (the last one rare: in 3 images), as
    ``images``/``masks`` or one ``training_set`` array (``stacked``)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, 16, 24), dtype=np.uint8)
    y = np.zeros((n, 16, 24), np.uint8)
    y[:, :8] = 1
    y[:, 8:, :12] = 2
    y[:3, 0:2, 0:2] = classes - 1  # a rare class in 3 images
    if stacked:
        np.savez(path, training_set=np.stack([x, y], 1))
    else:
        np.savez(path, images=x, masks=y)
    return path


def write_folder(root: Path, n: int = 6, classes: int = 3) -> Path:
    """An image folder (``Images/`` grey PNGs, ``Masks/`` index PNGs) of ``n`` pairs, each mask a square of one
    of the classes 1..classes-1."""
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "Images" / f"{i:03d}.png"), rgb(20, 24, i)[..., 0])
        m = np.zeros((20, 24), np.uint8)
        m[5:15, 5:15] = 1 + i % (classes - 1)
        cv2.imwrite(str(root / "Masks" / f"{i:03d}.png"), m)
    return root


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


def load_script(name: str):
    """``benchmarks/NAME.py`` as a module. The benchmark scripts run as files, not as a package, so tests that call
    their ``main`` or helpers load them by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
