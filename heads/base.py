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


def global_pool(features: torch.Tensor) -> torch.Tensor:
    """Global average and max pooling of a feature map ``[B, C, H, W]``: ``[B, 2C]``."""
    return torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1)


def require_input_skip(head: str, reductions: list[int]) -> None:
    """Heads that read the raw input need it first in the feature list, at stride 1."""
    if reductions[0] != 1:
        raise ValueError(f"{head} reads the raw input, so the encoder must pass it on: build it with "
                         "input_skip: true (e.g. --encoder-arg input_skip=true)")


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Validate an integer setting with a clear message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
