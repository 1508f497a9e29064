"""Threshold mask head: a learned per-image intensity threshold, compared with every pixel.

For targets that are a global threshold of the input's intensity (Otsu foreground masks,
document binarization), a per-pixel decoder has to rediscover, at every pixel, one number
that depends on the whole image; near that number its errors pile up. This head predicts
the number once per image, from the encoder's pooled deepest features and a soft
histogram of the input, and scores each pixel by how far its intensity is above it:

    logit = scale * (intensity - threshold(image))

``scale`` is learned (it sharpens as the threshold gets precise). That is ``mode: regress``.

``mode: levels`` instead scores every one of the 256 intensity levels as the threshold, as
classical histogram thresholding does (Otsu, Kittler-Illingworth): a small MLP shared by all
levels reads each level's cumulative histogram statistics (the fraction of pixels at or
below it, their mean intensity, the image mean, the level, the level's own share), the
pooled deep features add a bias per level, and a softmax over levels gives the threshold's
distribution p(k). A pixel at level L is foreground with probability P(k < L), so the
output is still one logit per pixel, ``log P(k < L) - log P(k >= L)``, trained by any mask
loss; the prediction thresholds at the distribution's median. Intensities are read as 256
levels (uint8 images scaled to [0, 1]).

The head needs the raw input among the features: build the encoder with ``input_skip: true``.
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


MODES = ("regress", "levels")
LEVELS = 256
LEVEL_FEATURES = ("fraction at or below", "mean at or below", "image mean", "level", "share of the level")


@register("heads", "threshold_mask")
class ThresholdMaskHead(Head):
    """Foreground logits ``[B, 1, H, W]`` = scale * (mean input intensity - learned threshold)."""

    needs_input_skip = True  # reads the raw input (features[0] at stride 1)

    def __init__(self, channels: list[int], reductions: list[int], mode: str = "regress", histogram_bins: int = 64,
                 hidden: int = 128, initial_threshold: float = 0.4, initial_scale: float = 64.0) -> None:
        super().__init__(channels, reductions)
        if mode not in MODES:
            raise ValueError(f"threshold_mask mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
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
        if mode == "levels":
            self.level_score = nn.Sequential(nn.Linear(len(LEVEL_FEATURES), hidden), nn.ReLU(inplace=True),
                                             nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
            self.level_bias = nn.Linear(2 * channels[-1], LEVELS)
            nn.init.zeros_(self.level_bias.weight)
            nn.init.zeros_(self.level_bias.bias)
            del self.threshold, self.log_scale

    def level_log_probs(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``mode: levels``: log p(threshold = k) for the 256 levels, ``[B, 256]``."""
        x, deep = features[0].float().mean(1), features[-1]
        hist = soft_histogram(x, LEVELS)
        levels = torch.linspace(0.0, 1.0, LEVELS, device=x.device)
        below = hist.cumsum(1)
        mean_below = (hist * levels).cumsum(1) / below.clamp_min(1e-6)
        total_mean = (hist * levels).sum(1, keepdim=True).expand_as(hist)
        feats = torch.stack([below, mean_below, total_mean, levels.expand_as(hist), hist * 10], -1)
        score = self.level_score(feats)[..., 0]
        pooled = torch.cat([deep.mean((2, 3)), deep.amax((2, 3))], 1)
        return torch.log_softmax(score + self.level_bias(pooled).float(), 1)

    def _level_logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0].float().mean(1)
        logp = self.level_log_probs(features)
        floor = torch.full_like(logp[:, :1], -1e4)
        below = torch.cat([floor, torch.logcumsumexp(logp, 1)], 1)  # log P(k < L), L = 0..256
        above = torch.cat([torch.logcumsumexp(logp.flip(1), 1).flip(1), floor], 1)  # log P(k >= L)
        level = (x * (LEVELS - 1)).round().long().clamp(0, LEVELS - 1).flatten(1)
        logit = below.gather(1, level) - above.gather(1, level)
        return logit.view(x.shape)[:, None]

    def thresholds(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``mode: regress``: the per-image threshold in [0, 1], ``[B]``."""
        x, deep = features[0].float().mean(1), features[-1]
        parts = [deep.mean((2, 3)), deep.amax((2, 3))]
        if self.bins:
            parts.append(soft_histogram(x, self.bins).to(deep.dtype))
        return torch.sigmoid(self.threshold(torch.cat(parts, 1)).float())[:, 0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "levels":
            return self._level_logits(features)
        x = features[0].float().mean(1, keepdim=True)
        t = self.thresholds(features)[:, None, None, None]
        return self.log_scale.exp() * (x - t)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return (output[:, 0] > 0).long()
