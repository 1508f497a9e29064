"""Cityscapes (``--data-root``, ``zoo.data.cityscapes``): 7 or 19-class semantics and depth, from MTAN's
preprocessed copy (``train/``, ``val/``) or the official layout (``leftImg8bit/``, ``gtFine/``, ``disparity/``,
``camera/``), whichever the root holds.

The test split is ``val`` (the official test split has no labels); validation for checkpoint selection is a
seeded slice of ``train``, and the row says so. Training images get LibMTL's scale-crop and flip
(``zoo.data.dense_augment``), as Nash-MTL and FAMO train on this copy.
"""
from __future__ import annotations

from pathlib import Path

from zoo.data.cityscapes import CLASS_COUNTS, OFFICIAL, PREPROCESSED, WHERE, scan_official, scan_preprocessed
from zoo.data.config import DataConfig
from zoo.data.idx import DataError
from zoo.data.nyuv2 import DenseScenes
from zoo.data.split import limit, split_indices
from zoo.tasks.base import Task, TaskData, sample_info


class CityscapesTask(Task):
    needs_root = f"the cityscapes task needs --data-root DIR holding {PREPROCESSED}, or {OFFICIAL}; from {WHERE}"
    in_all = False
    labels_optional = True  # the depth variant leaves the labels unused
    mirrors = True  # street scenes: test-time augmentation may average the mirrored image too

    def __init__(self, num_classes: int = 7, size: list[int] | None = None, augment: bool = True) -> None:
        if num_classes not in CLASS_COUNTS or isinstance(num_classes, bool):
            raise ValueError(f"cityscapes task: num_classes is 7 or 19, got {num_classes!r}")
        size = list(size) if size is not None else [128, 256]
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 8 for v in size):
            raise ValueError(f"cityscapes task: size is [H, W], two integers >= 8 (MTAN's copy: [128, 256]), "
                             f"got {size!r}")
        if not isinstance(augment, bool):
            raise ValueError(f"cityscapes task: augment is true or false, got {augment!r}")
        self.num_classes, self.size, self.augment = num_classes, tuple(size), augment

    def datasets(self, data: DataConfig) -> TaskData:
        self.check_data(data)
        root = Path(data.root)
        if (root / "leftImg8bit").is_dir():
            layout = "official"
            (train_all, train_stats), (test_all, test_stats) = (
                scan_official(root, split, self.size, self.num_classes) for split in ("train", "val"))
        elif (root / "train").is_dir() and (root / "val").is_dir():
            layout = "preprocessed"
            (train_all, train_stats), (test_all, test_stats) = (
                scan_preprocessed(root / split, self.size, self.num_classes) for split in ("train", "val"))
        else:
            raise DataError(f"{root}: neither leftImg8bit/ nor train/ and val/; the cityscapes task reads "
                            f"{PREPROCESSED}, or {OFFICIAL}")
        train_idx, val_idx, _ = split_indices(len(train_all), data.val_fraction, 0.0, data.seed, "train images")
        train = [train_all[i] for i in limit(train_idx, data.train_limit)]
        val = [train_all[i] for i in val_idx]
        test = limit(test_all, data.test_limit)
        info = {"data_source": f"{root} ({layout}, {self.num_classes} classes)", **sample_info(train, val, test),
                "num_classes": self.num_classes,
                "validation": (f"a seeded {data.val_fraction:.0%} slice of train (seed {data.seed}, {len(val)} "
                               f"images); test = val ({len(test)} images)"),
                "invalid_pixels": (f"depth train {train_stats.pct(train_stats.depth_invalid)} %, val "
                                   f"{test_stats.pct(test_stats.depth_invalid)} % (NaN/inf: "
                                   f"{train_stats.depth_non_finite + test_stats.depth_non_finite} px); ignored labels "
                                   f"train {train_stats.pct(train_stats.ignored)} %, val "
                                   f"{test_stats.pct(test_stats.ignored)} %")}
        return TaskData(train={"main": DenseScenes(train, self.augment, data.seed)},
                        val={"main": DenseScenes(val)}, test={"main": DenseScenes(test)},
                        info=info, in_channels=3, num_classes=self.num_classes, exclude=[])
