"""Segmentation from an image folder (``Images/`` + ``Masks/`` index PNGs), e.g. from ``zoo.data export``."""
from __future__ import annotations

import sys
from pathlib import Path

from zoo.data.folder import (FolderDataset, check_class_count, check_readable, check_size, colour_images, find_pairs,
                             scan_classes)
from zoo.data.split import limit, split_items
from zoo.data.config import DataConfig
from zoo.tasks.base import Task, TaskData, sample_info


class FolderTask(Task):
    """N-class segmentation from ``--data-root DIR`` holding ``Images/`` + ``Masks/`` (or ``train/`` and
    ``test/`` subfolders of that shape). ``num_classes: auto`` scans the masks."""
    needs_root = "the folder task needs --data-root DIR (a folder with Images/ and Masks/)"

    in_all = False

    def __init__(self, num_classes: int | str = "auto", channels: int = 1, size: list[int] | None = None,
                 test_fraction: float = 0.2, exclude: list[int] | None = None) -> None:
        if channels not in (1, 3):
            raise ValueError(f"folder task channels must be 1 or 3, got {channels!r}")
        if num_classes != "auto" and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                      or num_classes < 2):
            raise ValueError(f"folder task num_classes must be 'auto' or an integer >= 2, got {num_classes!r}")
        if num_classes != "auto":
            check_class_count(num_classes, f"num_classes={num_classes}")
        self.num_classes, self.channels, self.test_fraction = num_classes, channels, test_fraction
        self.size = check_size(size)
        self.exclude = list(exclude or [])

    def datasets(self, data: DataConfig) -> TaskData:
        self.check_data(data)
        root = Path(data.root)
        if (root / "train").is_dir() and (root / "test").is_dir():
            test = find_pairs(root / "test")
            train, val, _ = split_items(find_pairs(root / "train"), data.val_fraction, 0.0, data.seed, "images")
        else:
            train, val, test = split_items(find_pairs(root), data.val_fraction, self.test_fraction, data.seed, "images")
        train, test = limit(train, data.train_limit), limit(test, data.test_limit)
        for split, pairs in (("train", train), ("val", val), ("test", test)):
            check_readable(f"{root} {split}", [p.image for p in pairs], self.size, [p.mask for p in pairs])
        n = scan_classes([p.mask for p in train + val + test]) if self.num_classes == "auto" else self.num_classes
        n = max(n, 2)
        make = lambda pairs: {"main": FolderDataset(pairs, n, self.channels, self.size)}  # noqa: E731
        info = {"data_source": str(root), **sample_info(train, val, test), "num_classes": n}
        colour = colour_images([p.image for p in train]) if self.channels == 1 else 0
        if colour:  # never a silent conversion: the console and the row say it, and how to keep colour
            info["input_conversion"] = ("colour images read as grey (channels: 1, the folder task's default); "
                                        "--task-arg channels=3 keeps their colour")
            print(f"folder: {colour} of the first {min(8, len(train))} training images hold colour; "
                  f"{info['input_conversion']}", file=sys.stderr)
        return TaskData(train=make(train), val=make(val), test=make(test), in_channels=self.channels,
                        info=info, num_classes=n, exclude=self.exclude)
