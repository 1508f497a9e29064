"""COCO tasks: binary or multi-class segmentation from a COCO instances JSON (``zoo.data.coco``).

Layout under ``--data-root DIR``: ``annotations/instances_<split>.json`` and ``<split>/``
image folders for the splits ``train`` and ``val`` (the COCO names ``train2017``/``val2017``
work too); the test split is COCO's val split and the validation split a seeded slice of
train.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from zoo.data.coco import CocoDataset, inside, load_coco, usable
from zoo.data.folder import check_readable, check_size
from zoo.data.idx import DataError
from zoo.data.split import limit, split_items
from zoo.data.config import DataConfig
from zoo.tasks.base import Task, TaskData, sample_info


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    for name in (split, f"{split}2017", f"{split}2014"):
        ann = root / "annotations" / f"instances_{name}.json"
        if ann.is_file():
            return ann, root / name
    raise DataError(f"{root}: no annotations/instances_{split}.json (or {split}2017); a COCO folder holds "
                    f"annotations/instances_<split>.json and <split>/ images")


class CocoTask(Task):
    """Shared by the binary and multi-class COCO tasks."""
    needs_root = "COCO tasks need --data-root DIR (with annotations/ and image folders)"

    in_all = False
    binary = False

    def __init__(self, size: list[int] | None = (256, 256), channels: int = 3,
                 categories: list[str | int] | None = None) -> None:
        self.size = check_size(size)
        if channels not in (1, 3):
            raise ValueError(f"COCO task channels must be 1 or 3, got {channels!r}")
        self.channels, self.categories = channels, categories

    def read_split(self, root: Path, split: str):
        ann_file, image_dir = _split_dirs(root, split)
        data, index, names = load_coco(ann_file, self.categories)
        if not image_dir.is_dir():
            raise DataError(f"{ann_file} has no image folder {image_dir}")
        for img in data["images"]:
            if not isinstance(img, dict) or "file_name" not in img or "id" not in img:
                raise DataError(f"{ann_file}: image entry {img!r:.80} has no 'file_name' or 'id'; every COCO image "
                                "needs both")
        ids: set = set()
        for img in data["images"]:
            if img["id"] in ids:  # two entries of one id would silently share annotations
                raise DataError(f"{ann_file}: image id {img['id']!r} is given to more than one image entry "
                                f"(e.g. {img['file_name']!r}); every image needs its own id")
            ids.add(img["id"])
            inside(image_dir, img["file_name"], links=False)  # never a file outside the image folder
        by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            if a.get("image_id") not in ids:
                raise DataError(f"{ann_file}: annotation {a.get('id')!r} refers to image_id {a.get('image_id')!r}, "
                                f"which is not among the file's {len(ids)} images")
            by_image.setdefault(a["image_id"], []).append(a)
        # counted from the annotations' structure, without decoding a mask (train2017 would take minutes)
        checks = [usable(a, index) for a in data["annotations"]]
        skipped = sum(not ok for ok, _ in checks)
        dropped = sum(n for ok, n in checks if ok)
        if data["annotations"] and skipped == len(data["annotations"]):
            raise DataError(f"{ann_file}: all {skipped} annotation(s) were skipped (unknown or filtered category, "
                            "polygon with fewer than 3 points, or no segmentation such as bbox-only); "
                            "training on empty masks would mean nothing")
        if skipped or dropped:
            warnings.warn(f"{ann_file}: skipped {skipped} annotation(s) with an unknown/filtered category or no "
                          f"usable polygon/RLE, and dropped {dropped} invalid polygon(s) (fewer than 3 points, NaN or "
                          "inf) of annotations that keep their valid ones", stacklevel=2)
        return image_dir, data["images"], by_image, index, names, skipped

    def datasets(self, data: DataConfig) -> TaskData:
        self.check_data(data)
        root = Path(data.root)
        tr_dir, tr_imgs, tr_anns, index, names, skip_tr = self.read_split(root, "train")
        te_dir, te_imgs, te_anns, _, _, skip_te = self.read_split(root, "val")
        train, val, _ = split_items(tr_imgs, data.val_fraction, 0.0, data.seed, "COCO train images")
        train, te_imgs = limit(train, data.train_limit), limit(te_imgs, data.test_limit)
        for split, d, imgs in (("train", tr_dir, train), ("val", tr_dir, val), ("test", te_dir, te_imgs)):
            check_readable(f"{root} {split}", [inside(d, i["file_name"]) for i in imgs], self.size)
        make = lambda d, imgs, anns: {"main": CocoDataset(d, imgs, anns, index, self.binary, self.channels, self.size)}  # noqa: E731
        n = 2 if self.binary else len(names)
        return TaskData(train=make(tr_dir, train, tr_anns), val=make(tr_dir, val, tr_anns), test=make(te_dir, te_imgs, te_anns),
                        in_channels=self.channels,
                        info={"data_source": str(root), **sample_info(train, val, te_imgs), "num_classes": n, "skipped_annotations": skip_tr + skip_te,
                              "category_index": json.dumps({str(k): v for k, v in index.items()})},
                        num_classes=None if self.binary else n)


class CocoSemanticTask(CocoTask):
    """Multi-class COCO segmentation (category -> contiguous index, background 0)."""


class CocoBinaryTask(CocoTask):
    """Binary COCO segmentation: the union of all objects."""

    binary = True
