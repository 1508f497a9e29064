"""What the dense heads share: a registered decoder (``decoder: NAME`` plus ``decoder_settings``), then
smp's ``SegmentationHead`` on its output (a convolution, then bilinear upsampling to the input's size)."""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.heads.base import Head
from zoo.heads.decoder import Decoder

DEFAULT_DECODER = "unet"
#: the head settings from before decoders were registered: the U-Net's, given on the head
UNET_HEAD_SETTINGS = ("decoder_channels", "attention")


@functools.lru_cache(maxsize=None)
def _builtin():
    from zoo.core.registry import Registry  # the registry imports no component, so no cycle

    return Registry.load()


def resolve_decoder(decoder: Any, settings: dict[str, Any] | None = None) -> tuple[str, type, dict[str, Any]]:
    """``(name, class, settings)`` of a decoder given by its name in the built-in registry (a head built
    outside ``build_model``) or as the registry entry ``build_model`` found in the caller's registry: the
    entry's default settings under the given ones, checked against the class's signature."""
    from zoo.core.registry import RegistryError, check_settings

    entry = _builtin().entry("decoders", decoder) if isinstance(decoder, str) else decoder
    name, cls, settings = entry.name, entry.obj, {**entry.settings, **(settings or {})}
    if not (isinstance(cls, type) and issubclass(cls, Decoder)):
        raise RegistryError(f"decoder {name!r} ({cls!r}) is not a zoo decoder: subclass zoo.heads.decoder.Decoder "
                            "(it declares out_channels, out_reduction and head_kernel)")
    check_settings(f"decoder {name!r}", cls, settings, fixed=("channels", "reductions"))
    return name, cls, settings


def merge_unet_settings(decoder: str, decoder_settings: dict[str, Any] | None, **legacy: Any) -> dict[str, Any]:
    """The head's own ``decoder_channels``/``attention`` (set before decoders were registered) are the
    U-Net's settings: merged into its ``decoder_settings``, refused with another decoder."""
    if decoder_settings is not None and not isinstance(decoder_settings, dict):
        raise ValueError(f"decoder_settings must be a mapping of decoder {decoder!r}'s settings, got {decoder_settings!r}")
    given = {k: v for k, v in legacy.items() if v is not None}
    settings = dict(decoder_settings or {})
    if not given:
        return settings
    if decoder != DEFAULT_DECODER:
        raise ValueError(f"{', '.join(given)} on the head set the unet decoder; for decoder {decoder!r} give its own "
                         "settings as decoder_settings")
    both = sorted(set(given) & set(settings))
    if both:
        raise ValueError(f"{both[0]} is given twice, on the head and in decoder_settings; give it once")
    return {**settings, **given}


class DenseHead(Head):
    """A head with one value per pixel: ``decoder`` (a registered name; default unet) reads the encoder's
    levels, a ``head_kernel`` convolution gives ``out_channels`` maps, upsampled to the input's size.

    With the default U-Net, the state dict is what it was before decoders were registered
    (``decoder.*``, ``segmentation_head.weight``/``bias``), so older checkpoints load unchanged.
    """

    #: the model pads its input to a multiple of this (and of the encoder's total stride): what the
    #: decoder needs beyond the encoder's stride (PAN halves the deepest map three more times)
    input_multiple: int = 1

    def _build(self, channels: list[int], reductions: list[int], out_channels: int, decoder: Any,
               decoder_settings: dict[str, Any] | None, **unet: Any) -> None:
        name = decoder if isinstance(decoder, str) else decoder.name  # a name, or build_model's registry entry
        settings = merge_unet_settings(name, decoder_settings, **unet)
        name, cls, settings = resolve_decoder(decoder, settings)
        reason = cls.refuse(list(channels), list(reductions), **settings)
        if reason:
            raise ValueError(f"decoder {name!r} cannot serve this encoder (strides {', '.join(map(str, reductions))}): "
                             f"{reason}")
        self.decoder_name = name
        self.decoder = cls(list(channels), list(reductions), **settings)
        k = self.decoder.head_kernel
        self.segmentation_head = nn.Conv2d(self.decoder.out_channels, out_channels, k, padding=k // 2)
        self.input_multiple = self.decoder.input_multiple

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = self.segmentation_head(self.decoder(features))
        if self.decoder.out_reduction != 1:  # smp's SegmentationHead upsampling (align_corners=True)
            r = self.reductions[0]
            size = (features[0].shape[2] * r, features[0].shape[3] * r)
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        return out
