"""Encoders: ``forward(x) -> list[Tensor]`` high to low resolution, plus ``out_channels``
and ``reductions`` (the stride of each feature map); the contract is ``zoo.encoders.base.Encoder``."""
