"""smp's own decoder modules (not copies) on zoo's encoder contract.

smp's decoders read a list indexed by stride: entry ``i`` is the encoder's map at stride ``2**i`` (entry 0
is the input's resolution; a dilated encoder repeats its last stride). ``Pyramid`` reads zoo's levels that
way: the stride-1 levels (the scratch encoder's first, the raw input of ``input_skip``) become entry 0,
concatenated, or a 0-channel placeholder of the input's size (smp passes the image there, and its
decoders read only its size); a stride the encoder lacks below its first level (a transformer's
stride 2) is a 0-channel placeholder, as smp's ``TimmUniversalEncoder`` makes it. Each wrapper below
builds one smp decoder on that list, declares which entries it reads, the stride of its output and the
kernel of its segmentation convolution (smp's ``model.py``), and says why it refuses levels it cannot
read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo.heads.decoder import Decoder


def _strides(reductions: list[int]) -> str:
    return ", ".join(map(str, reductions))


@dataclass(frozen=True)
class Pyramid:
    """zoo's levels as smp's stride-indexed list: ``channels[i]``/``strides[i]`` of entry ``i``;
    ``source[i]`` the zoo levels that make it (several for entry 0, none for a placeholder)."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    source: tuple[tuple[int, ...], ...]

    @property
    def depth(self) -> int:
        """smp's ``encoder_depth``: the entries below stride 1."""
        return len(self.channels) - 1

    @property
    def doubling(self) -> bool:
        """Entry ``i`` really is at stride ``2**i`` (no dilated level)."""
        return all(s == 2**i for i, s in enumerate(self.strides))

    @classmethod
    def read(cls, channels: list[int], reductions: list[int]) -> "Pyramid | str":
        """The pyramid of these levels, or why they are not one (the reason, as a string)."""
        full = [i for i, r in enumerate(reductions) if r == 1]
        if full != list(range(len(full))):
            return f"its stride-1 levels must come first (strides {_strides(reductions)})"
        chans, strides, source = [sum(channels[i] for i in full)], [1], [tuple(full)]
        for i in range(len(full), len(reductions)):
            r, expected = reductions[i], 2 * strides[-1]
            while r > expected and not any(source[1:]):  # a stride the encoder lacks below its first level
                chans.append(0)
                strides.append(expected)
                source.append(())
                expected *= 2
            if r != expected and not (r == strides[-1] and source[-1]):  # neither the next stride nor dilated
                return f"smp's decoders read strides that double from 2 (or repeat, dilated); got {_strides(reductions)}"
            chans.append(channels[i])
            strides.append(r)
            source.append((i,))
        return cls(tuple(chans), tuple(strides), tuple(source))

    def features(self, levels: list[torch.Tensor], first_reduction: int) -> list[torch.Tensor]:
        """smp's list from zoo's feature maps."""
        f0 = levels[0]
        h, w = f0.shape[2] * first_reduction, f0.shape[3] * first_reduction
        out = []
        for i, src in enumerate(self.source):
            if len(src) == 1:
                out.append(levels[src[0]])
            elif src:
                out.append(torch.cat([levels[j] for j in src], 1))
            else:  # a 0-channel placeholder of the entry's size: smp reads only its shape
                s = self.strides[i]
                out.append(f0.new_empty(f0.shape[0], 0, h // s, w // s))
        return out


class SmpDecoder(Decoder):
    """One smp decoder module (``self.decoder``) on a ``Pyramid`` of the encoder's levels."""

    #: smp's decoders that need an encoder depth of at least this
    min_depth = 1
    #: the decoder upsamples by fixed factors of 2, so every level must be at stride ``2**i``
    needs_doubling = False

    @classmethod
    def reads(cls, depth: int) -> range:
        """The pyramid entries the decoder reads as features (placeholders there are refused)."""
        return range(1, depth + 1)

    @classmethod
    def check(cls, pyramid: Pyramid, **settings) -> str | None:
        """A decoder's own condition on the pyramid (``None``: it can read it)."""
        return None

    @classmethod
    def refuse(cls, channels: list[int], reductions: list[int], **settings) -> str | None:
        pyramid = Pyramid.read(channels, reductions)
        if isinstance(pyramid, str):
            return pyramid
        if pyramid.depth < cls.min_depth:
            need = ", ".join(str(2**i) for i in range(1, cls.min_depth + 1))
            return (f"it needs at least {cls.min_depth} levels below stride 1 (strides {need}); the encoder gives "
                    f"strides {_strides(reductions)}")
        if cls.needs_doubling and not pyramid.doubling:
            return (f"it upsamples by fixed factors of 2, so it needs undilated levels (strides doubling: 2, 4, 8, "
                    f"...); the encoder gives {_strides(reductions)} (drop its output_stride)")
        missing = [pyramid.strides[i] for i in cls.reads(pyramid.depth) if not pyramid.source[i]]
        if missing:
            return (f"it reads the encoder's stride-{missing[0]} level, which this encoder lacks (strides "
                    f"{_strides(reductions)})")
        return cls.check(pyramid, **settings)

    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        reason = self.refuse(channels, reductions)
        if reason:
            raise ValueError(f"{type(self).__name__} cannot read this encoder: {reason}")
        self.pyramid = Pyramid.read(channels, reductions)
        self.first_reduction = reductions[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.pyramid.features(features, self.first_reduction))


def _widths(decoder_channels: list[int] | None, depth: int) -> list[int]:
    """smp's default U-Net-style widths (256, 128, 64, 32, 16), the last ``depth`` of them."""
    widths = list(decoder_channels) if decoder_channels is not None else [256, 128, 64, 32, 16, 16][-depth:]
    if len(widths) != depth:
        raise ValueError(f"decoder_channels needs one width per pyramid level below stride 1 ({depth}), got {widths}")
    return widths


class UnetPlusPlus(SmpDecoder):
    """smp's ``UnetPlusPlusDecoder`` (Zhou et al., 2018): nested dense skips; output at stride 1."""

    needs_doubling = True

    def __init__(self, channels: list[int], reductions: list[int], decoder_channels: list[int] | None = None,
                 attention: str | None = None, use_norm: str | bool = "batchnorm",
                 interpolation: str = "nearest") -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.unetplusplus.decoder import UnetPlusPlusDecoder

        widths = _widths(decoder_channels, self.pyramid.depth)
        self.decoder = UnetPlusPlusDecoder(list(self.pyramid.channels), widths, n_blocks=len(widths), use_norm=use_norm,
                                           attention_type=attention, interpolation_mode=interpolation)
        self.out_channels, self.out_reduction, self.head_kernel = widths[-1], 1, 3


class FPN(SmpDecoder):
    """smp's ``FPNDecoder`` (Kirillov et al., Panoptic FPN, 2019) on the four deepest levels."""

    min_depth = 3
    needs_doubling = True

    @classmethod
    def reads(cls, depth: int) -> range:
        return range(depth - 3, depth + 1)

    def __init__(self, channels: list[int], reductions: list[int], pyramid_channels: int = 256,
                 segmentation_channels: int = 128, merge_policy: str = "add", dropout: float = 0.2,
                 interpolation: str = "nearest") -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

        if segmentation_channels % 32:  # smp normalises them with GroupNorm(32, ...)
            raise ValueError(f"decoder 'fpn': segmentation_channels must be a multiple of 32 (smp's GroupNorm of 32 "
                             f"groups), got {segmentation_channels}")

        p = self.pyramid
        self.decoder = FPNDecoder(list(p.channels), p.depth, pyramid_channels, segmentation_channels, dropout,
                                  merge_policy, interpolation)
        self.out_channels, self.out_reduction, self.head_kernel = self.decoder.out_channels, p.strides[p.depth - 3], 1


class PSPNet(SmpDecoder):
    """smp's ``PSPDecoder`` (Zhao et al., 2017): pyramid pooling of the deepest level. smp's PSPNet cuts
    its encoder at depth 3 (stride 8); here it reads the encoder's deepest level, whatever its stride
    (``--encoder-arg 'out_indices=[0,1,2]'`` cuts a timm encoder as smp does)."""

    @classmethod
    def reads(cls, depth: int) -> range:
        return range(depth, depth + 1)

    def __init__(self, channels: list[int], reductions: list[int], out_channels: int = 512,
                 use_norm: str | bool = "batchnorm", dropout: float = 0.2) -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.pspnet.decoder import PSPDecoder

        self.decoder = PSPDecoder(list(self.pyramid.channels), use_norm, out_channels, dropout)
        self.out_channels, self.out_reduction, self.head_kernel = out_channels, self.pyramid.strides[-1], 3


class DeepLabV3(SmpDecoder):
    """smp's ``DeepLabV3Decoder`` (Chen et al., 2017): ASPP on the deepest level. smp dilates its encoder
    to output stride 8 (``--encoder-arg output_stride=8`` does that to a timm encoder); any stride works."""

    @classmethod
    def reads(cls, depth: int) -> range:
        return range(depth, depth + 1)

    def __init__(self, channels: list[int], reductions: list[int], out_channels: int = 256,
                 atrous_rates: list[int] = (12, 24, 36), aspp_separable: bool = False,
                 aspp_dropout: float = 0.5) -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3Decoder

        self.decoder = DeepLabV3Decoder(self.pyramid.channels[-1], out_channels, tuple(atrous_rates), aspp_separable,
                                        aspp_dropout)
        self.out_channels, self.out_reduction, self.head_kernel = out_channels, self.pyramid.strides[-1], 1


class DeepLabV3Plus(SmpDecoder):
    """smp's ``DeepLabV3PlusDecoder`` (Chen et al., 2018): ASPP on the deepest level, upsampled 4x (output
    stride 16) or 2x (8) onto the stride-4 level."""

    min_depth = 3

    @classmethod
    def reads(cls, depth: int) -> range:
        return range(2, depth + 1, depth - 2)  # the stride-4 level and the deepest

    @staticmethod
    def _scale(pyramid: Pyramid) -> int:  # smp's rule (decoder.py)
        return 4 if pyramid.strides[-1] == 16 and pyramid.depth > 3 else 2

    @classmethod
    def check(cls, pyramid: Pyramid, **settings) -> str | None:
        if pyramid.strides[-1] // pyramid.strides[2] != cls._scale(pyramid) or pyramid.strides[-1] not in (8, 16):
            return (f"it needs an output stride of 8 or 16 (smp upsamples the deepest level 2x or 4x onto stride 4); "
                    f"the encoder's deepest level is at stride {pyramid.strides[-1]}: build it with "
                    "--encoder-arg output_stride=16 (a timm encoder)")
        return None

    def __init__(self, channels: list[int], reductions: list[int], out_channels: int = 256,
                 atrous_rates: list[int] = (12, 24, 36), aspp_separable: bool = True,
                 aspp_dropout: float = 0.5) -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder

        p = self.pyramid
        self.decoder = DeepLabV3PlusDecoder(list(p.channels), p.depth, out_channels, tuple(atrous_rates),
                                            p.strides[-1], aspp_separable, aspp_dropout)
        self.out_channels, self.out_reduction, self.head_kernel = out_channels, p.strides[2], 1


class Linknet(SmpDecoder):
    """smp's ``LinknetDecoder`` (Chaurasia & Culurciello, 2017): transposed-conv blocks adding each skip."""

    needs_doubling = True

    def __init__(self, channels: list[int], reductions: list[int], prefinal_channels: int = 32,
                 use_norm: str | bool = "batchnorm") -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.linknet.decoder import LinknetDecoder

        self.decoder = LinknetDecoder(list(self.pyramid.channels), prefinal_channels, self.pyramid.depth, use_norm)
        self.out_channels, self.out_reduction, self.head_kernel = prefinal_channels, 1, 1


class MAnet(SmpDecoder):
    """smp's ``MAnetDecoder`` (Fan et al., 2020): position and multi-scale fusion attention blocks."""

    needs_doubling = True

    def __init__(self, channels: list[int], reductions: list[int], decoder_channels: list[int] | None = None,
                 pab_channels: int = 64, use_norm: str | bool = "batchnorm", interpolation: str = "nearest") -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.manet.decoder import MAnetDecoder

        widths = _widths(decoder_channels, self.pyramid.depth)
        self.decoder = MAnetDecoder(list(self.pyramid.channels), widths, len(widths), use_norm=use_norm,
                                    pab_channels=pab_channels, interpolation_mode=interpolation)
        self.out_channels, self.out_reduction, self.head_kernel = widths[-1], 1, 3


class PAN(SmpDecoder):
    """smp's ``PANDecoder`` (Li et al., Pyramid Attention Network, 2018): feature pyramid attention on the
    deepest level, global attention upsampling onto strides 16 (with five levels), 8 and 4. smp reads
    three to five levels; its attention block halves the deepest map three times, so inputs are padded
    to a multiple of 8 x the deepest stride (smp dilates its encoder to output stride 16 for that)."""

    min_depth = 3

    @classmethod
    def reads(cls, depth: int) -> range:
        return range(2, depth + 1)

    @classmethod
    def check(cls, pyramid: Pyramid, **settings) -> str | None:
        if pyramid.depth > 5:
            return f"it reads at most five levels below stride 1 (strides 2-32, smp's PAN); the encoder has {pyramid.depth}"
        return None

    def __init__(self, channels: list[int], reductions: list[int], decoder_channels: int = 32,
                 interpolation: str = "bilinear") -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.pan.decoder import PANDecoder

        p = self.pyramid
        self.decoder = PANDecoder(list(p.channels), p.depth, decoder_channels, interpolation)
        self.out_channels, self.out_reduction, self.head_kernel = decoder_channels, p.strides[2], 3
        self.input_multiple = 8 * p.strides[-1]


class UPerNet(SmpDecoder):
    """smp's ``UPerNetDecoder`` (Xiao et al., Unified Perceptual Parsing, 2018): PSP on the deepest level
    and an FPN over strides 4 and down, fused at stride 4."""

    min_depth = 3

    @classmethod
    def reads(cls, depth: int) -> range:
        return range(2, depth + 1)

    def __init__(self, channels: list[int], reductions: list[int], decoder_channels: int = 256,
                 use_norm: str | bool = "batchnorm") -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

        p = self.pyramid
        self.decoder = UPerNetDecoder(list(p.channels), p.depth, decoder_channels, use_norm)
        self.out_channels, self.out_reduction, self.head_kernel = decoder_channels, p.strides[2], 1


class Segformer(SmpDecoder):
    """smp's ``SegformerDecoder`` (Xie et al., SegFormer, 2021): an MLP per level, fused at stride 4."""

    min_depth = 3

    @classmethod
    def reads(cls, depth: int) -> range:
        return range(2, depth + 1)  # and stride 2 when the encoder has it

    def __init__(self, channels: list[int], reductions: list[int], segmentation_channels: int = 256) -> None:
        super().__init__(channels, reductions)
        from segmentation_models_pytorch.decoders.segformer.decoder import SegformerDecoder

        p = self.pyramid
        self.decoder = SegformerDecoder(list(p.channels), p.depth, segmentation_channels)
        self.out_channels, self.out_reduction, self.head_kernel = segmentation_channels, 4, 1


class DPT(SmpDecoder):
    """smp's ``DPTDecoder`` (Ranftl et al., Vision Transformers for Dense Prediction, 2021): it reassembles a
    ViT's single-stride token maps (every level at one stride, e.g. ``timm:vit_tiny_patch16_224`` with
    ``out_indices: [2, 5, 8, 11]``, the blocks smp samples) into strides 4, 8, 16, 32 and fuses them to
    stride 2, where smp's ``DPTSegmentationHead`` body (conv3x3-BN-ReLU-dropout) runs before the head's
    1x1 convolution. zoo's levels are maps, not tokens, so the class token is not read: this is smp's DPT
    with ``decoder_readout="ignore"`` (smp's default, ``"cat"``, concatenates the class token to each
    patch token first)."""

    @classmethod
    def refuse(cls, channels: list[int], reductions: list[int], intermediate_channels: list[int] | None = None,
               **settings) -> str | None:
        if len(set(reductions)) > 1 and reductions[0] == 1 and len(set(reductions[1:])) == 1:
            return (f"it reads a ViT's single-stride token maps only, and input_skip adds the raw input at stride 1 "
                    f"(strides {_strides(reductions)}): build the encoder with --encoder-arg input_skip=false")
        if len(set(reductions)) > 1:
            return (f"it reassembles a ViT's single-stride tokens (every level at one stride, e.g. "
                    f"timm:vit_tiny_patch16_224), and this encoder is a multi-stride pyramid (strides "
                    f"{_strides(reductions)}); use fpn, upernet or segformer")
        if intermediate_channels is not None and len(intermediate_channels) != len(channels):
            return (f"intermediate_channels needs one width per encoder level ({len(channels)}), got "
                    f"{list(intermediate_channels)}")
        return None

    def __init__(self, channels: list[int], reductions: list[int], intermediate_channels: list[int] | None = None,
                 fusion_channels: int = 256) -> None:
        Decoder.__init__(self)  # the levels are one stride: no pyramid to read
        reason = self.refuse(channels, reductions, intermediate_channels)
        if reason:
            raise ValueError(f"DPT cannot read this encoder: {reason}")
        from segmentation_models_pytorch.decoders.dpt.decoder import DPTDecoder

        # smp's widths for its four levels; other level counts take its first ones
        widths = list(intermediate_channels) if intermediate_channels is not None else [256, 512, 1024, 1024, 1024,
                                                                                       1024][:len(channels)]
        self.decoder = DPTDecoder(list(channels), list(reductions), False, "ignore", widths, fusion_channels)
        self.head_body = torch.nn.Sequential(  # smp's DPTSegmentationHead before its last convolution
            torch.nn.Conv2d(fusion_channels, fusion_channels, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(fusion_channels), torch.nn.ReLU(inplace=True), torch.nn.Dropout(0.1))
        self.out_channels, self.out_reduction, self.head_kernel = fusion_channels, 2, 1
        # the stride-32 reassembly halves the token map: an odd map would not fuse back
        self.input_multiple = 2 * reductions[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head_body(self.decoder(features, [None] * len(features)))


#: The encoder and decoder settings under which zoo's one-head model on a timm encoder is
#: ``smp.create_model(name, encoder_name="tu-<encoder>")`` exactly (same parameters; with smp's weights, the same
#: outputs): what the equality tests (tests/test_decoders.py) and the step-time benchmark
#: (benchmarks/decoder_step.py) compare. Where zoo's defaults differ from smp's, the setting says so.
SMP_TWIN: dict[str, tuple[dict, dict]] = {
    "unet": ({}, {"decoder_channels": [256, 128, 64, 32, 16]}),  # smp's widths; zoo's default is narrower
    "unetplusplus": ({}, {"decoder_channels": [256, 128, 64, 32, 16]}),
    "fpn": ({}, {}),
    "pspnet": ({"out_indices": [0, 1, 2]}, {}),  # smp cuts the encoder at depth 3
    "deeplabv3": ({"output_stride": 8}, {}),  # smp dilates to output stride 8
    "deeplabv3plus": ({"output_stride": 16}, {}),
    "linknet": ({}, {}),
    "manet": ({}, {"decoder_channels": [256, 128, 64, 32, 16]}),
    "pan": ({"output_stride": 16}, {}),  # smp dilates to output stride 16
    "upernet": ({}, {}),
    "segformer": ({}, {}),
    "dpt": ({"out_indices": [2, 5, 8, 11]}, {}),  # on a ViT: smp's DPT reads these blocks
}
