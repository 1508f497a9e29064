"""Learned global thresholds of an image's intensity: the pieces the threshold heads share.

Two ways to predict one threshold per image (or per tile):

- ``regress``: an MLP on pooled deep features and a soft histogram predicts t in [0, 1];
  a pixel's logit is ``scale * (x - t)`` with a learned ``scale``.
- ``levels``: every one of the 256 intensity levels is scored as the threshold, as classical
  histogram thresholding does (Otsu, Kittler-Illingworth): an MLP shared by all levels
  reads each level's cumulative histogram statistics (fraction of pixels at or below it,
  their mean intensity, the overall mean, the level, the level's own share), the pooled
  deep features add a bias per level, and a softmax over levels gives p(k). A pixel at
  level L is foreground with probability P(k < L): its logit is
  ``log P(k < L) - log P(k >= L)``, and thresholding the logit at 0 cuts at the
  distribution's median. Intensities are read as 256 levels (8-bit images scaled to [0, 1]).

Both give ordinary per-pixel logits, so any mask loss trains them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

MODES = ("regress", "levels")
LEVELS = 256
LEVEL_FEATURES = ("fraction at or below", "mean at or below", "overall mean", "level", "share of the level")


def soft_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-row histogram of intensities in [0, 1] with triangular (differentiable) bins: ``[N, bins]``
    for ``x`` of shape ``[N, ...]``; with 256 bins an 8-bit image's histogram is exact."""
    centers = torch.linspace(0.0, 1.0, bins, device=x.device, dtype=x.dtype)
    flat = x.flatten(1).clamp(0.0, 1.0)
    weights = (1.0 - (flat[..., None] - centers).abs() * (bins - 1)).clamp_min(0.0)
    return weights.mean(1)


class GlobalThreshold(nn.Module):
    """``forward(pixels [N, P] in [0, 1], pooled [N, C]) -> logits [N, P]``: one learned threshold per row."""

    def __init__(self, pooled_channels: int, mode: str = "levels", hidden: int = 128, histogram_bins: int = 64,
                 initial_threshold: float = 0.4, initial_scale: float = 64.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"threshold mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {hidden!r}")
        self.mode = mode
        if mode == "levels":
            self.level_score = nn.Sequential(nn.Linear(len(LEVEL_FEATURES), hidden), nn.ReLU(inplace=True),
                                             nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
            self.level_bias = nn.Linear(pooled_channels, LEVELS)
            nn.init.zeros_(self.level_bias.weight)
            nn.init.zeros_(self.level_bias.bias)
            return
        if isinstance(histogram_bins, bool) or not isinstance(histogram_bins, int) or histogram_bins == 1 or histogram_bins < 0:
            raise ValueError(f"histogram_bins must be 0 (off) or an integer >= 2, got {histogram_bins!r}")
        if not 0.0 < float(initial_threshold) < 1.0:
            raise ValueError(f"initial_threshold must be in (0, 1) (intensities are scaled to [0, 1]), got {initial_threshold!r}")
        if not float(initial_scale) > 0:
            raise ValueError(f"initial_scale must be > 0, got {initial_scale!r}")
        self.bins = histogram_bins
        self.threshold = nn.Sequential(nn.Linear(pooled_channels + histogram_bins, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, 1))
        nn.init.zeros_(self.threshold[-1].weight)
        nn.init.constant_(self.threshold[-1].bias, math.log(initial_threshold / (1 - initial_threshold)))
        self.log_scale = nn.Parameter(torch.tensor(math.log(float(initial_scale))))

    def thresholds(self, pixels: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``regress``: the threshold in [0, 1] per row, ``[N]``."""
        parts = [pooled.float()] + ([soft_histogram(pixels, self.bins)] if self.bins else [])
        return torch.sigmoid(self.threshold(torch.cat(parts, 1)))[:, 0]

    def level_log_probs(self, pixels: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``levels``: log p(threshold = k), ``[N, 256]``."""
        hist = soft_histogram(pixels, LEVELS)
        levels = torch.linspace(0.0, 1.0, LEVELS, device=pixels.device)
        below = hist.cumsum(1)
        mean_below = (hist * levels).cumsum(1) / below.clamp_min(1e-6)
        overall = (hist * levels).sum(1, keepdim=True).expand_as(hist)
        feats = torch.stack([below, mean_below, overall, levels.expand_as(hist), hist * 10], -1)
        score = self.level_score(feats)[..., 0] + self.level_bias(pooled.float())
        return torch.log_softmax(score, 1)

    def forward(self, pixels: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        pixels = pixels.float()
        if self.mode == "regress":
            return self.log_scale.exp() * (pixels - self.thresholds(pixels, pooled)[:, None])
        logp = self.level_log_probs(pixels, pooled)
        floor = torch.full_like(logp[:, :1], -1e4)
        below = torch.cat([floor, torch.logcumsumexp(logp, 1)], 1)  # log P(k < L), L = 0..256
        above = torch.cat([torch.logcumsumexp(logp.flip(1), 1).flip(1), floor], 1)  # log P(k >= L)
        level = (pixels * (LEVELS - 1)).round().long().clamp(0, LEVELS - 1)
        return below.gather(1, level) - above.gather(1, level)
