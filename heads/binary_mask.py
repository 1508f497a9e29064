"""Binary mask head: U-Net decoder -> one logit channel."""
from __future__ import annotations

import torch
from torch import nn

from zoo.heads.base import Head
from zoo.heads.decoder import SkipDecoder


class BinaryMaskHead(Head):
    """Foreground logits ``[B, 1, H, W]``; ``predict`` thresholds at probability 0.5."""

    output_kind = "binary_mask"
    default_loss, default_target = "bce_dice", "mask"  # when the task entry names neither

    export_note = "foreground logits [B, 1, H, W]; mask = logit > 0"

    def __init__(self, channels: list[int], reductions: list[int], decoder_channels: list[int] | None = None,
                 attention: str | None = None) -> None:
        super().__init__(channels, reductions)
        self.decoder = SkipDecoder(channels, reductions, decoder_channels, attention)
        self.segmentation_head = nn.Conv2d(self.decoder.out_channels, 1, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.segmentation_head(self.decoder(features))

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return (output[:, 0] > 0).long()
