"""The three reference tasks, built from real MNIST files."""
from __future__ import annotations

import functools
from typing import Any

from zoo.data.augment import Augment
from zoo.data.datasets import CompositeDataset, DigitDataset
from zoo.data.digits import Splits, split_mnist
from zoo.data.idx import load_mnist
from zoo.registry import register
from zoo.tasks.base import DataConfig, Task, TaskData


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
    return Augment(**settings)


class _DigitTask(Task):
    def __init__(self, augment: dict[str, Any] | None = None) -> None:
        self.augment = _augment(augment)

    def datasets(self, data: DataConfig) -> TaskData:
        s = mnist_splits(data)
        return TaskData(
            train={"main": DigitDataset(s.train, self.augment, seed=data.seed)},
            val={"main": DigitDataset(s.val)},
            test={"main": DigitDataset(s.test)},
            info=s.info(),
        )


@register("tasks", "foreground")
class ForegroundTask(_DigitTask):
    """Binary mask of each digit (Otsu foreground), scored by IoU."""


@register("tasks", "circlization")
class CirclizationTask(_DigitTask):
    """Digit class plus its minimum enclosing circle, scored by accuracy and gated IoU."""


@register("tasks", "semantic")
class SemanticTask(Task):
    """2x2 composites with 11-class pixel labels (digit value 0-9, background 10), scored by Dice.

    ``train_size``/``val_size``/``test_size`` composites per split, each drawn only from that
    split's digits; ``labelling`` is ``pixel`` (default) or ``region``.
    """

    def __init__(self, train_size: int = 20000, val_size: int = 2000, test_size: int = 10000,
                 labelling: str = "pixel", augment: dict[str, Any] | None = None) -> None:
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.labelling = labelling
        self.augment = _augment(augment)

    def datasets(self, data: DataConfig) -> TaskData:
        s = mnist_splits(data)
        limit = (lambda n: min(n, 4 * data.train_limit)) if data.train_limit else (lambda n: n)
        tlimit = (lambda n: min(n, data.test_limit)) if data.test_limit else (lambda n: n)

        def make(split: str, digits, n: int, augment=None, offset: int = 0) -> dict[str, CompositeDataset]:
            return {"main": CompositeDataset(digits, n, seed=data.seed + offset, labelling=self.labelling, augment=augment)}

        info = s.info()
        info.update({f"{k}_composites": v for k, v in
                     {"train": limit(self.sizes["train"]), "val": limit(self.sizes["val"]), "test": tlimit(self.sizes["test"])}.items()})
        return TaskData(
            train=make("train", s.train, info["train_composites"], self.augment),
            val=make("val", s.val, info["val_composites"], offset=1),
            test=make("test", s.test, info["test_composites"], offset=2),
            info=info,
        )
