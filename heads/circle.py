"""Circle localization: the digit's minimum enclosing circle (cx, cy, r) in pixels, by one of two heads.

* ``circle`` (:class:`CircleHead`): a U-Net decoder predicts the digit's foreground mask (trained with
  BCE + Dice against the Otsu mask); ``predict`` fits the minimum enclosing circle to the
  predicted mask with OpenCV and rasterizes it. The circle is a deterministic function of
  the foreground, so learning the foreground exactly gives the circle exactly; this is the
  more accurate head on MNIST (see benchmarks/README.md).
* ``circle_regress`` (:class:`CircleRegressHead`): pooled multi-scale features regress (cx, cy, r) in
  pixels directly (trained with a smooth-L1 loss against the true circle); ``predict`` rasterizes that circle.

Both ``predict`` outputs are ``[B, H, W]`` circle masks, scored against the rasterized true
circle by the gated IoU. ``{head: circle, settings: {mode: regress}}``, the spelling registry files and
checkpoints written before the split use, still builds a ``CircleRegressHead`` (``mode: fit``, the default,
a ``CircleHead``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.core.layers import global_pool
from zoo.heads.base import Description, Head
from zoo.heads.decoder import SkipDecoder
from zoo.core.geometry import enclosing_circle, rasterize_circles

#: ``circle``'s ``mode`` setting: which of the two heads it builds
MODES = ("fit", "regress")


class Circles(Head):
    """What both circle heads share: ``circles(output)`` gives ``[B, 3]`` circles (cx, cy, r) in pixels, which
    ``predict`` rasterizes (pixel centres within r) and ``describe`` reports."""

    figure_truth = "circle_mask"  # predictions are circle masks, whatever the head trains on

    def circles(self, output: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        """``[B, 3]`` predicted circles (cx, cy, r) in pixels."""
        raise NotImplementedError

    def mask_size(self, output: torch.Tensor) -> tuple[int, int]:  # pragma: no cover - overridden
        """The size ``predict`` rasterizes at when it is given none."""
        raise NotImplementedError

    def describe(self, output: torch.Tensor, pred: torch.Tensor, to_original) -> Description:
        """The circle (cx, cy, r) in the user's image's pixels."""
        circle = tuple(to_original(*self.circles(output.float())[0].tolist()))
        return Description(dict(zip(("cx", "cy", "r"), circle)), circle=circle)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        h, w = size if size is not None else self.mask_size(output)
        return rasterize_circles(self.circles(output), h, w)


class CircleRegressHead(Circles):
    """``[B, 3]`` (cx, cy, r) in pixels, regressed from pooled multi-scale features."""

    output_kind = "circle"
    default_loss, default_target = "circle_l1", "circle"
    export_note = "circle (cx, cy, r) in pixels [B, 3], in the graph; rasterize pixel centres within r"

    def __init__(self, channels: list[int], reductions: list[int], hidden: int = 256) -> None:
        super().__init__(channels, reductions)
        pooled = sum(channels) * 2
        self.regression_head = nn.Sequential(nn.Linear(pooled, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([global_pool(f) for f in features], 1)
        h, w = (s * self.reductions[0] for s in features[0].shape[2:])
        scale = pooled.new_tensor([w, h, max(h, w) / 2])
        return torch.sigmoid(self.regression_head(pooled).float()) * scale

    def circles(self, output: torch.Tensor) -> torch.Tensor:
        return output.detach().float()

    def mask_size(self, output: torch.Tensor) -> tuple[int, int]:
        raise ValueError("circle head in regress mode (circle_regress) needs the image size to rasterize: "
                         "predict(output, size=(H, W))")


class CircleHead(Circles):
    """``[B, 1, H, W]`` foreground logits; the circle is the one OpenCV fits around the predicted mask.

    Registered as ``circle``, whose ``mode`` setting predates the split: ``mode: regress`` builds a
    :class:`CircleRegressHead` instead (as ``pathlib.Path`` builds a ``PosixPath``), so registry files and
    checkpoints that name it keep their meaning. ``hidden`` is that head's; ``decoder_channels`` this one's."""

    output_kind = "binary_mask"
    default_loss, default_target = "bce_dice", "mask"
    export_note = ("foreground logits [B, 1, H, W]; outside the graph: mask = logit > 0, then OpenCV's minimum "
                   "enclosing circle of the mask (cv2.minEnclosingCircle) gives (cx, cy, r) in pixels")

    # every argument has a default: copy.deepcopy and pickle call ``cls.__new__(cls)`` with none
    def __new__(cls, channels: list[int] | None = None, reductions: list[int] | None = None, mode: str = "fit",
                decoder_channels: list[int] | None = None, hidden: int = 256) -> Circles:
        if mode not in MODES:
            raise ValueError(f"circle head mode must be one of {', '.join(MODES)}, got {mode!r}")
        if cls.chosen({"mode": mode}) is not cls:  # (not a CircleHead, so Python never runs __init__ on it)
            return CircleRegressHead(channels, reductions, hidden=hidden)
        return super().__new__(cls)

    def __init__(self, channels: list[int], reductions: list[int], mode: str = "fit",
                 decoder_channels: list[int] | None = None, hidden: int = 256) -> None:
        super().__init__(channels, reductions)
        self.decoder = SkipDecoder(channels, reductions, decoder_channels)
        self.segmentation_head = nn.Conv2d(self.decoder.out_channels, 1, 3, padding=1)

    @classmethod
    def chosen(cls, settings: dict) -> type[Circles]:
        """The head ``circle`` builds with ``settings``: this one, or :class:`CircleRegressHead` for ``mode: regress``."""
        return CircleRegressHead if settings.get("mode", "fit") == "regress" else cls

    @classmethod
    def defaults(cls, settings: dict) -> tuple[str | None, str | None]:
        """The chosen head's: the foreground mask (BCE + Dice), or the circle itself (smooth L1)."""
        chosen = cls.chosen(settings)
        return super().defaults(settings) if chosen is cls else chosen.defaults(settings)

    @classmethod
    def output_for(cls, settings: dict) -> str:
        """The chosen head's: foreground logits (a binary mask), or the circle itself."""
        chosen = cls.chosen(settings)
        return super().output_for(settings) if chosen is cls else chosen.output_for(settings)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.segmentation_head(self.decoder(features))

    def circles(self, output: torch.Tensor) -> torch.Tensor:
        masks = (output[:, 0] > 0).to("cpu", torch.uint8).numpy()
        fitted = np.array([enclosing_circle(m) for m in masks], dtype=np.float32).reshape(-1, 3)
        return torch.from_numpy(fitted).to(output.device)

    def mask_size(self, output: torch.Tensor) -> tuple[int, int]:
        return tuple(output.shape[-2:])
