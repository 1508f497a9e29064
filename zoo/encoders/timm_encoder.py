"""Any timm backbone through ``features_only``: one contract for every family."""
from __future__ import annotations

import difflib

import timm
import torch

from zoo.encoders.base import Encoder, check_in_channels, load_local_weights
from zoo.core.registry import RegistryError


def check_timm_name(model_name: str) -> str:
    """A timm model name that exists; otherwise an error with the closest timm names."""
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.5)
        hint = f" Closest timm models: {', '.join(close)}." if close else ""
        raise RegistryError(f"unknown timm model {model_name!r}.{hint} See timm.list_models() for all names.")
    return model_name


class TimmEncoder(Encoder):
    """A timm backbone created with ``features_only=True`` and no hub download.

    ``pretrained`` is a local weights file for the full timm model (or its features), or None.
    """

    @staticmethod
    def check_name(model_name: str) -> str:
        """The registry's hook for ``timm:<name>``: the name must be a timm model."""
        return check_timm_name(model_name)

    def __init__(self, model_name: str, in_channels: int = 1, pretrained: str | None = None,
                 out_indices: tuple[int, ...] | None = None, input_skip: bool = False, **kwargs) -> None:
        super().__init__()
        self.input_skip = bool(input_skip)
        check_in_channels(in_channels)
        check_timm_name(model_name)
        extra = {"out_indices": tuple(out_indices)} if out_indices is not None else {}
        # pretrained=False: never reach for the hub; local weights are loaded below.
        self.model = timm.create_model(model_name, pretrained=False, features_only=True,
                                       in_chans=in_channels, **extra, **kwargs)
        self._declare(self.model.feature_info.channels(), self.model.feature_info.reduction(), in_channels)
        self.model_name = model_name
        if pretrained:
            load_local_weights(self.model, pretrained)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._output(x, self.model(x))
