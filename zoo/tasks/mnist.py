"""The three reference tasks, built from real MNIST files."""
from __future__ import annotations

import functools
from typing import Any

from zoo.data.augment import Augment
from zoo.data.datasets import LABELLINGS, CompositeDataset, DigitDataset
from zoo.data.digits import Splits, split_mnist
from zoo.data.idx import load_mnist
from zoo.core.registry import check_settings
from zoo.data.config import DataConfig, split_counts
from zoo.tasks.base import Task, TaskData


@functools.lru_cache(maxsize=4)
def mnist_splits(data: DataConfig) -> Splits:
    """Load and split MNIST once per data config (the grid reuses it across tasks)."""
    return split_mnist(load_mnist(data.root), val_fraction=data.val_fraction, seed=data.seed,
                       train_limit=data.train_limit, test_limit=data.test_limit)


def _augment(settings: dict[str, Any] | None) -> Augment | None:
    if not settings:
        return None
    if not isinstance(settings, dict):
        raise ValueError(f"augment must be a mapping like {{shift: 2, rotate: 10}}, got {settings!r}")
    check_settings("augment", Augment, settings)
    return Augment(**settings)


def train_digits(info: dict[str, Any]) -> str | None:
    """What an MNIST run trained on, from its data info."""
    if "train_digits" not in info or "val_digits" not in info:
        return None
    train, val = info["train_digits"], info["val_digits"]
    return f"train: {train + val:,} digits (offline MNIST subset; {train:,} train + {val:,} validation)"


class DigitTask(Task):
    def __init__(self, augment: dict[str, Any] | None = None) -> None:
        self.augment = _augment(augment)

    def input_spec(self) -> tuple[str, tuple[int, int] | None]:
        return "digit", (28, 28)  # MNIST's preprocessing: 20-pixel box, centre of mass at the centre

    def describe_data(self, task, info: dict[str, Any]) -> tuple[str | None, str | None]:
        if "test_digits" not in info:
            return None, None
        return f"MNIST test set: the genuine {info['test_digits']:,} test digits", train_digits(info)

    def datasets(self, data: DataConfig) -> TaskData:
        s = mnist_splits(data)
        return TaskData(
            train={"main": DigitDataset(s.train, self.augment, seed=data.seed)},
            val={"main": DigitDataset(s.val)},
            test={"main": DigitDataset(s.test)},
            info=s.info(),
        )


class ForegroundTask(DigitTask):
    """Binary mask of each digit (Otsu foreground), scored by IoU."""


class CirclizationTask(DigitTask):
    """Digit class plus its minimum enclosing circle, scored by accuracy and gated IoU."""


class SemanticTask(Task):
    """2x2 composites with 11-class pixel labels (digit value 0-9, background 10), scored by Dice.

    ``train_size``/``val_size``/``test_size`` composites per split, each drawn only from that
    split's digits; ``labelling`` is ``pixel`` (default) or ``region``.
    """

    def __init__(self, train_size: int = 20000, val_size: int = 2000, test_size: int = 10000,
                 labelling: str = "pixel", augment: dict[str, Any] | None = None) -> None:
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        for split, n in self.sizes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{split}_size must be an integer >= 1 (composites in the {split} split), got {n!r}")
        if labelling not in LABELLINGS:
            raise ValueError(f"labelling must be one of {', '.join(LABELLINGS)}, got {labelling!r}")
        self.labelling = labelling
        self.augment = _augment(augment)

    def input_spec(self) -> tuple[str, tuple[int, int] | None]:
        return "resize", (56, 56)  # a 2x2 grid of 28x28 tiles

    def describe_data(self, task, info: dict[str, Any]) -> tuple[str | None, str | None]:
        if "test_composites" not in info or "test_digits" not in info:
            return None, None
        return (f"{info['test_composites']:,} 2x2 composites of the {info['test_digits']:,} MNIST test digits "
                "(seeded)", train_digits(info))

    def composite_sizes(self, data: DataConfig) -> dict[str, int]:
        """Composites per split; quick runs (limits) cap them at the digit limits."""
        cap = {"train": data.train_limit, "val": data.train_limit, "test": data.test_limit}
        return {k: min(n, cap[k]) if cap[k] else n for k, n in self.sizes.items()}

    def composites(self, digits, split: str, sizes: dict[str, int], seed: int) -> CompositeDataset:
        """One split's composites, from that split's digits only (augmented for training)."""
        offset = {"train": 0, "val": 1, "test": 2}[split]
        return CompositeDataset(digits, sizes[split], seed=seed + offset, labelling=self.labelling,
                                augment=self.augment if split == "train" else None)

    def datasets(self, data: DataConfig) -> TaskData:
        s = mnist_splits(data)
        sizes = self.composite_sizes(data)
        info = s.info()
        info.update(split_counts(sizes, "composites"))
        return TaskData(
            train={"main": self.composites(s.train, "train", sizes, data.seed)},
            val={"main": self.composites(s.val, "val", sizes, data.seed)},
            test={"main": self.composites(s.test, "test", sizes, data.seed)},
            info=info,
        )
