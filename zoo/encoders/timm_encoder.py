"""Any timm backbone through ``features_only``: one contract for every family."""
from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from timm.models import adapt_input_conv

from zoo.core.errors import one_line
from zoo.core.registry import RegistryError
from zoo.encoders.base import Encoder, check_in_channels, load_state, read_local_weights
from zoo.encoders.timm_weights import check_fit, fetch, load_report, mismatch_error, quiet, weights_source


def check_timm_name(model_name: str) -> str:
    """A timm model name that exists; otherwise an error with the closest timm names."""
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.5)
        hint = f" Closest timm models: {', '.join(close)}." if close else ""
        raise RegistryError(f"unknown timm model {model_name!r}.{hint} See timm.list_models() for all names.")
    return model_name


def full_names(model_name: str, in_channels: int, kwargs: dict[str, Any]) -> set[str]:
    """The state names of the full timm model (classifier and every stage), built on ``meta`` (no memory):
    what a weights file may hold beyond the features-only model's own tensors."""
    with torch.device("meta"):
        return set(timm.create_model(model_name, pretrained=False, in_chans=in_channels, **kwargs).state_dict())


class TimmEncoder(Encoder):
    """A timm backbone created with ``features_only=True``.

    ``pretrained`` is ``true`` (timm's default weights), a timm tag (``resnet18.a1_in1k``) or a local
    weights file of the full timm model (or its features); see ``zoo.encoders.timm_weights``. timm's own
    weights come through the Hugging Face cache; zoo never downloads anything else. Pretrained weights on
    1-channel data get timm's input-conv adaptation (local files too), and the mean/std they were trained
    with (timm's ``pretrained_cfg``, or ``mean``/``std`` given here) are applied inside ``forward``.
    """

    @staticmethod
    def check_name(model_name: str) -> str:
        """The registry's hook for ``timm:<name>``: the name must be a timm model."""
        return check_timm_name(model_name)

    @classmethod
    def prepare(cls, settings: dict[str, Any]) -> None:
        """Fetch pretrained weights into the Hugging Face cache (or find them there) before any data is read."""
        source = weights_source(check_timm_name(settings["model_name"]), settings.get("pretrained"))
        if source is not None and source.kind == "timm":
            fetch(source.where)

    def __init__(self, model_name: str, in_channels: int = 1, pretrained: Any = None,
                 mean: list[float] | float | None = None, std: list[float] | float | None = None,
                 out_indices: tuple[int, ...] | None = None, input_skip: bool = False, **kwargs) -> None:
        super().__init__()
        self.input_skip = bool(input_skip)
        check_in_channels(in_channels)
        check_timm_name(model_name)
        source = weights_source(model_name, pretrained)
        extra = {"out_indices": tuple(out_indices)} if out_indices is not None else {}
        kwargs = transformer_defaults(model_name, kwargs)
        check_output_stride(model_name, kwargs)
        args = dict(features_only=True, in_chans=in_channels, **extra, **kwargs)
        if source is not None and source.kind == "timm":
            path = fetch(source.where)
            try:  # timm reads the cached file and adapts the input conv to in_chans itself
                with quiet("timm", "huggingface_hub"), load_report() as report:
                    self.model = timm.create_model(source.where, pretrained=True, **args)
            except Exception as exc:
                raise mismatch_error(source.where, path, exc) or RegistryError(
                    f"pretrained weights {source.where} cannot be loaded: {one_line(exc)}") from None
            check_fit(source.where, path, report, self.model, full_names(model_name, in_channels, kwargs))
        else:
            self.model = timm.create_model(model_name, pretrained=False, **args)
            if source is not None:
                self._load_file(source.where, in_channels, model_name, kwargs)
        self._declare(self.model.feature_info.channels(), self.model.feature_info.reduction(), in_channels)
        # Swin-style backbones return channels-last maps (timm's output_fmt); zoo's levels are [B, C, H, W]
        self.channels_last_maps = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        self.model_name = model_name
        # timm's own weights declare what they expect; a local file's origin is unknown, so it says its own
        # with mean/std (a guess here would change what older runs of that file were trained with)
        timm_weights = source is not None and source.kind == "timm"
        cfg = self.model.pretrained_cfg if timm_weights and mean is None and std is None else {}
        self._set_normalization(mean if mean is not None else cfg.get("mean"),
                                std if std is not None else cfg.get("std"))

    def _load_file(self, path: str, in_channels: int, model_name: str, kwargs: dict[str, Any]) -> None:
        """A local weights file, with the input conv adapted to ``in_channels`` as timm adapts its own.
        The file holds the full timm model or its features: a tensor of neither, or a feature tensor it
        lacks, is another model's file (resnet34's has resnet18's shapes and more blocks)."""
        state = read_local_weights(path)
        first = self.model.pretrained_cfg.get("first_conv")
        for conv in ([first] if isinstance(first, str) else list(first or [])):
            key = f"{conv}.weight"
            if key in state and state[key].dim() == 4 and state[key].shape[1] != in_channels:
                state[key] = adapt_input_conv(in_channels, state[key])
        load_state(self.model, state, path)  # first: a tensor of the wrong shape is named with both shapes
        full = full_names(model_name, in_channels, kwargs)
        own = self.model.state_dict()
        extra = [k for k in state if k not in own and k not in full]
        lacking = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if extra or lacking:
            k = next((k for k in extra if k.endswith("weight")), (extra or lacking)[0])
            what = (f"holds {len(extra)} tensor(s) {model_name} has no place for, e.g. {k} of shape "
                    f"{tuple(state[k].shape)}" if extra else
                    f"lacks {len(lacking)} of {model_name}'s tensors, e.g. {k} of shape {tuple(own[k].shape)}")
            raise ValueError(f"pretrained weights file {path} does not fit {model_name}: it {what}; is it another "
                             "model's weights?")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.model(self.normalize(x))
        if self.channels_last_maps:
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        return self._output(x, maps)


def check_output_stride(model_name: str, kwargs: dict[str, Any]) -> None:
    """timm dilates its CNNs (ResNet, MobileNet, EfficientNet, RegNet, ConvNeXt) for ``output_stride``; its
    transformers take no such argument and fail deep in their constructor. Asked on ``meta`` (no memory), so
    the refusal says which encoders can dilate before any weights are read."""
    if "output_stride" not in kwargs:
        return
    try:
        with torch.device("meta"):
            timm.create_model(model_name, pretrained=False, features_only=True, **kwargs)
    except TypeError as exc:
        if "output_stride" not in str(exc):
            raise
        raise RegistryError(
            f"timm model {model_name!r} has no dilated form: it does not take output_stride={kwargs['output_stride']!r}. "
            "timm's CNNs do (e.g. resnet18, mobilenetv3_large_100, efficientnet_b0, regnety_016, convnext_tiny); "
            "drop output_stride or pick one of those") from None


def transformer_defaults(model_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A transformer built for one input size (timm's ``fixed_input_size``: ViT, Swin) asserts that size in
    ``forward``; zoo's inputs are the data's own size, padded to the encoder's stride, so such a model is
    built with timm's ``dynamic_img_size`` (its position embeddings resampled to the input) unless the
    user fixes ``img_size`` or ``dynamic_img_size`` themselves."""
    cfg = timm.get_pretrained_cfg(model_name)
    if cfg is None or not getattr(cfg, "fixed_input_size", False) or {"img_size", "dynamic_img_size"} & set(kwargs):
        return kwargs
    return {**kwargs, "dynamic_img_size": True}
