"""Images and integer masks held in numpy arrays (the npz task), and class weights from mask pixels."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.folder import resize_pair, to_sample
from zoo.data.idx import DataError


def npz_array(z: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    """Array ``key`` of an open ``.npz`` (``np.load(path, allow_pickle=False)``), every fault one line naming the
    file and the array. Arrays are read lazily, on first access: their faults surface here, not at np.load."""
    if key not in z.files:
        raise DataError(f"{path}: no array {key!r}; arrays in the file: {', '.join(z.files)}")
    try:
        return z[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array is a pickle, and unpickling can run code
            raise DataError(f"{path}: array {key!r} holds Python objects (dtype object), which zoo never "
                            "unpickles; save it as a numeric array, e.g. np.savez(file, "
                            f"{key}=np.stack(arrays).astype(np.uint8))") from None
        raise DataError(f"{path}: array {key!r} is unreadable: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: array {key!r} is unreadable (truncated or corrupt): "
                        f"{str(exc) or type(exc).__name__}") from None


def class_weights(masks: np.ndarray, num_classes: int) -> list[float]:
    """Median frequency balancing: w_c = median(f) / f_c over classes present (absent classes get 0)."""
    counts = np.bincount(masks.reshape(-1).astype(np.int64), minlength=num_classes)[:num_classes].astype(np.float64)
    freq = counts / counts.sum()
    present = freq > 0
    med = np.median(freq[present])
    w = np.zeros(num_classes)
    w[present] = med / freq[present]
    return [round(float(v), 6) for v in w]


class ArrayDataset(Dataset):
    epoch_invariant = True  # no augmentation: the engine may cache the split on the device (zoo.data.device)

    def __init__(self, images: np.ndarray, masks: np.ndarray, index: np.ndarray, size: tuple[int, int] | None) -> None:
        self.images, self.masks, self.index, self.size = images, masks, index, size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.index[i])
        image, mask = self.images[j], self.masks[j]  # uint8 images (to_uint8 converted the whole array)
        image, mask = resize_pair(image, mask, self.size)
        return to_sample(image, mask)


def refuse_non_finite(a: np.ndarray, what: str, fix: str) -> None:
    """A DataError naming how many NaN/inf values ``a`` holds and where the first is."""
    bad = ~np.isfinite(a)
    if bad.any():
        raise DataError(f"{what} hold {int(bad.sum())} NaN/inf value(s) (first at index "
                        f"{tuple(int(i) for i in np.argwhere(bad)[0])}); {fix}")


def to_uint8(images: np.ndarray, what: str) -> tuple[np.ndarray, str]:
    """An image array as uint8, scaled once for the whole array (never image by image, which would
    brighten a dark image), and how: uint8 as is; booleans x255; floats in [0, 1] x255; numbers in
    0..255 as they are; any other range (e.g. int16 -1000..920) mapped linearly from its min..max
    onto 0..255. NaN or inf is an error naming where."""
    if images.dtype == np.uint8:
        return images, "uint8, as stored"
    if images.dtype.kind == "b":
        return images.astype(np.uint8) * 255, "booleans x 255"
    if images.dtype.kind not in "uif":
        raise DataError(f"{what}: images must be numbers, got dtype {images.dtype}")
    if images.dtype.kind == "f":
        refuse_non_finite(images, f"{what}: images", "fix or drop those images")
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if images.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return np.round(images * 255.0).astype(np.uint8), f"{images.dtype} in [0, 1], x 255"
    if lo >= 0 and hi <= 255:
        return np.round(images).astype(np.uint8), f"{images.dtype} in 0..255, as they are"
    scaled = np.round((images.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return scaled, f"{images.dtype} {lo:g}..{hi:g} mapped linearly onto 0..255"


def check_masks(masks: np.ndarray, what: str) -> np.ndarray:
    """Masks as non-negative integer class indices (``uint8``/``uint16``, what OpenCV resizes); NaN,
    fractions, negatives or values above 65535 are an error, never wrapped by a cast."""
    if masks.dtype.kind == "b":
        return masks.astype(np.uint8)
    if masks.dtype.kind not in "uif":
        raise DataError(f"{what}: masks must hold integer class indices, got dtype {masks.dtype}")
    if masks.dtype.kind == "f":
        refuse_non_finite(masks, f"{what}: masks", "masks must be integer class indices")
        frac = masks != np.round(masks)
        if frac.any():
            at = tuple(int(i) for i in np.argwhere(frac)[0])
            raise DataError(f"{what}: masks hold fractional values (e.g. {float(masks[at])} at index {at}); "
                            "masks must be integer class indices")
    lo, hi = (masks.min(), masks.max()) if masks.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise DataError(f"{what}: mask values {lo}..{hi} are outside 0..65535; masks must be class indices")
    return masks.astype(np.uint8 if hi <= 255 else np.uint16)
