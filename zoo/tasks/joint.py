"""All three reference tasks on one shared encoder.

Two data streams: ``digits`` (single digits: foreground mask, class, circle) and
``composites`` (2x2 composites: 11-class segmentation). Every training step draws one batch
from each stream; each head sees only the stream it is defined on.
"""
from __future__ import annotations

from typing import Any

from zoo.data.datasets import CompositeDataset, DigitDataset
from zoo.registry import register
from zoo.tasks.base import DataConfig, Task, TaskData
from zoo.tasks.mnist import _augment, mnist_splits


@register("tasks", "joint")
class JointTask(Task):
    streams = ("digits", "composites")

    def __init__(self, train_size: int = 9000, val_size: int = 2000, test_size: int = 10000,
                 labelling: str = "pixel", augment: dict[str, Any] | None = None) -> None:
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.labelling = labelling
        self.augment = _augment(augment)

    def datasets(self, data: DataConfig) -> TaskData:
        s = mnist_splits(data)
        lim = (lambda n: min(n, 4 * data.train_limit)) if data.train_limit else (lambda n: n)
        tlim = (lambda n: min(n, data.test_limit)) if data.test_limit else (lambda n: n)
        sizes = {"train": lim(self.sizes["train"]), "val": lim(self.sizes["val"]), "test": tlim(self.sizes["test"])}

        def streams(split: str, digits, augment, offset: int) -> dict[str, Any]:
            return {"digits": DigitDataset(digits, augment, seed=data.seed),
                    "composites": CompositeDataset(digits, sizes[split], seed=data.seed + offset,
                                                   labelling=self.labelling, augment=augment)}

        info = s.info()
        info.update({f"{k}_composites": v for k, v in sizes.items()})
        return TaskData(train=streams("train", s.train, self.augment, 0), val=streams("val", s.val, None, 1),
                        test=streams("test", s.test, None, 2), info=info)
