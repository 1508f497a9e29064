"""Where a run's data is and how much of it to use: the data's own settings, so the run config
(``zoo.engine.config``) and the tasks both take them from here, neither from the other."""
from __future__ import annotations

from dataclasses import dataclass


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
