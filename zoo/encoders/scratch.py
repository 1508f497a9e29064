"""A U-Net encoder written here: double conv (conv-norm-ReLU x2) blocks, max-pool downsampling."""
from __future__ import annotations

import torch
from torch import nn

from zoo.encoders.base import Encoder, asks_for_published, check_in_channels, load_local_weights


class DoubleConv(nn.Sequential):
    """(3x3 conv -> norm -> ReLU) x 2, the U-Net block."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch", dilation: int = 1) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):  # (a dilation keeps the parameter names and shapes)
            layers += [nn.Conv2d(c_in, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
                       _norm(norm, out_channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm must be one of 'batch', 'group', 'instance', got {norm!r}")


class ScratchEncoder(Encoder):
    """U-Net encoder: ``depth`` levels, the first at full resolution, channels doubling from ``width``.

    Features come out at strides 1, 2, 4, ... 2**(depth-1) (after the raw input with ``input_skip``).
    ``output_stride`` (a power of 2 from 2 up to that deepest stride) stops the pooling there and dilates
    the deeper blocks instead, as timm's ``output_stride`` does (the DeepLab decoders read it): strides
    1, 2, 4, 8, 8, 8 for ``depth: 6, output_stride: 8``. The weights are the same tensors either way.
    ``mean``/``std`` normalise the input inside ``forward`` (off by default: the reference models see [0, 1]).
    """

    @classmethod
    def prepare(cls, settings: dict) -> None:
        if asks_for_published(settings.get("pretrained")):
            raise ValueError("the scratch encoder has no published weights: pretrained takes a local weights file "
                             "(.pth, .pt or .safetensors) for it; pretrained=true is for timm encoders")

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 4, norm: str = "batch",
                 pretrained: str | None = None, input_skip: bool = False,
                 mean: list[float] | float | None = None, std: list[float] | float | None = None,
                 output_stride: int | None = None) -> None:
        super().__init__()
        self.input_skip = bool(input_skip)
        check_in_channels(in_channels)
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if not isinstance(depth, int) or not 1 <= depth <= 6:
            raise ValueError(f"depth must be an integer from 1 to 6, got {depth!r}")
        widths = [width * 2**i for i in range(depth)]
        deepest = 2 ** (depth - 1)
        stride = deepest if output_stride is None else output_stride
        if output_stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or not 2 <= stride <= deepest
                                          or stride & (stride - 1)):
            valid = (f"one of {', '.join(str(2**i) for i in range(1, depth))}" if depth > 1 else
                     "none: a depth-1 encoder does not pool")
            raise ValueError(f"scratch encoder: output_stride must be a power of 2 from 2 to its deepest stride "
                             f"{deepest} (depth {depth}), {valid}; got {output_stride!r}")
        strides = [min(2**i, stride) for i in range(depth)]
        self._declare(widths, strides, in_channels)
        chans = [in_channels] + widths
        # a block below the output stride keeps the resolution and dilates by what pooling would have given
        self.pooled = [i > 0 and strides[i] > strides[i - 1] for i in range(depth)]
        self.blocks = nn.ModuleList(DoubleConv(chans[i], chans[i + 1], norm, dilation=2**i // strides[i])
                                    for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self._set_normalization(mean, std)
        self.prepare({"pretrained": pretrained})
        if pretrained:
            load_local_weights(self, pretrained)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features, h = [], self.normalize(x)
        for i, block in enumerate(self.blocks):
            h = block(self.pool(h) if self.pooled[i] else h)
            features.append(h)
        return self._output(x, features)
