"""Cityscapes, semantics and depth, in the two layouts users download.

**MTAN's preprocessed copy** (as MTAN, Nash-MTL and FAMO read it), ``ROOT/train/`` and ``ROOT/val/`` each with::

    image/N.npy     128 x 256 x 3 float   RGB in [0, 1]
    label_7/N.npy   128 x 256 float/int   7 classes (the evaluated classes' categories), -1 = ignore
    label_19/N.npy  128 x 256 float/int   the 19 train ids, -1 = ignore
    depth/N.npy     128 x 256 x 1 float   0 = missing

(only the label folder of the class count asked for is read).

**The official layout** (cityscapes-dataset.com: leftImg8bit, gtFine, disparity, camera)::

    leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png
    gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png
    disparity/{train,val}/<city>/<stem>_disparity.png
    camera/{train,val}/<city>/<stem>_camera.json

Label ids become the 19 train ids of cityscapesScripts' ``labels.py`` (255 there, -1 here: ignored), or their 7
categories; the disparity PNG holds ``p``, with ``d = (p - 1) / 256`` for ``p > 0`` and ``p = 0`` invalid
(cityscapesScripts' README), and depth = baseline x fx / d in metres from the camera file. Each image is read
once, resized to ``size`` (image by area, labels and depth by nearest neighbour) and kept in memory. An image
without its label, disparity or camera file is one line naming it.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from zoo.data.idx import DataError
from zoo.data.nyuv2 import IGNORE, SplitStats, check_labels, load_npy, missing_depth, read_image, scene_indices

#: cityscapesScripts' labels.py: label id -> train id (255: not evaluated); id -1 (license plate) is 255 too
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
             27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
#: train id -> its category in labels.py (flat, construction, object, nature, sky, human, vehicle) - 1
CATEGORY_OF_TRAIN_ID = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
CLASS_COUNTS = (7, 19)
PREPROCESSED = ("MTAN's preprocessed Cityscapes: ROOT/train/ and ROOT/val/, each with image/N.npy (128x256x3 float), "
                "label_7/ or label_19/N.npy (-1 ignore) and depth/N.npy (128x256x1, 0 missing)")
OFFICIAL = ("the official layout: leftImg8bit/, gtFine/ (*_gtFine_labelIds.png), disparity/ and camera/, each "
            "{train,val}/<city>/")
WHERE = "cityscapes-dataset.com (leftImg8bit, gtFine, disparity, camera packages) or MTAN's preprocessed copy"


def label_lut(num_classes: int) -> np.ndarray:
    """Label id (0..255) -> class (-1 ignored), for 19 train ids or their 7 categories."""
    lut = np.full(256, IGNORE, np.int64)
    for label_id, train_id in TRAIN_IDS.items():
        lut[label_id] = train_id if num_classes == 19 else CATEGORY_OF_TRAIN_ID[train_id]
    return lut


class NpyScene:
    """One scene of the preprocessed layout."""

    def __init__(self, split: Path, index: int, size: tuple[int, int], num_classes: int) -> None:
        self.split, self.index, self.size, self.num_classes = split, index, tuple(size), num_classes

    def path(self, folder: str) -> Path:
        return self.split / folder / f"{self.index}.npy"

    def read(self, stats: SplitStats | None = None) -> dict[str, np.ndarray]:
        h, w = self.size
        image = read_image(self.path("image"), h, w)
        folder = f"label_{self.num_classes}"
        label = check_labels(load_npy(self.path(folder), ((h, w),), "fiu", "the label map"), self.path(folder),
                             self.num_classes)
        depth, invalid, finite = missing_depth(load_npy(self.path("depth"), ((h, w, 1), (h, w)), "f",
                                                        "the depth map").reshape(h, w), self.path("depth"))
        if stats is not None:
            _count(stats, label, invalid, finite)
        return {"image": image, "mask": label, "depth": depth}


def _count(stats: SplitStats, label: np.ndarray, invalid: np.ndarray, finite: np.ndarray) -> None:
    stats.pixels += label.size
    stats.depth_invalid += int(invalid.sum())
    stats.depth_non_finite += int((~finite).sum())
    stats.ignored += int((label == IGNORE).sum())


def scan_preprocessed(split: Path, size: tuple[int, int], num_classes: int) -> tuple[list[NpyScene], SplitStats]:
    n = scene_indices(split, ("image", f"label_{num_classes}", "depth"), PREPROCESSED)
    scenes = [NpyScene(split, i, size, num_classes) for i in range(n)]
    stats = SplitStats()
    for s in scenes:
        s.read(stats)
    _some_depth(stats, split / "depth", len(scenes))
    return scenes, stats


def _some_depth(stats: SplitStats, where: Path, n: int) -> None:
    if stats.depth_invalid == stats.pixels:
        raise DataError(f"{where}: no valid depth pixel in the whole split ({n} images; 0 and NaN/inf mark missing "
                        "depth)")


class MemoryScene:
    """One scene already read (the official layout: decoded and resized once)."""

    def __init__(self, fields: dict[str, np.ndarray]) -> None:
        self.fields = fields

    def read(self, stats: SplitStats | None = None) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.fields.items()}


def _png(path: Path, what: str, flags: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing ({what})")
    a = cv2.imread(str(path), flags)
    if a is None:
        raise DataError(f"{path}: cannot read the PNG ({what}; corrupt or not an image)")
    return a


def camera(path: Path) -> tuple[float, float]:
    """``(baseline in metres, fx in pixels)`` of a Cityscapes camera file."""
    if not path.is_file():
        raise DataError(f"{path}: missing (the camera file, whose baseline and fx turn disparity into depth)")
    try:
        with open(path, "rb") as f:
            cam = json.loads(f.read(1 << 16))  # a camera file is a few hundred bytes
        baseline, fx = float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a Cityscapes camera file (extrinsic.baseline and intrinsic.fx): "
                        f"{type(exc).__name__}: {exc}") from None
    if not (np.isfinite(baseline) and np.isfinite(fx) and baseline > 0 and fx > 0):
        raise DataError(f"{path}: baseline {baseline} and fx {fx} must be finite and > 0")
    return baseline, fx


def official_scene(root: Path, split: str, image: Path, size: tuple[int, int], lut: np.ndarray,
                   stats: SplitStats) -> MemoryScene:
    """One official image with its label ids, disparity and camera, resized to ``size``."""
    city, stem = image.parent.name, image.name[: -len("_leftImg8bit.png")]
    label_path = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
    disp_path = root / "disparity" / split / city / f"{stem}_disparity.png"
    cam_path = root / "camera" / split / city / f"{stem}_camera.json"
    for p, what in ((label_path, "the label ids"), (disp_path, "the disparity"), (cam_path, "the camera file")):
        if not p.is_file():
            raise DataError(f"{p}: missing; {image.name} needs its label ids, disparity and camera file ({what})")
    rgb = _png(image, "the image", cv2.IMREAD_COLOR)
    ids = _png(label_path, "the label ids", cv2.IMREAD_UNCHANGED)
    disp = _png(disp_path, "the disparity", cv2.IMREAD_UNCHANGED)
    baseline, fx = camera(cam_path)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise DataError(f"{label_path}: label ids are a one-channel 8-bit PNG, got {ids.dtype} of shape {ids.shape}")
    if disp.ndim != 2 or disp.dtype != np.uint16:
        raise DataError(f"{disp_path}: a disparity is a one-channel 16-bit PNG, got {disp.dtype} of shape {disp.shape}")
    if not (rgb.shape[:2] == ids.shape == disp.shape):
        raise DataError(f"{image}: image {rgb.shape[:2]}, label ids {ids.shape} and disparity {disp.shape} differ in "
                        "size")
    h, w = size
    p = disp.astype(np.float32)
    d = np.where(p > 0, (p - 1) / 256.0, 0.0)
    depth = np.zeros_like(d)
    np.divide(baseline * fx, d, out=depth, where=d > 0)  # d = 0 (p of 0 or 1): missing
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    depth, invalid, finite = missing_depth(depth, disp_path)
    label = lut[cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)]
    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)[..., ::-1].astype(np.float32) / 255.0
    _count(stats, label, invalid, finite)
    return MemoryScene({"image": np.ascontiguousarray(rgb), "mask": label, "depth": depth})


def scan_official(root: Path, split: str, size: tuple[int, int], num_classes: int
                  ) -> tuple[list[MemoryScene], SplitStats]:
    folder = root / "leftImg8bit" / split
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; the cityscapes task reads {OFFICIAL} (or {PREPROCESSED})")
    images = sorted(folder.glob("*/*_leftImg8bit.png"))
    if not images:
        raise DataError(f"{folder}: no <city>/*_leftImg8bit.png images")
    lut, stats = label_lut(num_classes), SplitStats()
    scenes = [official_scene(root, split, im, size, lut, stats) for im in images]
    _some_depth(stats, root / "disparity" / split, len(scenes))
    return scenes, stats
