"""Circle localization head.

Two documented modes, chosen by the ``mode`` setting:

* ``fit`` (default): a U-Net decoder predicts the digit's foreground mask (trained with
  BCE + Dice against the Otsu mask); ``predict`` fits the minimum enclosing circle to the
  predicted mask with OpenCV and rasterizes it. The circle is a deterministic function of
  the foreground, so learning the foreground exactly gives the circle exactly; this is the
  more accurate mode on MNIST (see benchmarks/README.md).
* ``regress``: pooled multi-scale features regress (cx, cy, r) in pixels directly (trained
  with a smooth-L1 loss against the true circle); ``predict`` rasterizes that circle.

Both ``predict`` outputs are ``[B, H, W]`` circle masks, scored against the rasterized true
circle by the gated IoU.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.core.layers import global_pool
from zoo.heads.base import Description, Head
from zoo.heads.decoder import SkipDecoder
from zoo.core.geometry import enclosing_circle, rasterize_circles

MODES = ("fit", "regress")


class CircleHead(Head):
    """``fit``: ``[B, 1, H, W]`` foreground logits; ``regress``: ``[B, 3]`` (cx, cy, r) in pixels."""

    figure_truth = "circle_mask"  # predictions are circle masks, whatever the head trains on
    # the registry's default mode (``settings: {mode: fit}``) and the class's agree
    default_loss, default_target = "bce_dice", "mask"

    @classmethod
    def defaults(cls, settings: dict) -> tuple[str | None, str | None]:
        """``fit`` learns the foreground mask (BCE + Dice); ``regress`` the circle itself (smooth L1)."""
        return ("circle_l1", "circle") if settings.get("mode", "fit") == "regress" else ("bce_dice", "mask")

    @classmethod
    def output_for(cls, settings: dict) -> str:
        """``fit``: foreground logits (a binary mask); ``regress``: the circle itself."""
        return "circle" if settings.get("mode", "fit") == "regress" else "binary_mask"

    def __init__(self, channels: list[int], reductions: list[int], mode: str = "fit",
                 decoder_channels: list[int] | None = None, hidden: int = 256) -> None:
        super().__init__(channels, reductions)
        if mode not in MODES:
            raise ValueError(f"circle head mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.output_kind = self.output_for({"mode": mode})
        self.export_note = ("foreground logits [B, 1, H, W]; outside the graph: mask = logit > 0, then OpenCV's "
                            "minimum enclosing circle of the mask (cv2.minEnclosingCircle) gives (cx, cy, r) in pixels"
                            if mode == "fit" else "circle (cx, cy, r) in pixels [B, 3], in the graph; rasterize "
                            "pixel centres within r")
        if mode == "fit":
            self.decoder = SkipDecoder(channels, reductions, decoder_channels)
            self.segmentation_head = nn.Conv2d(self.decoder.out_channels, 1, 3, padding=1)
        else:
            pooled = sum(channels) * 2
            self.regression_head = nn.Sequential(nn.Linear(pooled, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "fit":
            return self.segmentation_head(self.decoder(features))
        pooled = torch.cat([global_pool(f) for f in features], 1)
        h, w = (s * self.reductions[0] for s in features[0].shape[2:])
        scale = pooled.new_tensor([w, h, max(h, w) / 2])
        return torch.sigmoid(self.regression_head(pooled).float()) * scale

    def describe(self, output: torch.Tensor, pred: torch.Tensor, to_original) -> Description:
        """The circle (cx, cy, r) in the user's image's pixels, in either mode."""
        circle = tuple(to_original(*self.circles(output.float())[0].tolist()))
        return Description(dict(zip(("cx", "cy", "r"), circle)), circle=circle)

    def circles(self, output: torch.Tensor) -> torch.Tensor:
        """``[B, 3]`` predicted circles (cx, cy, r) in pixels."""
        if self.mode == "regress":
            return output.detach().float()
        masks = (output[:, 0] > 0).to("cpu", torch.uint8).numpy()
        fitted = np.array([enclosing_circle(m) for m in masks], dtype=np.float32).reshape(-1, 3)
        return torch.from_numpy(fitted).to(output.device)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        h, w = size if size is not None else (output.shape[-2:] if self.mode == "fit" else (None, None))
        if h is None:
            raise ValueError("circle head in regress mode needs the image size to rasterize: predict(output, size=(H, W))")
        return rasterize_circles(self.circles(output), h, w)
