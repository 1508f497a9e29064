"""N-class segmentation head: a registered decoder (default U-Net) -> N logit channels."""
from __future__ import annotations

from typing import Any

import torch

from zoo.core.layers import positive_int
from zoo.heads.dense import DEFAULT_DECODER, DenseHead


class SegmentationHead(DenseHead):
    """Class logits ``[B, N, H, W]``; ``predict`` takes the arg-max class per pixel."""

    default_loss, default_target = "ce_dice", "mask"  # when the task entry names neither

    export_note = "class logits [B, N, H, W]; class = argmax over dim 1"

    output_kind = "dense_classes"  # (so the task gives it the data's class count)

    def __init__(self, channels: list[int], reductions: list[int], num_classes: int = 11,
                 decoder: str = DEFAULT_DECODER, decoder_settings: dict[str, Any] | None = None,
                 decoder_channels: list[int] | None = None, attention: str | None = None) -> None:
        super().__init__(channels, reductions)
        self.num_classes = positive_int("num_classes", num_classes, minimum=2)
        self._build(channels, reductions, num_classes, decoder, decoder_settings, decoder_channels=decoder_channels,
                    attention=attention)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return output.argmax(1)
