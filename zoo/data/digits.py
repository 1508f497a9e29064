"""MNIST digits with their Otsu foreground masks and minimum enclosing circles, and the
seeded train/val split."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from zoo.data.idx import DataError, Mnist
from zoo.data.config import split_counts
from zoo.data.split import split_indices
from zoo.core.geometry import enclosing_circle


MIN_SIDE = 8  # pixels: the smallest digit images the tasks train on


def otsu(image: np.ndarray) -> tuple[int, np.ndarray]:
    """Otsu threshold of one uint8 image (OpenCV) and its foreground mask (pixel > threshold)."""
    t, mask = cv2.threshold(image, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return int(t), mask.astype(np.uint8)


@dataclass
class Digits:
    """One split's digits: images ``[N, 28, 28]`` uint8, labels, Otsu thresholds, masks, circles."""

    images: np.ndarray
    labels: np.ndarray
    thresholds: np.ndarray
    masks: np.ndarray
    circles: np.ndarray  # [N, 3] (cx, cy, r) in pixels

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> "Digits":
        thresholds = np.empty(len(images), dtype=np.int32)
        masks = np.empty(images.shape, dtype=np.uint8)
        circles = np.empty((len(images), 3), dtype=np.float32)
        for i, img in enumerate(images):
            thresholds[i], masks[i] = otsu(img)
            circles[i] = enclosing_circle(masks[i])
        return cls(images, labels.astype(np.int64), thresholds, masks, circles)

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Splits:
    """Train/val/test digits, and where they came from."""

    train: Digits
    val: Digits
    test: Digits
    source: str

    def info(self) -> dict[str, object]:
        return {"data_source": self.source,
                **split_counts({"train": len(self.train), "val": len(self.val), "test": len(self.test)}, "digits")}


def split_mnist(mnist: Mnist, val_fraction: float = 0.1, seed: int = 0, train_limit: int | None = None,
                test_limit: int | None = None) -> Splits:
    """Validation = a fixed, seeded slice of the training digits; test = the test files.

    ``train_limit``/``test_limit`` take the first digits of the (shuffled) train pool and of the
    test set, for quick runs. No digit is ever in two splits.
    """
    h, w = mnist.train_images.shape[1:]
    if min(h, w) < MIN_SIDE:  # a mask of a pixel or two: metrics of 0/0, a NaN test IoU with exit 0
        raise DataError(f"MNIST images from {mnist.source} are {w}x{h} pixels; the digit tasks need at least "
                        f"{MIN_SIDE}x{MIN_SIDE} (MNIST's are 28x28)")
    train_idx, val_idx, _ = split_indices(len(mnist.train_images), val_fraction, 0.0, seed, "MNIST training digits")
    if train_limit:
        train_idx = train_idx[:train_limit]
        val_idx = val_idx[: max(1, int(round(train_limit * val_fraction)))]
    te = slice(0, test_limit) if test_limit else slice(None)
    splits = Splits(
        train=Digits.from_arrays(mnist.train_images[train_idx], mnist.train_labels[train_idx]),
        val=Digits.from_arrays(mnist.train_images[val_idx], mnist.train_labels[val_idx]),
        test=Digits.from_arrays(mnist.test_images[te], mnist.test_labels[te]),
        source=mnist.source,
    )
    for name in ("train", "val", "test"):
        d = getattr(splits, name)
        if len(d) and not d.masks.any():  # every IoU would be 0/0 and every checkpoint pick a guess
            raise DataError(f"MNIST {name} digits from {mnist.source}: none of the {len(d)} images has a foreground "
                            "pixel (all are blank or one flat value); the digit tasks need images with strokes")
    return splits
