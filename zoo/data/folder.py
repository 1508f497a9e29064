"""Image + index-mask folders: ``Images/NAME.(jpg|png)`` and ``Masks/NAME.png``.

The shape ``python -m zoo.data export`` writes, and the one people bring their own data in.
A folder with ``train/`` and ``test/`` subfolders (each holding Images/ and Masks/) gives
those splits; a single folder is split by seeded fractions.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.idx import DataError

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_image(path: Path, channels: int) -> np.ndarray:
    """``[H, W]`` (grayscale) or ``[H, W, 3]`` RGB uint8; an unreadable file is a DataError naming it."""
    # the pixels as stored: OpenCV would rotate a JPEG by its EXIF orientation tag, while masks and
    # annotations (COCO's, pycocotools', torchvision's) are drawn on the stored pixels
    flag = (cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imread(str(path), flag)
    if img is None:
        raise DataError(f"{path}: cannot read the image (missing, corrupt or not an image)")
    return img if channels == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def colour_images(paths: list[Path], sample: int = 8) -> int:
    """How many of the first ``sample`` images hold colour (channels that differ): a grey read of them is a
    conversion the run must state."""
    found = 0
    for path in paths[:sample]:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is not None and img.ndim == 3 and img.shape[2] >= 3 and not (
                np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])):
            found += 1
    return found


def read_mask(path: Path) -> np.ndarray:
    """An index mask: one channel of class indices (8- or 16-bit PNG)."""
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise DataError(f"{path}: cannot read the mask (missing, corrupt or not an image)")
    if m.ndim == 3:
        indices = _palette_indices(path)  # OpenCV expands a palette PNG to colours; its indices are the classes
        if indices is not None:
            return indices
        raise DataError(f"{path}: masks must be single-channel PNGs of class indices, got {m.shape[2]} channels")
    return m


def _palette_indices(path: Path) -> np.ndarray | None:
    """The palette indices of a palette-mode (``P``) image, or None for any other mode."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im).copy() if im.mode == "P" else None
    except (OSError, ValueError):
        return None


def check_size(size: Any, what: str = "size") -> tuple[int, int] | None:
    """``size`` setting: ``None`` (keep each image's size) or ``[H, W]`` of integers >= 1."""
    if size is None:
        return None
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise DataError(f"{what} must be [H, W] with two integers >= 1 (e.g. size=[128, 128]), got {size!r}")
    return int(size[0]), int(size[1])


