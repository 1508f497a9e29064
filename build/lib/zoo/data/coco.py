"""COCO instance annotations -> binary or multi-class segmentation, masks built with pycocotools.

Layout under ``--data-root DIR``: ``annotations/instances_<split>.json`` and ``<split>/``
image folders for the splits ``train`` and ``val`` (the COCO names ``train2017``/``val2017``
work too); the test split is COCO's val split and the validation split a seeded slice of
train. Each pixel of a multi-class mask gets its category's contiguous index: categories
sorted by COCO id get 1, 2, ... (0 is background), the mapping is ``category_index``.
Overlaps: objects are painted in order of decreasing area, so where objects overlap the
smaller one (usually in front) wins; ties go to the lower annotation id. Crowd
annotations (RLE) are painted like the others. Annotations with an unknown category or an
invalid polygon are skipped and counted in one warning; images with no annotations are
all background.
"""
from __future__ import annotations

import json
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


def _valid_polygon(poly: Any) -> bool:
    return isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0 and all(
        isinstance(v, (int, float)) for v in poly)


def coco_mask(anns: list[dict], index: dict[int, int], h: int, w: int, binary: bool) -> tuple[np.ndarray, int]:
    """Paint one image's annotations; returns the mask and how many annotations were skipped."""
    from pycocotools import mask as mask_utils

    out = np.zeros((h, w), dtype=np.uint8)
    skipped = 0
    order = sorted(anns, key=lambda a: (-float(a.get("area", 0)), a.get("id", 0)))
    for a in order:
        cls = index.get(a.get("category_id"))
        seg = a.get("segmentation")
        if cls is None or seg is None:
            skipped += 1
            continue
        try:
            if isinstance(seg, list):
                polys = [p for p in seg if _valid_polygon(p)]
                if not polys or len(polys) != len(seg):
                    skipped += 1
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            elif isinstance(seg, dict) and "counts" in seg:
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            else:
                skipped += 1
                continue
            m = mask_utils.decode(rle).astype(bool)
        except Exception:  # pycocotools raises assorted errors on malformed input: count it, go on
            skipped += 1
            continue
        if m.shape != (h, w):
            skipped += 1
            continue
        out[m] = 1 if binary else cls
    return out, skipped


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
        image = read_image(self.image_dir / info["file_name"], self.channels)
        h, w = image.shape[:2]
        if (info.get("height"), info.get("width")) not in ((h, w), (None, None)):
            raise DataError(f"{self.image_dir / info['file_name']} is {w}x{h} but the annotations say "
                            f"{info.get('width')}x{info.get('height')}")
        mask, _ = coco_mask(self.anns.get(info["id"], []), self.index, h, w, self.binary)
        image, mask = resize_pair(image, mask, self.size)
        return to_sample(image, mask)
