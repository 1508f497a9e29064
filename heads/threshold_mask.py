"""Threshold mask head: one learned intensity threshold per image, compared with every pixel.

For targets that are a global threshold of the input's intensity (Otsu foreground masks,
document binarization), a per-pixel decoder has to rediscover, at every pixel, one number
that depends on the whole image, and near that number its errors pile up. This head
predicts the number once per image (``heads/levels.py``: ``mode: levels`` scores each of
the 256 intensity levels from the image's cumulative histogram plus the encoder's pooled
deepest features; ``mode: regress`` regresses it) and turns it into one logit per pixel.

The head needs the raw input among the features: build the encoder with ``input_skip: true``.
``encoder_features: false`` drops the pooled features: the threshold is a function of the
histogram alone, as Otsu's is, and the head no longer depends on the encoder (in a joint model
no shared feature can move its threshold).
"""
from __future__ import annotations

import torch

from zoo.core.layers import global_pool, require_input_skip
from zoo.heads.base import Head
from zoo.heads.levels import GlobalThreshold


class ThresholdMaskHead(Head):
    """Foreground logits ``[B, 1, H, W]`` from a learned per-image threshold of the mean input intensity."""

    output_kind = "binary_mask"
    default_loss, default_target = "bce", "mask"  # when the task entry names neither

    export_note = "foreground logits [B, 1, H, W] (the learned threshold is in the graph); mask = logit > 0"

    needs_input_skip = True  # reads the raw input (features[0] at stride 1)
    needs_input_size = True  # the histogram must not count the model's padding

    def __init__(self, channels: list[int], reductions: list[int], mode: str = "levels", histogram_bins: int = 64,
                 hidden: int = 128, initial_threshold: float = 0.4, initial_scale: float = 64.0,
                 encoder_features: bool = True) -> None:
        super().__init__(channels, reductions)
        require_input_skip("threshold_mask", reductions)
        if not isinstance(encoder_features, bool):
            raise ValueError(f"encoder_features must be true or false, got {encoder_features!r}")
        self.reads_encoder = encoder_features
        if not encoder_features and mode == "regress" and histogram_bins == 0:
            raise ValueError("encoder_features: false leaves mode 'regress' only the histogram: give histogram_bins >= 2")
        # without encoder features the pooled part has width 0: no level bias (levels), the histogram
        # alone feeds the MLP (regress)
        pooled = 2 * channels[-1] if encoder_features else 0
        self.threshold = GlobalThreshold(pooled, mode, hidden, histogram_bins, initial_threshold, initial_scale)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
        x = features[0].float().mean(1)
        if size is not None:
            x = x[:, : size[0], : size[1]]
        pooled = global_pool(features[-1]) if self.reads_encoder else x.new_zeros(x.shape[0], 0)
        return self.threshold(x.flatten(1), pooled).view_as(x)[:, None]

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return (output[:, 0] > 0).long()
