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
from zoo.tasks.mnist import SemanticTask, mnist_splits, train_digits


class JointTask(SemanticTask):
    """The semantic task's composites plus the single digits they are made of."""

    streams = ("digits", "composites")
    speed_stream = "composites"  # the costlier stream: a composite is four digits' pixels

    def __init__(self, train_size: int = 9000, val_size: int = 2000, test_size: int = 10000,
                 labelling: str = "pixel", augment: dict[str, Any] | None = None) -> None:
        super().__init__(train_size, val_size, test_size, labelling, augment)

    def describe_data(self, task, info: dict[str, Any]) -> tuple[str | None, str | None]:
        if "test_composites" not in info or "test_digits" not in info:
            return None, None
        names = {stream: ", ".join(m.name for m in task.metrics if task.stream_of(m.settings.get("head")) == stream)
                 for stream in self.streams}
        return (f"the genuine {info['test_digits']:,} MNIST test digits ({names['digits']}) and "
                f"{info['test_composites']:,} 2x2 composites of them ({names['composites']})", train_digits(info))

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
