"""N-class segmentation head: U-Net decoder -> N logit channels."""
from __future__ import annotations

import torch
from torch import nn

from zoo.heads.base import Head, positive_int
from zoo.heads.decoder import SkipDecoder


class SegmentationHead(Head):
    """Class logits ``[B, N, H, W]``; ``predict`` takes the arg-max class per pixel."""

    default_loss, default_target = "ce_dice", "mask"  # when the task entry names neither

    export_note = "class logits [B, N, H, W]; class = argmax over dim 1"

    output_kind = "dense_classes"  # (so the task gives it the data's class count)

    def __init__(self, channels: list[int], reductions: list[int], num_classes: int = 11,
                 decoder_channels: list[int] | None = None, attention: str | None = None) -> None:
        super().__init__(channels, reductions)
        self.num_classes = positive_int("num_classes", num_classes, minimum=2)
        self.decoder = SkipDecoder(channels, reductions, decoder_channels, attention)
        self.segmentation_head = nn.Conv2d(self.decoder.out_channels, num_classes, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.segmentation_head(self.decoder(features))

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return output.argmax(1)
