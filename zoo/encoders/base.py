"""The encoder contract shared by the scratch and timm encoders."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from zoo.core.errors import one_line


class Encoder(nn.Module):
    """Base class: subclasses set ``out_channels`` and ``reductions`` and return a list of
    feature maps, highest resolution first.

    An encoder may declare the input normalisation its weights expect (``input_mean``/``input_std``
    buffers, set by ``_set_normalization``). It is applied inside ``forward``, so training,
    evaluation, ``zoo.predict`` and every export see the same inputs with no user step; the buffers
    are saved with the weights, so a loaded model normalises as it was trained.
    """

    out_channels: list[int]
    reductions: list[int]

    input_skip: bool = False

    @classmethod
    def prepare(cls, settings: dict[str, Any]) -> None:
        """Check (and fetch) what building with ``settings`` needs from outside the process, before any
        data is read. Most encoders need nothing; the timm encoder fetches pretrained weights."""

    def _declare(self, channels: list[int], reductions: list[int], in_channels: int) -> None:
        """Set ``out_channels``/``reductions``; with ``input_skip`` the raw input leads the list
        as a stride-1 map, so decoders get full-resolution intensities as their last skip."""
        self.in_channels = int(in_channels)
        if self.input_skip:
            channels, reductions = [in_channels] + list(channels), [1] + list(reductions)
        self.out_channels, self.reductions = list(channels), list(reductions)

    def _set_normalization(self, mean: Sequence[float] | float | None, std: Sequence[float] | float | None) -> None:
        """``(x - mean) / std`` on the backbone's input (not on the raw ``input_skip`` map, whose heads
        read intensities in [0, 1]). ``None`` for both leaves inputs as they are."""
        if mean is None and std is None:
            return
        if mean is None or std is None:
            raise ValueError("mean and std are given together (the normalisation the weights expect), got "
                             f"mean={mean!r}, std={std!r}")
        m = _per_channel("mean", mean, self.in_channels)
        s = _per_channel("std", std, self.in_channels)
        if any(v <= 0 for v in s):
            raise ValueError(f"std must be positive, got {list(s)}")
        self.register_buffer("input_mean", torch.tensor(m, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(s, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        """The declared input normalisation, or None (inputs used as they are)."""
        if not hasattr(self, "input_mean"):
            return None
        return {"mean": self.input_mean.flatten().tolist(), "std": self.input_std.flatten().tolist()}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std if hasattr(self, "input_mean") else x

    def _output(self, x: torch.Tensor, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x, *features] if self.input_skip else list(features)

    @property
    def total_stride(self) -> int:
        """The stride of the deepest feature map: inputs are padded to a multiple of it."""
        return self.reductions[-1]


def _per_channel(name: str, value: Any, in_channels: int) -> list[float]:
    """One value per input channel. Three values (RGB weights) on a grey input become their mean: the
    grey image stands for three equal channels, and timm's 1-channel conv adaptation sums them."""
    values = [value] if isinstance(value, (int, float)) else value
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a list of numbers, got {value!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite numbers, got {value!r}")
    if len(values) == 1:
        return values * in_channels
    if len(values) == in_channels:
        return values
    if len(values) == 3 and in_channels == 1:
        return [sum(values) / 3]
    raise ValueError(f"{name} has {len(values)} values for {in_channels} input channel(s); give 1 or {in_channels}")


def asks_for_published(pretrained: Any) -> bool:
    """``pretrained: true`` (YAML true, or the string): the encoder's published weights, not a file."""
    return pretrained is True or (isinstance(pretrained, str) and pretrained.strip().lower() == "true")


def settings_for_state(settings: dict[str, Any], state: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Encoder settings to rebuild a model whose weights come from ``state`` (a checkpoint or a saved
    model): ``pretrained`` is dropped (nothing is fetched or read again), and the input normalisation
    the model was trained with comes from the state's buffers."""
    settings = dict(settings)
    settings.pop("pretrained", None)
    if state is not None and "encoder.input_mean" in state:
        settings.update(mean=state["encoder.input_mean"].flatten().tolist(),
                        std=state["encoder.input_std"].flatten().tolist())
    return settings


def check_in_channels(in_channels: int) -> int:
    """Encoders accept grayscale or RGB input."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    return in_channels


def read_local_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a local file (.pth/.pt or .safetensors), read without running code.

    Never downloads: a path that does not exist is an error that says so.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file {path} does not exist; 'pretrained' takes a local file path "
            "(.pth, .pt or .safetensors), true (timm's default weights) or a timm tag such as resnet18.a1_in1k"
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
        raise ValueError(f"pretrained weights file {path} cannot be loaded: refused or unreadable (a plain state "
                         f"dict of tensors is needed; torch.load runs with weights_only=True): "
                         f"{one_line(exc)}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"pretrained weights file {path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load the tensors of ``state`` that ``module`` has (a full model's file fits its features):
    none matching, or one of the wrong shape, is an error naming the file."""
    own = module.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        raise ValueError(f"pretrained weights file {path}: {k} has shape {tuple(state[k].shape)}, but this encoder's "
                         f"is {tuple(own[k].shape)} ({len(wrong)} tensor(s) differ); is it weights of another model?")
    if not any(k in own for k in state):
        raise ValueError(f"pretrained weights file {path} matches none of the encoder's parameters")
    module.load_state_dict(state, strict=False)


def load_local_weights(module: nn.Module, path: str | Path) -> None:
    """Load pretrained weights from a local file into ``module`` (see ``read_local_weights``)."""
    load_state(module, read_local_weights(path), path)