def probe_image(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (no decoding); unreadable is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DataError(f"{path}: the image does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image (corrupt or not an image): {exc}") from None
    return h, w


def check_readable(split: str, paths: Iterable[Path], size: tuple[int, int] | None,
                   masks: Iterable[Path] | None = None) -> None:
    """Every file of a split is readable before training starts; without ``size`` they must share
    one size (a batch is one tensor); a mask must have its image's size."""
    paths = list(paths)
    sizes = [probe_image(p) for p in paths]
    for p, m, hw in zip(paths, masks or [], sizes):
        mhw = probe_image(m)
        if mhw != hw:
            raise DataError(f"{p} is {hw[1]}x{hw[0]} but its mask {m} is {mhw[1]}x{mhw[0]}; they must match")
    if size is None and len(set(sizes)) > 1:
        first = sizes[0]
        odd = next(p for p, hw in zip(paths, sizes) if hw != first)
        raise DataError(f"{split} images differ in size ({paths[0].name} is {first[1]}x{first[0]}, {odd.name} is "
                        f"{probe_image(odd)[1]}x{probe_image(odd)[0]}); resize them all with --task-arg 'size=[H, W]'")


# More classes than this are instance IDs or raw 16-bit values, not class indices: 65,536 "classes" would
# need a 32 GiB confusion matrix (float64, classes squared) and as many logits per pixel.
MAX_CLASSES = 1024


def check_class_count(n: int, source: str) -> int:
    """``n`` classes, refused above :data:`MAX_CLASSES` with ``source`` (what set the count) named."""
    if n > MAX_CLASSES:
        raise DataError(f"{source} makes {n:,} classes; zoo takes at most {MAX_CLASSES:,} (every pixel would carry "
                        f"{n:,} logits, and the confusion matrix needs {8 * n * n / 2**30:,.1f} GiB): masks hold "
                        "class indices 0..N-1, not instance IDs or 16-bit intensities")
    return n


def scan_classes(masks: list[Path]) -> int:
    """Number of classes = largest mask value + 1 over all masks. A value far from the rest (classes
    between that never occur) is warned about, naming the file that holds it."""
    seen: set[int] = set()
    where: dict[int, Path] = {}
    for path in masks:
        for v in np.unique(read_mask(path)).tolist():
            seen.add(int(v))
            where.setdefault(int(v), path)
    n = max(seen) + 1
    check_class_count(n, f"{where[n - 1]}: its mask value {n - 1}, with num_classes: auto (the largest value + 1),")
    never = sorted(set(range(n)) - seen)
    if never:
        top = max(seen)
        warnings.warn(f"num_classes: auto found {n} classes because {where[top]} holds the value {top}, but "
                      f"class(es) {never} never occur in any mask; check that file or set num_classes", stacklevel=2)
    return n


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Images bilinear, masks nearest (class indices must not blend)."""
    if size is None:
        return image, mask
    h, w = size
    return (cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
            cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST))


def to_sample(image: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
    x = torch.from_numpy(image.astype(np.float32) / 255.0)
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    return {"image": x.contiguous(), "mask": torch.from_numpy(mask.astype(np.int64))}


@dataclass
class Pair:
    image: Path
    mask: Path


def find_pairs(root: Path) -> list[Pair]:
    """Pair ``Images/X.*`` with ``Masks/X.png``; a file without its partner is an error naming it."""
    images_dir, masks_dir = root / "Images", root / "Masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise DataError(f"{root}: missing folder {d.name}/ (a folder dataset holds Images/ and Masks/)")
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_EXT}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() == ".png"}
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images:
        raise DataError(f"{images_dir}: {len(lonely_images)} image(s) without a mask in {masks_dir}, "
                        f"e.g. {images[lonely_images[0]].name}")
    if lonely_masks:
        raise DataError(f"{masks_dir}: {len(lonely_masks)} mask(s) without an image in {images_dir}, "
                        f"e.g. {masks[lonely_masks[0]].name}")
    if not images:
        raise DataError(f"{images_dir}: no images ({', '.join(IMAGE_EXT)})")
    return [Pair(images[k], masks[k]) for k in sorted(images)]


class FolderDataset(Dataset):
    """Image + index-mask pairs, resized to ``size``, masks checked against ``num_classes``."""

    epoch_invariant = True  # no augmentation: the engine may cache the split on the device (zoo.data.device)

    def __init__(self, pairs: list[Pair], num_classes: int, channels: int = 1,
                 size: tuple[int, int] | None = None, binary: bool = False) -> None:
        self.pairs, self.num_classes, self.channels, self.binary = pairs, num_classes, channels, binary
        self.size = tuple(size) if size else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.pairs[i]
        image, mask = read_image(p.image, self.channels), read_mask(p.mask)
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(f"{p.image} is {image.shape[1]}x{image.shape[0]} but its mask {p.mask} is "
                            f"{mask.shape[1]}x{mask.shape[0]}; they must match")
        if int(mask.max()) >= self.num_classes:
            raise DataError(f"{p.mask}: mask value {int(mask.max())} is outside 0..{self.num_classes - 1} "
                            f"(num_classes={self.num_classes})")
        if self.binary:
            mask = (mask > 0).astype(np.uint8)
        image, mask = resize_pair(image, mask, self.size)
        return to_sample(image, mask)
