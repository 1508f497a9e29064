"""Encoders: ``forward(x) -> list[Tensor]`` high to low resolution, plus ``out_channels``
and ``reductions`` (the stride of each feature map)."""
from zoo.encoders.base import Encoder

__all__ = ["Encoder"]
