"""The encoder contract shared by the scratch and timm encoders."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class: subclasses set ``out_channels`` and ``reductions`` and return a list of
    feature maps, highest resolution first."""

    out_channels: list[int]
    reductions: list[int]

    input_skip: bool = False

    def _declare(self, channels: list[int], reductions: list[int], in_channels: int) -> None:
        """Set ``out_channels``/``reductions``; with ``input_skip`` the raw input leads the list
        as a stride-1 map, so decoders get full-resolution intensities as their last skip."""
        self.in_channels = int(in_channels)
        if self.input_skip:
            channels, reductions = [in_channels] + list(channels), [1] + list(reductions)
        self.out_channels, self.reductions = list(channels), list(reductions)

    def _output(self, x: torch.Tensor, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x, *features] if self.input_skip else list(features)

    @property
    def total_stride(self) -> int:
        """The stride of the deepest feature map: inputs are padded to a multiple of it."""
        return self.reductions[-1]


def check_in_channels(in_channels: int) -> int:
    """Encoders accept grayscale or RGB input."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    return in_channels


def load_local_weights(module: nn.Module, path: str | Path) -> None:
    """Load pretrained weights from a local file (a state dict, .pth/.pt or .safetensors).

    Never downloads: a path that does not exist is an error that says so.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file {path} does not exist; 'pretrained' takes a local file path "
            "(.pth, .pt or .safetensors); zoo never downloads weights"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only: a pickle that would run code (or build anything but tensors) is refused
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ValueError(f"pretrained weights file {path} cannot be loaded: refused or unreadable (a plain state "
                         f"dict of tensors is needed; torch.load runs with weights_only=True): {detail}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"pretrained weights file {path} holds a {type(state).__name__}, not a state dict of tensors")
    missing, unexpected = module.load_state_dict(state, strict=False)
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise ValueError(f"pretrained weights file {path} matches none of the encoder's parameters")
