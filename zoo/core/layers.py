"""Small blocks and setting checks that heads and architectures share (as timm keeps its ``layers/``
apart from its models): they live below both, so neither reads the other for them."""
from __future__ import annotations

import torch


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
