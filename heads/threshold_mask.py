"""Threshold mask head: a learned per-image intensity threshold, compared with every pixel.

For targets that are a global threshold of the input's intensity (Otsu foreground masks,
document binarization), a per-pixel decoder has to rediscover, at every pixel, one number
that depends on the whole image; near that number its errors pile up. This head predicts
the number once per image, from the encoder's pooled deepest features and a soft
histogram of the input, and scores each pixel by how far its intensity is above it:

    logit = scale * (intensity - threshold(image))

``scale`` is learned (it sharpens as the threshold gets precise). The head needs the raw
input among the features: build the encoder with ``input_skip: true``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from heads.base import Head, positive_int
from zoo.registry import register


def soft_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-image histogram of intensities in [0, 1] with triangular (differentiable) bins: ``[B, bins]``."""
    centers = torch.linspace(0.0, 1.0, bins, device=x.device, dtype=x.dtype)
    flat = x.flatten(1).clamp(0.0, 1.0)
    weights = (1.0 - (flat[..., None] - centers).abs() * (bins - 1)).clamp_min(0.0)
    return weights.mean(1)


@register("heads", "threshold_mask")
class ThresholdMaskHead(Head):
    """Foreground logits ``[B, 1, H, W]`` = scale * (mean input intensity - learned threshold)."""

    needs_input_skip = True  # reads the raw input (features[0] at stride 1)

    def __init__(self, channels: list[int], reductions: list[int], histogram_bins: int = 64, hidden: int = 128,
                 initial_threshold: float = 0.4, initial_scale: float = 64.0) -> None:
        super().__init__(channels, reductions)
        if reductions[0] != 1:
            raise ValueError(
                "threshold_mask compares the raw input with a threshold, so the encoder must pass the input on: "
                "build it with input_skip: true (e.g. --encoder-arg input_skip=true)"
            )
        if not 0.0 < float(initial_threshold) < 1.0:
            raise ValueError(f"initial_threshold must be in (0, 1) (intensities are scaled to [0, 1]), got {initial_threshold!r}")
        if not float(initial_scale) > 0:
            raise ValueError(f"initial_scale must be > 0, got {initial_scale!r}")
        self.bins = positive_int("histogram_bins", histogram_bins, minimum=0) if histogram_bins else 0
        if self.bins == 1:
            raise ValueError("histogram_bins must be 0 (off) or at least 2")
        features = 2 * channels[-1] + self.bins
        self.threshold = nn.Sequential(nn.Linear(features, positive_int("hidden", hidden)), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, 1))
        nn.init.zeros_(self.threshold[-1].weight)
        nn.init.constant_(self.threshold[-1].bias, math.log(initial_threshold / (1 - initial_threshold)))
        self.log_scale = nn.Parameter(torch.tensor(math.log(initial_scale)))

    def thresholds(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The per-image threshold in [0, 1], ``[B]``."""
        x, deep = features[0].float().mean(1), features[-1]
        parts = [deep.mean((2, 3)), deep.amax((2, 3))]
        if self.bins:
            parts.append(soft_histogram(x, self.bins).to(deep.dtype))
        return torch.sigmoid(self.threshold(torch.cat(parts, 1)).float())[:, 0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0].float().mean(1, keepdim=True)
        t = self.thresholds(features)[:, None, None, None]
        return self.log_scale.exp() * (x - t)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return (output[:, 0] > 0).long()
