"""Light, label-consistent augmentation for single digits.

The image is warped by a small random affine (whole-pixel shift, rotation, scale) and,
optionally, an elastic displacement; the foreground mask is then recomputed with the
digit's own Otsu threshold and the circle refitted to that mask, so mask and circle follow
exactly the task's definition on the augmented image. A shift alone moves pixels and keeps
every intensity exact. Rotation, scale and elastic sample the image: ``interpolation:
linear`` (the default) blends neighbouring pixels into new intensities; ``nearest`` copies
pixels, so each output intensity is one the digit already had, every pixel keeps its side
of the digit's threshold and the mask stays the exact thresholded image (what the
threshold heads need) while the shape still rotates, scales and bends. ``gamma`` changes
the intensities themselves (a random gamma curve), and with it the Otsu threshold: the
mask is then recomputed by Otsu on the augmented image (``rethreshold: true`` does so for
any warp).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class Augment:
    """Augmentation settings; all zero means identity."""

    shift: int = 0  # whole pixels, uniform in [-shift, shift]: keeps intensities exact
    rotate: float = 0.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.0  # relative, uniform in [1 - scale, 1 + scale]
    elastic: float = 0.0  # displacement amplitude in pixels (Simard et al. 2003); 0 = off
    elastic_sigma: float = 4.0
    gamma: float = 0.0  # intensity curve x**g, log(g) uniform in [-gamma, gamma]; 0 = off
    rethreshold: bool = False  # masks from Otsu on the augmented image (always so with gamma)
    interpolation: str = "linear"  # how warps sample: linear (blends) or nearest (copies pixels)

    def __post_init__(self) -> None:
        if isinstance(self.shift, bool) or not isinstance(self.shift, int):
            raise ValueError(f"augment shift must be a whole number of pixels >= 0, got {self.shift!r}")
        for name in ("shift", "rotate", "scale", "elastic", "gamma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"augment {name} must be a number >= 0, got {v!r}")
        if not isinstance(self.rethreshold, bool):
            raise ValueError(f"augment rethreshold must be true or false, got {self.rethreshold!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"augment interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        if self.scale >= 1:
            raise ValueError(f"augment scale must be < 1, got {self.scale!r}")

    @property
    def active(self) -> bool:
        return any((self.shift, self.rotate, self.scale, self.elastic, self.gamma))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Warp one uint8 image (then change its intensity curve); the caller recomputes labels."""
        out = self._warp(image, rng)
        if self.gamma:
            g = float(np.exp(rng.uniform(-self.gamma, self.gamma)))
            lut = np.round(255.0 * (np.arange(256) / 255.0) ** g).astype(np.uint8)
            out = lut[out]
        return out

    def _warp(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape
        dx, dy = (int(v) for v in rng.integers(-int(self.shift), int(self.shift) + 1, size=2))
        if not (self.shift or self.rotate or self.scale or self.elastic):
            return image
        if not (self.rotate or self.scale or self.elastic):
            # A whole-pixel shift only moves pixels: every intensity stays exact, so pixels that
            # sit exactly on the Otsu threshold keep their label (interpolation would blur them).
            out = np.zeros_like(image)
            out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
                image[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            return out
        angle = rng.uniform(-self.rotate, self.rotate)
        scale = 1.0 + rng.uniform(-self.scale, self.scale)
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
        m[:, 2] += (dx, dy)
        flag = INTERPOLATIONS[self.interpolation]
        out = cv2.warpAffine(image, m, (w, h), flags=flag, borderValue=0)
        if self.elastic:
            dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), self.elastic_sigma)
            dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), self.elastic_sigma)
            norm = self.elastic / max(1e-6, float(np.abs(np.stack([dx, dy])).max()))
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            out = cv2.remap(out, xs + dx * norm, ys + dy * norm, flag, borderValue=0)
        return out
