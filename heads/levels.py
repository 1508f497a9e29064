"""Learned global thresholds of an image's intensity: the pieces the threshold heads share.

Two ways to predict one threshold per image (or per tile):

- ``regress``: an MLP on pooled deep features and a soft histogram predicts t in [0, 1];
  a pixel's logit is ``scale * (x - t)`` with a learned ``scale``.
- ``levels``: every one of the 256 intensity levels is scored as the threshold, as classical
  histogram thresholding does: a score shared by all levels (an MLP plus a linear term)
  reads the statistics that split at that level defines, the ones the classical criteria
  are built from (Otsu: class weights and means; Kittler-Illingworth: also variances):
  the fraction of pixels at or below / above the level, the two classes' means and
  standard deviations, their logarithms, the level and its own share. The pooled deep
  features add a bias per level, and a softmax over levels gives p(k). A pixel at
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
LEVEL_FEATURES = ("fraction below", "fraction above", "mean below", "mean above", "std below", "std above",
                  "log fraction below", "log fraction above", "log mean gap", "log std below", "log std above",
                  "level", "share of the level")
_EPS = 1e-6


def soft_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-row histogram of intensities in [0, 1] with triangular (differentiable) bins: ``[N, bins]``
    for ``x`` of shape ``[N, ...]``; with 256 bins an 8-bit image's histogram is exact.

    A value between two bin centres splits its unit weight between them in proportion to
    its distance (the triangular kernel), so two scatter-adds build it in O(pixels), not
    O(pixels x bins).
    """
    flat = x.flatten(1).clamp(0.0, 1.0)
    pos = flat * (bins - 1)
    lower = pos.detach().floor().clamp(max=bins - 2)
    frac = pos - lower
    lower = lower.long()
    hist = torch.zeros(flat.shape[0], bins, device=x.device, dtype=flat.dtype)
    hist = hist.scatter_add(1, lower, 1.0 - frac).scatter_add(1, lower + 1, frac)
    return hist / flat.shape[1]


def level_features(pixels: torch.Tensor) -> torch.Tensor:
    """``[N, 256, len(LEVEL_FEATURES)]``: the two classes that a threshold at each level makes."""
    hist = soft_histogram(pixels.float(), LEVELS).double()  # cumulative sums in float64: exact enough
    levels = torch.linspace(0.0, 1.0, LEVELS, device=pixels.device, dtype=hist.dtype)
    w0 = hist.cumsum(1)
    m0, s0 = (hist * levels).cumsum(1), (hist * levels**2).cumsum(1)
    w1, m1, s1 = (w0[:, -1:] - w0).clamp_min(0), m0[:, -1:] - m0, s0[:, -1:] - s0
    mean0, mean1 = m0 / w0.clamp_min(_EPS), m1 / w1.clamp_min(_EPS)
    std0 = (s0 / w0.clamp_min(_EPS) - mean0**2).clamp_min(0).sqrt()
    std1 = (s1 / w1.clamp_min(_EPS) - mean1**2).clamp_min(0).sqrt()

    def log(v: torch.Tensor) -> torch.Tensor:
        return v.clamp_min(_EPS).log() / 10

    feats = [w0, w1, mean0, mean1, std0, std1, log(w0), log(w1), log(mean1 - mean0), log(std0), log(std1),
             levels.expand_as(hist), hist * 10]
    return torch.stack(feats, -1).float()


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
            self.level_linear = nn.Linear(len(LEVEL_FEATURES), 1)
            self.level_bias = nn.Linear(pooled_channels, LEVELS) if pooled_channels else None  # 0: histogram only
            if self.level_bias is not None:
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
        score = (self.level_score(feats := level_features(pixels)) + self.level_linear(feats))[..., 0]
        return torch.log_softmax(score if self.level_bias is None else score + self.level_bias(pooled.float()), 1)

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
