"""The one key of a result row: which run a row is, wherever rows are merged or looked up."""
from __future__ import annotations

from typing import Any

from zoo.core.architectures import DEFAULT_ARCHITECTURE

# world_size: set on rows of runs under torchrun (absent = one process), so a distributed run never
# replaces the one-process row of the same combination
# architecture: set on rows of runs with an architecture other than hard sharing (absent = hard sharing)
# decoder: set on rows of runs whose dense heads were given a decoder other than unet (--decoder; absent = each
# head's own from its task entry, the U-Net unless the entry names another)
KEY = ("task", "encoder", "weighting", "budget_mode", "seed", "world_size", "architecture", "decoder")
OPTIONAL_KEY = frozenset({"world_size", "architecture", "decoder"})  # absent: one process, hard sharing, unet


def row_key(row: dict[str, Any]) -> tuple:
    """The one key of a result row, used wherever rows are merged or looked up."""
    return tuple(row.get(k) for k in KEY)


def row_architecture(row: dict[str, Any]) -> str:
    """The architecture a row (or a saved run config) was trained with: absent means hard sharing."""
    return row.get("architecture") or DEFAULT_ARCHITECTURE
