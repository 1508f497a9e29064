"""COCO instance annotations -> binary or multi-class segmentation, masks built with pycocotools.

Layout under ``--data-root DIR``: ``annotations/instances_<split>.json`` and ``<split>/``
image folders for the splits ``train`` and ``val`` (the COCO names ``train2017``/``val2017``
work too); the test split is COCO's val split and the validation split a seeded slice of
train. Each pixel of a multi-class mask gets its category's contiguous index: categories
sorted by COCO id get 1, 2, ... (0 is background), the mapping is ``category_index``.
Overlaps: objects are painted in order of decreasing area, the area of each object's own
decoded mask (the JSON's ``area`` field is not trusted), so where objects overlap the smaller
one (usually in front) wins; where two have the same area the lower annotation id wins. Crowd
annotations (RLE) are painted like the others. An annotation with an unknown category or no
usable segmentation is skipped; invalid polygons (fewer than 3 points, NaN or inf coordinates)
are dropped from an annotation that keeps its valid ones, as pycocotools would draw them; both
are counted in one warning (without decoding any mask). Images are read as their pixels are
stored (no EXIF rotation). Images with no annotations are all background.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.folder import read_image, resize_pair, to_sample
from zoo.data.idx import DataError


def load_coco(ann_file: Path, category_filter: list[str | int] | None = None) -> tuple[dict, dict[int, int], list[str]]:
    """Parse an instances JSON: returns the raw dict, COCO id -> contiguous index, class names."""
    try:
        data = json.loads(Path(ann_file).read_text())
    except FileNotFoundError:
        raise DataError(f"COCO annotation file {ann_file} does not exist") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{ann_file}: not valid JSON: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if key not in data or not isinstance(data[key], list):
            raise DataError(f"{ann_file}: missing list {key!r}; is it a COCO instances file?")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    if category_filter:
        wanted = {str(c) for c in category_filter}
        cats = [c for c in cats if str(c["id"]) in wanted or c["name"] in wanted]
        if not cats:
            names = ", ".join(c["name"] for c in data["categories"])
            raise DataError(f"{ann_file}: category filter {category_filter} matches none of: {names}")
    index = {c["id"]: i + 1 for i, c in enumerate(cats)}
    return data, index, ["background"] + [c["name"] for c in cats]


_NUMBERS = {int, float}


def _valid_polygon(poly: Any) -> bool:
    """At least 3 points of finite numbers (C-level checks: train2017 has 860k polygons). A NaN or inf
    coordinate makes the sum non-finite; so would coordinates near 1e308, which are no image's."""
    return (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0 and set(map(type, poly)) <= _NUMBERS
            and math.isfinite(sum(poly)))


def _valid_rle(seg: Any) -> bool:
    return isinstance(seg, dict) and "counts" in seg and isinstance(seg.get("size"), list) and len(seg["size"]) == 2


def usable(a: dict, index: dict[int, int]) -> tuple[bool, int]:
    """Whether annotation ``a`` can be painted (a known category and a polygon or RLE segmentation), and
    how many of its polygons are dropped as invalid: a structural check, no mask decoded."""
    seg = a.get("segmentation")
    if index.get(a.get("category_id")) is None or seg is None:
        return False, 0
    if isinstance(seg, list):
        valid = sum(_valid_polygon(p) for p in seg)
        return valid > 0, len(seg) - valid
    return _valid_rle(seg), 0


def coco_mask(anns: list[dict], index: dict[int, int], h: int, w: int, binary: bool) -> tuple[np.ndarray, int]:
    """Paint one image's annotations; returns the mask and how many annotations were skipped."""
    from pycocotools import mask as mask_utils

    out = np.zeros((h, w), dtype=np.uint8)
    skipped = 0
    decoded = []
    for a in anns:
        ok, _ = usable(a, index)
        if not ok:
            skipped += 1
            continue
        seg = a["segmentation"]
        try:
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects([p for p in seg if _valid_polygon(p)], h, w))
            else:
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            m = mask_utils.decode(rle).astype(bool)
        except Exception:  # pycocotools raises assorted errors on malformed input: count it, go on
            skipped += 1
            continue
        if m.shape != (h, w):
            skipped += 1
            continue
        decoded.append((int(m.sum()), a.get("id", 0), index[a["category_id"]], m))
    # largest first, and of equal areas the higher id first: what is painted last wins
    for _, _, cls, m in sorted(decoded, key=lambda d: (-d[0], -d[1])):
        out[m] = 1 if binary else cls
    return out, skipped


def inside(root: Path, name: Any, links: bool = True) -> Path:
    """``root / name``, refused when it would leave ``root``: ``../``, an absolute path, and with ``links``
    a symbolic link out (that check touches the file system; start-up checks every name without it,
    and every read checks with it)."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{root}: file_name {name!r} is not a file name")
    path = root / name
    base = os.path.realpath(root) if links else os.path.abspath(root)
    target = os.path.realpath(path) if links else os.path.normpath(os.path.join(base, name))
    if os.path.commonpath([target, base]) != base:
        raise DataError(f"{root}: file_name {name!r} points outside the image folder ({target}); COCO "
                        "file names are relative to it")
    return path


class CocoDataset(Dataset):
    """Images of one COCO split with masks painted on the fly."""

    def __init__(self, image_dir: Path, images: list[dict], anns_by_image: dict[int, list[dict]], index: dict[int, int],
                 binary: bool, channels: int, size: tuple[int, int] | None) -> None:
        self.image_dir, self.images, self.anns, self.index = image_dir, images, anns_by_image, index
        self.binary, self.channels, self.size = binary, channels, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        info = self.images[i]
        image = read_image(inside(self.image_dir, info["file_name"]), self.channels)
        h, w = image.shape[:2]
        if (info.get("height"), info.get("width")) not in ((h, w), (None, None)):
            raise DataError(f"{self.image_dir / info['file_name']} is {w}x{h} but the annotations say "
                            f"{info.get('width')}x{info.get('height')}")
        mask, _ = coco_mask(self.anns.get(info["id"], []), self.index, h, w, self.binary)
        image, mask = resize_pair(image, mask, self.size)
        return to_sample(image, mask)
