"""A U-Net decoder over an encoder's skips, built from segmentation-models-pytorch's blocks."""
from __future__ import annotations

import torch
from torch import nn


def default_decoder_channels(channels: list[int]) -> list[int]:
    """Half the width of each skip, deepest first, plus a full-resolution block; at least 16."""
    rev = list(reversed(channels))
    return [max(16, c // 2) for c in rev[1:]] + [max(16, rev[-1] // 2)]


class SkipDecoder(nn.Module):
    """smp's ``UnetDecoder`` driven by any encoder that meets the zoo contract.

    smp's decoder expects a stride-1 entry first (it only reads its size) and drops it as a
    skip; we prepend an empty tensor of the input's size, so an encoder whose first map is
    already stride 1 (the scratch U-Net) keeps it as a skip, and the output always has the
    input's resolution.
    """

    def __init__(self, channels: list[int], reductions: list[int], decoder_channels: list[int] | None = None,
                 attention: str | None = None) -> None:
        super().__init__()
        # imported here: smp imports timm (seconds), which models without a decoder never need
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        decoder_channels = list(decoder_channels or default_decoder_channels(channels))
        if len(decoder_channels) != len(channels):
            raise ValueError(
                f"decoder_channels needs one width per encoder level ({len(channels)}), got {decoder_channels}"
            )
        self.first_reduction = reductions[0]
        self.decoder = UnetDecoder(encoder_channels=[0] + list(channels), decoder_channels=decoder_channels,
                                   n_blocks=len(decoder_channels), attention_type=attention)
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        f0 = features[0]
        r = self.first_reduction
        full = f0.new_empty(f0.shape[0], 0, f0.shape[2] * r, f0.shape[3] * r)
        return self.decoder([full, *features])
