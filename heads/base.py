"""What every head shares."""
from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """A head: ``forward(features) -> Tensor`` (raw logits or parameters) and
    ``predict(output) -> Tensor`` (the hard prediction the metrics score)."""

    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        if len(channels) != len(reductions) or not channels:
            raise ValueError(f"channels {channels} and reductions {reductions} must be non-empty and of equal length")
        self.channels = list(channels)
        self.reductions = list(reductions)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Validate an integer setting with a clear message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
