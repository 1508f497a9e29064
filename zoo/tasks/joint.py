"""All three reference tasks on one shared encoder.

Two data streams: ``digits`` (single digits: foreground mask, class, circle) and
``composites`` (2x2 composites: 11-class segmentation). Every training step draws one batch
from each stream; each head sees only the stream it is defined on.
"""
from __future__ import annotations

from typing import Any

from zoo.data.datasets import DigitDataset
from zoo.data.config import DataConfig, split_counts
from zoo.tasks.base import TaskData
from zoo.tasks.mnist import SemanticTask, mnist_splits


class JointTask(SemanticTask):
    """The semantic task's composites plus the single digits they are made of."""

    streams = ("digits", "composites")
    speed_stream = "composites"  # the costlier stream: a composite is four digits' pixels

    def __init__(self, train_size: int = 9000, val_size: int = 2000, test_size: int = 10000,
                 labelling: str = "pixel", augment: dict[str, Any] | None = None) -> None:
        super().__init__(train_size, val_size, test_size, labelling, augment)

    def datasets(self, data: DataConfig) -> TaskData:
        s = mnist_splits(data)
        sizes = self.composite_sizes(data)

        def streams(split: str, digits) -> dict[str, Any]:
            augment = self.augment if split == "train" else None
            return {"digits": DigitDataset(digits, augment, seed=data.seed),
                    "composites": self.composites(digits, split, sizes, data.seed)}

        info = s.info()
        info.update(split_counts(sizes, "composites"))
        return TaskData(train=streams("train", s.train), val=streams("val", s.val), test=streams("test", s.test),
                        info=info)
