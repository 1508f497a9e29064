"""The one seeded train/val/test split every task uses (MNIST, folders, npz, COCO, Pets)."""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from zoo.data.idx import DataError

T = TypeVar("T")


def split_indices(n: int, val_fraction: float, test_fraction: float = 0.0, seed: int = 0,
                  what: str = "items") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded split of ``n`` items: ``(train, val, test)``.

    One permutation by ``seed``: validation is its first ``round(n * val_fraction)`` (at least
    one), test the next ``round(n * test_fraction)`` (at least one when asked for), training the
    rest. No item is in two splits, and every split asked for gets at least one item.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        splits = "train/val/test" if n_test else "train/val"
        raise DataError(f"{n} {what} cannot be split into {splits} (val_fraction={val_fraction}"
                        f"{f', test_fraction={test_fraction}' if n_test else ''}): at least "
                        f"{n_val + n_test + 1} are needed")
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def split_items(items: Sequence[T], val_fraction: float, test_fraction: float = 0.0, seed: int = 0,
                what: str = "items") -> tuple[list[T], list[T], list[T]]:
    """:func:`split_indices` applied to a list."""
    train, val, test = split_indices(len(items), val_fraction, test_fraction, seed, what)
    return [items[i] for i in train], [items[i] for i in val], [items[i] for i in test]


def limit(items, n: int | None):
    """The first ``n`` items (all of them when ``n`` is None); limits are validated >= 1 by DataConfig."""
    return items if n is None else items[:n]
