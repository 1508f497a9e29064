"""Torch datasets for the MNIST tasks: single digits (foreground, circlization) and 2x2 composites."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.augment import Augment
from zoo.data.digits import Digits, otsu
from zoo.core.geometry import enclosing_circle, rasterize_circle_np

BACKGROUND = 10  # the semantic task's background class; digits keep their value 0-9
LABELLINGS = ("pixel", "region")


class _Seeded(Dataset):
    """Per-sample randomness from (seed, epoch, index): deterministic, worker-independent."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, int(index)))


def _digit_fields(digits: Digits, i: int, augment: Augment | None, rng: np.random.Generator | None):
    """Image, foreground mask and circle of digit ``i``, augmented consistently when asked."""
    if augment is None or not augment.active:
        return digits.images[i], digits.masks[i], tuple(digits.circles[i])
    image = augment(digits.images[i], rng)
    if augment.gamma or augment.rethreshold:  # the task's rule applied to the new image
        mask = otsu(image)[1]
    else:
        mask = (image > digits.thresholds[i]).astype(np.uint8)
    return image, mask, enclosing_circle(mask)


class DigitDataset(_Seeded):
    """One MNIST digit per sample, with every field the single-digit tasks use:

    ``image`` [1, 28, 28] float in [0, 1]; ``label`` class; ``mask`` Otsu foreground [28, 28];
    ``circle`` (cx, cy, r) of the minimum enclosing circle; ``circle_mask`` its rasterization.
    """

    def __init__(self, digits: Digits, augment: Augment | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.digits = digits
        self.augment = augment

    def __len__(self) -> int:
        return len(self.digits)

    def device_view(self, device: torch.device, fields: set[str] | None = None):
        """The split on ``device``, batches gathered and augmented there (``zoo.data.device``)."""
        from zoo.data.device import DigitView
        return DigitView(self.digits, self.augment, device, fields)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask, circle = _digit_fields(self.digits, i, self.augment, self.rng(i) if self.augment else None)
        h, w = image.shape
        return {
            "image": torch.from_numpy(image.astype(np.float32) / 255.0)[None],
            "label": torch.tensor(int(self.digits.labels[i])),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "circle": torch.tensor(circle, dtype=torch.float32),
            "circle_mask": torch.from_numpy(rasterize_circle_np(circle, h, w).astype(np.int64)),
        }


def composite_tuple(index: int, n_digits: int, seed: int) -> tuple[int, int, int, int]:
    """The 4 digit indices of composite ``index``: an affine bijection of Z_(N^4), decoded in base N.

    ``t = (a * index + b) mod N^4`` with ``gcd(a, N) = 1`` is one-to-one, so distinct indices
    give distinct 4-tuples: the set has no duplicates, and nothing needs storing.
    """
    a, b = _affine(n_digits, seed)
    return _decode((a * index + b) % n_digits**4, n_digits)


def composite_tuples(size: int, n_digits: int, seed: int) -> list[tuple[int, int, int, int]]:
    """``composite_tuple(i, ...)`` for every ``i < size`` (the bijection's constants drawn once)."""
    m = n_digits**4
    a, b = _affine(n_digits, seed)
    return [_decode((a * index + b) % m, n_digits) for index in range(size)]


def _decode(t: int, n: int) -> tuple[int, int, int, int]:
    """``t`` in base ``n``, lowest digit first: the composite's 4 digit indices."""
    out = []
    for _ in range(4):
        t, d = divmod(t, n)
        out.append(d)
    return tuple(out)  # type: ignore[return-value]


def _affine(n: int, seed: int) -> tuple[int, int]:
    m = n**4
    rng = np.random.default_rng(seed)
    a = int(m * 0.6180339887498949) + int(rng.integers(0, 1 << 30))
    while math.gcd(a, n) != 1:
        a += 1
    return a, int(rng.integers(0, 1 << 62)) % m


class CompositeDataset(_Seeded):
    """56x56 composites of four digits in a 2x2 grid (top-left, top-right, bottom-left, bottom-right).

    ``mask`` holds 11-class labels: with ``labelling='pixel'`` a digit's Otsu foreground
    pixels get its value 0-9 and every other pixel is background 10; with ``'region'`` every
    pixel of a quadrant gets that quadrant's digit. ``labels`` [4] gives the four digits.
    """

    def __init__(self, digits: Digits, size: int, seed: int = 0, labelling: str = "pixel",
                 augment: Augment | None = None) -> None:
        super().__init__(seed)
        if labelling not in LABELLINGS:
            raise ValueError(f"labelling must be one of {', '.join(LABELLINGS)}, got {labelling!r}")
        capacity = len(digits) ** 4
        if not isinstance(size, int) or size < 1 or size > capacity:
            raise ValueError(f"composite set size must be an integer from 1 to {capacity} (= digits^4), got {size!r}")
        self.digits, self.size, self.labelling, self.augment = digits, size, labelling, augment

    def __len__(self) -> int:
        return self.size

    def device_view(self, device: torch.device, fields: set[str] | None = None):
        """The composites on ``device``: their digits and 4-tuples, assembled per batch (``zoo.data.device``)."""
        from zoo.data.device import CompositeView, DigitView
        ids = torch.tensor(composite_tuples(self.size, len(self.digits), self.seed))
        return CompositeView(DigitView(self.digits, self.augment, device, set()), ids, self.labelling, BACKGROUND)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(f"composite index {index} out of range [0, {self.size})")
        ids = composite_tuple(index, len(self.digits), self.seed)
        rng = self.rng(index) if self.augment else None
        image = np.zeros((56, 56), dtype=np.uint8)
        mask = np.full((56, 56), BACKGROUND, dtype=np.int64)
        for q, d in enumerate(ids):
            r, c = (q // 2) * 28, (q % 2) * 28
            img, fg, _ = _digit_fields(self.digits, d, self.augment, rng)
            image[r : r + 28, c : c + 28] = img
            label = int(self.digits.labels[d])
            if self.labelling == "region":
                mask[r : r + 28, c : c + 28] = label
            else:
                mask[r : r + 28, c : c + 28][fg > 0] = label
        return {
            "image": torch.from_numpy(image.astype(np.float32) / 255.0)[None],
            "mask": torch.from_numpy(mask),
            "labels": torch.tensor([int(self.digits.labels[d]) for d in ids]),
        }
