"""Where a run's data is and how much of it to use: the data's own settings, so the run config
(``zoo.engine.config``) and the tasks both take them from here, neither from the other."""
from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")
#: what a result row counts a split in: MNIST rows count digits, the other datasets samples, and a
#: task with a second stream of composites counts those too (``train_composites``)
COUNT_UNITS = ("digits", "samples", "composites")


def split_counts(sizes: dict[str, int], unit: str) -> dict[str, int]:
    """``{split: n}`` as a result row's count columns: ``{"train_<unit>": n, ...}``."""
    if unit not in COUNT_UNITS:
        raise ValueError(f"count unit must be one of {COUNT_UNITS}, got {unit!r}")
    return {f"{split}_{unit}": n for split, n in sizes.items()}


def is_count(column: str) -> bool:
    """A data-count column (``val_digits``), not a metric (``val_iou``)."""
    split, _, unit = column.partition("_")
    return split in SPLITS and unit in COUNT_UNITS


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how much of it to use."""

    root: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    train_limit: int | None = None  # digits/images, for quick runs
    test_limit: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction!r}")
        for name in ("train_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name.replace('_', ' ')} must be an integer >= 1 (leave it out for the whole "
                                 f"split), got {v!r}")
