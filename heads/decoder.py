"""The decoder contract of the dense heads, and the U-Net decoder (the default) built from smp's blocks.

A decoder turns the encoder's levels (``channels``/``reductions``, high to low resolution) into one map
with ``out_channels`` channels at stride ``out_reduction`` of the input. The dense heads put smp's
``SegmentationHead`` on it: a ``head_kernel`` convolution, then bilinear upsampling to the input's size.
``refuse`` says, before anything is built, why a decoder cannot serve an encoder's levels.
"""
from __future__ import annotations

import torch
from torch import nn


class Decoder(nn.Module):
    """What a dense head's decoder declares; subclasses set the three attributes in ``__init__``."""

    out_channels: int
    #: the stride of the output map: the dense head upsamples it by this factor (1: input size already)
    out_reduction: int = 1
    #: the kernel of the convolution the dense head puts on the output (smp's ``SegmentationHead``)
    head_kernel: int = 3
    #: inputs are padded to a multiple of this (besides the encoder's total stride)
    input_multiple: int = 1

    @classmethod
    def refuse(cls, channels: list[int], reductions: list[int], **settings) -> str | None:
        """Why this decoder cannot read levels of these channels and strides (``None``: it can)."""
        return None


def default_decoder_channels(channels: list[int]) -> list[int]:
    """Half the width of each skip, deepest first, plus a full-resolution block; at least 16."""
    rev = list(reversed(channels))
    return [max(16, c // 2) for c in rev[1:]] + [max(16, rev[-1] // 2)]


class SkipDecoder(Decoder):
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
