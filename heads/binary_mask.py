"""Binary mask head: a registered decoder (default U-Net) -> one logit channel."""
from __future__ import annotations

from typing import Any

import torch

from zoo.heads.dense import DEFAULT_DECODER, DenseHead


class BinaryMaskHead(DenseHead):
    """Foreground logits ``[B, 1, H, W]``; ``predict`` thresholds at probability 0.5."""

    output_kind = "binary_mask"
    default_loss, default_target = "bce_dice", "mask"  # when the task entry names neither

    export_note = "foreground logits [B, 1, H, W]; mask = logit > 0"

    def __init__(self, channels: list[int], reductions: list[int], decoder: str = DEFAULT_DECODER,
                 decoder_settings: dict[str, Any] | None = None, decoder_channels: list[int] | None = None,
                 attention: str | None = None) -> None:
        super().__init__(channels, reductions)
        self._build(channels, reductions, 1, decoder, decoder_settings, decoder_channels=decoder_channels,
                    attention=attention)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return (output[:, 0] > 0).long()
