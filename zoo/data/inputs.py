"""Bringing a user's image (any size, 1 or 3 channels) to a model's input the way its task defines,
and mapping predictions back onto the original image.

* ``digit`` (foreground, circlization): MNIST's own preprocessing. Grayscale; a light background
  (the border brighter than mid-grey: ink on paper) is inverted to MNIST's white digit on black;
  the background level (the border's median) is subtracted and the contrast stretched to 0-255;
  the digit's bounding box (above its Otsu threshold) is scaled so its longer side is 20 pixels
  and placed in a 28x28 frame with its centre of mass at the centre.
* ``resize`` (semantic composites, and tasks with a ``size``): the same polarity and contrast
  steps, then a plain resize to the model's size (aspect ratio not kept).
* ``keep``: channels converted, size kept (the model pads to its stride and crops back).

Every transform is an affine map (:class:`Frame`): model pixel coordinates map back to the
original image's, so circles and masks are reported on the image the user gave.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from zoo.data.idx import DataError

MODES = ("digit", "resize", "keep")


@dataclass
class Frame:
    """``matrix`` maps original (x, y) to model (u, v): ``[u, v] = M @ [x, y, 1]``."""

    matrix: np.ndarray  # 2x3
    original: tuple[int, int]  # (H, W) of the user's image
    model: tuple[int, int]  # (H, W) of the model input

    def to_original(self, x: float, y: float, r: float = 0.0) -> tuple[float, float, float]:
        inv = cv2.invertAffineTransform(self.matrix)
        ox, oy = inv @ np.array([x, y, 1.0])
        scale = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))
        return float(ox), float(oy), float(r * scale)

    def mask_to_original(self, mask: np.ndarray) -> np.ndarray:
        h, w = self.original
        return cv2.warpAffine(mask.astype(np.uint8), cv2.invertAffineTransform(self.matrix), (w, h),
                              flags=cv2.INTER_NEAREST, borderValue=0)

    def values_to_original(self, values: np.ndarray) -> np.ndarray:
        """Per-pixel values ``[C, H, W]`` (model pixels) on the original image: linear interpolation, the edge
        values continued past the model's last pixel centres (a resize's inverse reaches up to half a model
        pixel beyond them)."""
        h, w = self.original
        inv = cv2.invertAffineTransform(self.matrix)
        return np.stack([cv2.warpAffine(np.ascontiguousarray(c, dtype=np.float32), inv, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE) for c in values])


GRAY_MODES = ("L", "1", "I", "I;16", "I;16B", "I;16L", "F")
COLOUR_MODES = {"RGB": "RGB", "RGBA": "RGB", "P": "RGB", "PA": "RGB", "LA": "L"}
ALPHA_MODES = ("RGBA", "LA", "PA")


def flatten_alpha(im):
    """An image with transparency, composited onto a background that contrasts with its visible ink:
    white under dark ink, black under light ink (the alpha-weighted mean level of the opaque pixels
    decides). Dropping the alpha instead turned black strokes on a transparent canvas into an
    all-black image."""
    from PIL import Image

    rgba = im.convert("RGBA")
    a = np.asarray(rgba, dtype=np.float64)
    alpha = a[..., 3] / 255.0
    if alpha.min() >= 1.0:
        return rgba.convert("RGB")
    level = float((a[..., :3].mean(-1) * alpha).sum() / max(alpha.sum(), 1e-9))
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if level < 128 else (0, 0, 0, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def read_any(path: str | Path) -> np.ndarray:
    """An image file as uint8 ``[H, W]`` (grayscale) or ``[H, W, 3]`` (RGB). Grayscale, RGB and their
    alpha or palette forms are accepted (transparency composited by :func:`flatten_alpha`); other channel layouts (CMYK, YCbCr, LAB, ...) and unreadable
    files are a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in GRAY_MODES:
                img = np.asarray(im, dtype=np.float64 if mode in ("I", "F") or mode.startswith("I;16") else np.uint8)
            elif mode in COLOUR_MODES:
                if mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info):
                    img = np.asarray(flatten_alpha(im).convert(COLOUR_MODES[mode]))
                else:
                    img = np.asarray(im.convert(COLOUR_MODES[mode]))
            else:
                raise DataError(f"{path}: a {mode} image ({len(im.getbands())} channels: {', '.join(im.getbands())}); "
                                "give a grayscale (1 channel), RGB (3) or RGBA (4) image")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Image.DecompressionBombError as exc:  # PIL's cap on pixels: a decompression bomb, or just too large
        raise DataError(f"{path}: too large to read safely ({exc}); give an image of at most "
                        f"{Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image (corrupt or not an image): {exc}") from None
    if img.dtype != np.uint8:  # 16-bit or float grayscale: stretched to 0-255
        lo, hi = float(img.min()), float(img.max())
        img = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) * 255.0 / (hi - lo)).round().astype(np.uint8)
    return np.ascontiguousarray(img)


def _channels(img: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)


def _polarity(gray: np.ndarray) -> np.ndarray:
    """MNIST polarity (light ink on black) and contrast: invert a light background, subtract its level."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:
        gray, border = 255 - gray, 255 - border
    bg = float(np.median(border))
    top = float(gray.max())
    if top <= bg:
        return np.zeros_like(gray)
    return np.clip((gray.astype(np.float32) - bg) * 255.0 / (top - bg), 0, 255).astype(np.uint8)


def _digit(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's preprocessing: bounding box to 20 px on its longer side, centre of mass at (14, 14)."""
    _, fg = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ys, xs = np.nonzero(fg)
    if len(xs) == 0:  # a blank image: scale it whole
        x0, y0, x1, y1 = 0, 0, gray.shape[1] - 1, gray.shape[0] - 1
    else:
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    s = 20.0 / max(x1 - x0 + 1, y1 - y0 + 1)
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], dtype=np.float64)
    box = cv2.warpAffine(gray, m, (28, 28), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    mom = cv2.moments(box)
    cx, cy = (mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]) if mom["m00"] else (10.0, 10.0)
    m[:, 2] += (14.0 - cx, 14.0 - cy)
    return cv2.warpAffine(gray, m, (28, 28), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), m


def prepare(img: np.ndarray, mode: str, channels: int, size: tuple[int, int] | None = None
            ) -> tuple[np.ndarray, Frame]:
    """The model input (uint8 ``[H, W]`` or ``[H, W, 3]``) for one image, and its frame."""
    if mode not in MODES:
        raise ValueError(f"input mode must be one of {', '.join(MODES)}, got {mode!r}")
    h, w = img.shape[:2]
    img = _channels(img, channels)
    if mode == "keep":
        return img, Frame(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (h, w), (h, w))
    if channels == 1:
        img = _polarity(img)
    if mode == "digit":
        out, m = _digit(img)
        return out, Frame(m, (h, w), (28, 28))
    th, tw = size
    m = np.array([[tw / w, 0, 0], [0, th / h, 0]], dtype=np.float64)
    out = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA if tw < w else cv2.INTER_LINEAR)
    return out, Frame(m, (h, w), (th, tw))
