"""A task with partial labels: MNIST digits, half labelled for foreground only (the mask) and
half for classification only (the class), trained as one two-head model."""
from __future__ import annotations

from typing import Any

from zoo.data.datasets import DigitDataset
from zoo.data.partial import PartialLabels
from zoo.data.config import DataConfig
from zoo.tasks.base import TaskData
from zoo.tasks.mnist import DigitTask, mnist_splits


class MixedDigitsTask(DigitTask):
    """Training digits ``i < mask_share * n`` carry only ``mask``; the rest only ``label``.
    Validation and test digits carry both, so both heads are scored on every digit."""

    in_all = False  # an example of partial labels, not a reference task

    def __init__(self, mask_share: float = 0.5, augment: dict[str, Any] | None = None) -> None:
        if not 0 < mask_share < 1:
            raise ValueError(f"mask_share must be between 0 and 1 (the share of digits labelled for the mask only), "
                             f"got {mask_share!r}")
        super().__init__(augment)
        self.mask_share = float(mask_share)

    def datasets(self, data: DataConfig) -> TaskData:
        s = mnist_splits(data)
        train = DigitDataset(s.train, self.augment, seed=data.seed)
        cut = round(self.mask_share * len(train))
        partial = PartialLabels(train, ("mask", "label"), lambda i: {"mask"} if i < cut else {"label"})
        info = s.info()
        info.update({f"train_{t}_labelled": n for t, n in partial.counts().items()})
        return TaskData(train={"main": partial}, val={"main": DigitDataset(s.val)}, test={"main": DigitDataset(s.test)},
                        info=info)
