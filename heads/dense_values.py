"""Per-pixel real values (output kind ``dense_values``): depth, surface normals, and any dense regression.

Each is a registered decoder (default U-Net) -> ``C`` channels at the input's size, as the other dense
heads. Targets are float ``[B, C, H, W]`` with NaN in every channel of an invalid pixel (missing depth,
a zero normal); the losses and metrics leave those pixels out.

Normals are unit vectors in camera coordinates: x right, y down, z forward (away from the camera), as
the NYUv2 files MTAN and LibMTL use hold them. A left-right mirror of the image negates x.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.core.layers import positive_int
from zoo.heads.base import Description
from zoo.heads.dense import DEFAULT_DECODER, DenseHead


class DenseRegressionHead(DenseHead):
    """``channels`` real values per pixel, unconstrained; ``predict`` returns them as they are."""

    output_kind = "dense_values"
    default_loss, default_target = "masked_l1", "values"
    export_note = "values [B, C, H, W]"

    def __init__(self, channels: list[int], reductions: list[int], out_channels: int = 1,
                 decoder: str = DEFAULT_DECODER, decoder_settings: dict[str, Any] | None = None,
                 decoder_channels: list[int] | None = None, attention: str | None = None) -> None:
        super().__init__(channels, reductions)
        self.out_channels = positive_int("out_channels", out_channels)
        self._build(channels, reductions, self.out_channels, decoder, decoder_settings,
                    decoder_channels=decoder_channels, attention=attention)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.constrain(super().forward(features))

    def constrain(self, raw: torch.Tensor) -> torch.Tensor:
        """The decoder's raw maps as this head's values (inside the graph, so exports give them too)."""
        return raw

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return output


class DepthHead(DenseRegressionHead):
    """Depth ``[B, 1, H, W]`` in the target's unit (metres for NYUv2), non-negative: softplus of the
    decoder's map (a ReLU would stop the gradient of every pixel it zeroes)."""

    default_loss, default_target = "masked_l1", "depth"
    export_note = "depth [B, 1, H, W] (softplus, >= 0, the target's unit)"

    def __init__(self, channels: list[int], reductions: list[int], decoder: str = DEFAULT_DECODER,
                 decoder_settings: dict[str, Any] | None = None, decoder_channels: list[int] | None = None,
                 attention: str | None = None) -> None:
        super().__init__(channels, reductions, 1, decoder, decoder_settings, decoder_channels, attention)

    def constrain(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw)


class NormalsHead(DenseRegressionHead):
    """Surface normals ``[B, 3, H, W]``, unit length per pixel: the decoder's map divided by its norm, as
    LibMTL normalises its prediction. ``predict`` normalises again (an average of test-time augmented
    normals is shorter than 1)."""

    default_loss, default_target = "cosine", "normals"
    export_note = "unit normals [B, 3, H, W] (x right, y down, z forward)"
    mirror_channels = (0,)

    def __init__(self, channels: list[int], reductions: list[int], decoder: str = DEFAULT_DECODER,
                 decoder_settings: dict[str, Any] | None = None, decoder_channels: list[int] | None = None,
                 attention: str | None = None) -> None:
        super().__init__(channels, reductions, 3, decoder, decoder_settings, decoder_channels, attention)

    def constrain(self, raw: torch.Tensor) -> torch.Tensor:
        return F.normalize(raw, dim=1, eps=1e-12)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return F.normalize(output, dim=1, eps=1e-12)

    def describe(self, output: torch.Tensor, pred: torch.Tensor, to_original) -> Description:
        """The mean direction (x, y, z; renormalised) in the record, the normals as .npy and a picture."""
        mean = F.normalize(pred[0].float().flatten(1).mean(1), dim=0)
        return Description({f"mean_{a}": round(float(v), 6) for a, v in zip("xyz", mean)}, dense=pred[0].float())

    def picture(self, values: torch.Tensor, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        """The usual RGB encoding of normals: (n + 1) / 2 per channel, x -> red, y -> green, z -> blue;
        NaN pixels black."""
        v = values[:3].float()
        rgb = ((v + 1) / 2).clamp(0, 1).nan_to_num(0.0).mul(255).round().to(torch.uint8)
        rgb[:, ~torch.isfinite(v).all(0)] = 0
        return np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy())
