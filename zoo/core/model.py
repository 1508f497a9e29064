"""The shared-encoder multi-task model: one encoder, a dict of named heads."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.architectures import HardSharing
from zoo.core.kinds import DENSE_KINDS, OUTPUT_KINDS


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: what the model reads of a head; ``zoo.Head`` declares them all. Checked by name, not by class: core
#: sits below ``heads`` (the README's Layout), so it never imports the class it holds.
_HEAD_CONTRACT = ("output_kind", "needs_input_size", "predict")


class MultiTaskModel(nn.Module):
    """``forward(x) -> dict[str, Tensor]``, one entry per head (or per requested head).

    Inputs whose size is not a multiple of the encoder's total stride (or of what a head's decoder needs,
    ``input_multiple``) are padded on the
    bottom/right (so pixel coordinates are unchanged) and dense outputs cropped back, so
    every dense output has the input's height and width.
    """

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], architecture: nn.Module | None = None) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a MultiTaskModel needs at least one head")
        for name, head in heads.items():
            if not isinstance(head, nn.Module) or not all(hasattr(head, n) for n in _HEAD_CONTRACT):
                raise TypeError(f"head {name!r} is a {type(head).__module__}.{type(head).__qualname__}, not a zoo Head: "
                                "subclass zoo.Head (it declares the contract the trainer reads)")
            if head.output_kind not in OUTPUT_KINDS:
                raise TypeError(f"head {name!r} ({type(head).__qualname__}) declares output_kind {head.output_kind!r}; "
                                f"a head declares what its forward returns, one of: {', '.join(OUTPUT_KINDS)}")
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        # how the heads share the encoder's features (zoo.core.architectures); hard sharing has no
        # parameters, so its models' state dicts are what they were before architectures existed
        # (a user's encoder may declare only ``total_stride``: hard sharing needs nothing else)
        self.architecture = architecture if architecture is not None else HardSharing(
            list(getattr(encoder, "out_channels", [])), list(getattr(encoder, "reductions", [])), list(heads))
        missing = sorted(set(heads) - set(self.architecture.head_names))
        if missing:
            raise ValueError(f"the architecture was built for heads {self.architecture.head_names}, not {missing}")

    #: what the model is and how it was trained (``zoo.engine.record.ModelRecord``), set by the builder of a
    #: run or a saved model; None for a model put together by hand (``zoo.build_model``)
    record = None

    @property
    def meta(self) -> dict:
        """The record as the JSON mapping files hold (``model.record.to_dict()``); read-only."""
        return self.record.to_dict() if self.record is not None else {}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Where the heads meet: the architecture's shared parameters, then the encoder's (last, so the
        encoder's deepest layer stays the last shared one, the layer GradNorm measures)."""
        return list(self.architecture.shared_parameters()) + list(self.encoder.parameters())

    def task_parameters(self) -> list[nn.Parameter]:
        """What one head's loss alone trains: the heads and the architecture's per-head modules."""
        return list(self.heads.parameters()) + list(self.architecture.task_parameters())

    def forward(self, x: torch.Tensor, heads: list[str] | tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"input must be a [B, C, H, W] tensor, got shape {tuple(x.shape)}")
        want = getattr(self.encoder, "in_channels", None)
        if want is not None and x.shape[1] != want:
            raise ValueError(f"input has {x.shape[1]} channel(s) (shape {tuple(x.shape)}), but this model's encoder "
                             f"takes {want}: give [B, {want}, H, W]")
        names = list(self.heads) if heads is None else list(heads)
        unknown = [n for n in names if n not in self.heads]
        if unknown:
            raise ValueError(f"unknown head(s) {unknown}; this model has {list(self.heads)}")
        h, w = x.shape[-2:]
        if self.training:
            self.check_train_batch(x.shape[0], h, w)
        stride = self.input_multiple
        ph, pw = (-h) % stride, (-w) % stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        features = self.encoder(x)
        outputs = {}
        for name in names:
            head = self.heads[name]
            # Heads that read the raw input (threshold heads) are told the unpadded size.
            # A detached head's loss never reaches the encoder (the architecture's ``detach``).
            shared = [f.detach() for f in features] if name in getattr(self.architecture, "detach", ()) else features
            mine = self.architecture(shared, name)
            try:
                out = head(mine, size=(h, w)) if head.needs_input_size else head(mine)
            except ValueError as exc:  # a decoder's pooled branch (smp's ASPP, PAN, UPerNet) is 1x1 by design
                if not (self.training and "more than 1 value per channel" in str(exc)):
                    raise
                raise ValueError(f"a training batch of {x.shape[0]} image(s): head {name!r} pools its features to "
                                 "1x1 (its decoder's global branch), and BatchNorm cannot normalise one value per "
                                 "channel; train on batches of 2 or more images, or call model.eval() to "
                                 "predict") from None
            if head.output_kind in DENSE_KINDS and (ph or pw):  # the head's declaration, not its shape
                out = out[..., :h, :w]
            outputs[name] = out
        return outputs

    @property
    def input_multiple(self) -> int:
        """Inputs are padded to a multiple of this: the encoder's total stride, and what a head's decoder
        needs beyond it (PAN halves the deepest map three more times)."""
        return math.lcm(self.encoder.total_stride, *(getattr(h, "input_multiple", 1) for h in self.heads.values()))

    def check_train_batch(self, batch: int, height: int, width: int, fix: str | None = None) -> None:
        """Refuse a training batch that leaves one value per channel at the deepest features (one image
        that the encoder reduces to 1x1): BatchNorm cannot normalise it, and torch's own message names
        neither the batch nor the fix."""
        stride, m = self.encoder.total_stride, self.input_multiple
        # the encoder sees the input padded to a multiple of ``m`` (forward): its deepest map has that size / stride
        if batch * (-(-height // m) * m // stride) * (-(-width // m) * m // stride) != 1:
            return
        if any(isinstance(m, _BATCH_NORMS) for m in self.modules()):
            raise ValueError(f"a training batch of {batch} image of {height}x{width}: this model's deepest features "
                             f"(stride {stride}) are then 1x1, and BatchNorm cannot normalise one value per channel; "
                             + (fix or f"train on batches of 2 or more images (or images larger than {stride}x{stride}"
                                       "), or call model.eval() to predict"))

    def predict(self, outputs: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Hard predictions (masks, classes, circle masks) from raw outputs."""
        return {name: self.heads[name].predict(out, size=size) for name, out in outputs.items()}
