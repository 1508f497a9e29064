"""Segmentation from an image folder (``Images/`` + ``Masks/`` index PNGs), e.g. from ``zoo.data export``."""
from __future__ import annotations

import numpy as np

from pathlib import Path

from zoo.data.folder import FolderDataset, find_pairs, read_mask
from zoo.data.idx import DataError
from zoo.registry import register
from zoo.tasks.base import DataConfig, Task, TaskData


def split_pairs(pairs: list, val_fraction: float, test_fraction: float, seed: int):
    """Seeded train/val/test split of one list; every split asked for gets at least one item,
    and no item is in two splits."""
    needed = 3 if test_fraction > 0 else 2
    if len(pairs) < needed:
        raise DataError(f"need at least {needed} items to split into train/val{'/test' if needed == 3 else ''}, "
                        f"found {len(pairs)}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, int(round(len(pairs) * val_fraction)))
    n_test = max(1, int(round(len(pairs) * test_fraction))) if test_fraction > 0 else 0
    pick = lambda idx: [pairs[i] for i in idx]  # noqa: E731
    return pick(order[n_val + n_test:]), pick(order[:n_val]), pick(order[n_val:n_val + n_test])


def scan_classes(pairs: list) -> int:
    """Number of classes = largest mask value + 1 over all masks."""
    return int(max(int(read_mask(p.mask).max()) for p in pairs)) + 1


@register("tasks", "folder")
class FolderTask(Task):
    """N-class segmentation from ``--data-root DIR`` holding ``Images/`` + ``Masks/`` (or ``train/`` and
    ``test/`` subfolders of that shape). ``num_classes: auto`` scans the masks."""

    in_all = False

    def __init__(self, num_classes: int | str = "auto", channels: int = 1, size: list[int] | None = None,
                 test_fraction: float = 0.2, exclude: list[int] | None = None) -> None:
        if channels not in (1, 3):
            raise ValueError(f"folder task channels must be 1 or 3, got {channels!r}")
        self.num_classes, self.channels, self.test_fraction = num_classes, channels, test_fraction
        self.size = tuple(size) if size else None
        self.exclude = list(exclude or [])

    def datasets(self, data: DataConfig) -> TaskData:
        if not data.root:
            raise DataError("the folder task needs --data-root DIR (a folder with Images/ and Masks/)")
        root = Path(data.root)
        if (root / "train").is_dir() and (root / "test").is_dir():
            train_all, test = find_pairs(root / "train"), find_pairs(root / "test")
            train, val, _ = split_pairs(train_all, data.val_fraction, 0.0, data.seed)
        else:
            train, val, test = split_pairs(find_pairs(root), data.val_fraction, self.test_fraction, data.seed)
        if data.train_limit:
            train = train[: data.train_limit]
        if data.test_limit:
            test = test[: data.test_limit]
        n = scan_classes(train + val + test) if self.num_classes == "auto" else int(self.num_classes)
        n = max(n, 2)
        make = lambda pairs: {"main": FolderDataset(pairs, n, self.channels, self.size)}  # noqa: E731
        return TaskData(train=make(train), val=make(val), test=make(test), in_channels=self.channels,
                        info={"data_source": str(root), "train_digits": len(train), "val_digits": len(val),
                              "test_digits": len(test), "num_classes": n},
                        head_settings={"seg": {"num_classes": n}},
                        metric_settings={"seg": {"num_classes": n, "exclude": [c for c in self.exclude if c < n]}})
