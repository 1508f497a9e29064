"""Per-head losses, registered by name; the heavy lifting is torch's and smp's.

Every loss is called as ``loss(output, target)``: ``output`` is the head's raw tensor,
``target`` the batch field named by the task. As in smp, a loss is told its ``mode`` rather than
guessing it from the output's shape: ``binary`` (one-channel logits, a 0/1 target), ``multiclass``
(N-class logits ``[B, N]`` or ``[B, N, H, W]``, class-index targets), ``regression`` or
``dense_regression`` (per-pixel values ``[B, C, H, W]``; a target pixel that is NaN is left out). A loss
declares the modes it takes (``modes``); the task gives it the mode of its head's declared output
kind (``zoo.core.kinds.LOSS_MODES``), and a registered name may fix one (``ce_dice`` is
multi-class, ``bce_dice`` binary), so a loss that contradicts its head is an error before training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLASS_MODES = ("binary", "multiclass")


class ModeLoss(nn.Module):
    """A loss told its mode: one of its ``modes``."""

    modes: tuple[str, ...] = CLASS_MODES

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in self.modes:
            raise ValueError(f"{type(self).__name__} takes mode {' or '.join(self.modes)}, got {mode!r}")
        self.mode = mode

    @property
    def binary(self) -> bool:
        return self.mode == "binary"


class CrossEntropy(ModeLoss):
    """Cross-entropy on class logits (``multiclass``); BCE on one-channel logits (``binary``)."""

    def __init__(self, mode: str = "multiclass", label_smoothing: float = 0.0, ignore_index: int = -100,
                 class_weights: list[float] | None = None) -> None:
        super().__init__(mode)
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())
        return F.cross_entropy(output.float(), target.long(), weight=self.class_weights,
                               label_smoothing=self.label_smoothing, ignore_index=self.ignore_index)


class BCE(ModeLoss):
    """Binary cross-entropy on one-channel logits."""

    modes = ("binary",)

    def __init__(self, mode: str = "binary") -> None:
        super().__init__(mode)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())


class Dice(ModeLoss):
    """smp's soft Dice loss in the given mode."""

    def __init__(self, mode: str = "multiclass", smooth: float = 0.0) -> None:
        super().__init__(mode)
        from segmentation_models_pytorch.losses import DiceLoss  # smp imports timm: only when used

        self.dice = DiceLoss(mode, from_logits=True, smooth=smooth)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(output.float(), target.unsqueeze(1).float() if self.binary else target.long())


class BCEDice(ModeLoss):
    """Cross-entropy (BCE when binary) plus soft Dice: the usual segmentation pairing."""

    def __init__(self, mode: str = "multiclass", dice_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(mode)
        self.ce = CrossEntropy(mode, label_smoothing=label_smoothing)
        self.dice = Dice(mode)
        self.dice_weight = float(dice_weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(output, target) + self.dice_weight * self.dice(output, target)


class Focal(ModeLoss):
    """smp's focal loss in the given mode (multi-class takes ``[B, N]`` logits as well as maps)."""

    def __init__(self, mode: str = "multiclass", gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__(mode)
        from segmentation_models_pytorch.losses import FocalLoss  # smp imports timm: only when used

        self.focal = FocalLoss(mode, gamma=gamma, alpha=alpha)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.focal(output.float(), target.unsqueeze(1).float() if self.binary else target.long())


class BCELovasz(ModeLoss):
    """Cross-entropy (BCE when binary) plus smp's Lovasz loss, a direct surrogate of IoU."""

    def __init__(self, mode: str = "multiclass", lovasz_weight: float = 1.0) -> None:
        super().__init__(mode)
        from segmentation_models_pytorch.losses import LovaszLoss  # smp imports timm: only when used

        self.ce = CrossEntropy(mode)
        self.lovasz = LovaszLoss(mode, per_image=False)
        self.lovasz_weight = float(lovasz_weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lov = self.lovasz(output.float(), target.unsqueeze(1).float() if self.binary else target.long())
        return self.ce(output, target) + self.lovasz_weight * lov


class CircleL1(ModeLoss):
    """Smooth-L1 between predicted and true circle parameters (cx, cy, r), in pixels."""

    modes = ("regression",)

    def __init__(self, mode: str = "regression", beta: float = 1.0) -> None:
        super().__init__(mode)
        self.beta = float(beta)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(output.float(), target.float(), beta=self.beta)


# --- per-pixel values (output kind dense_values): a target pixel with NaN in any channel is invalid


def valid_pixels(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pred [N, C], truth [N, C], sample [N])`` of the valid pixels of ``[B, C, H, W]`` maps: those whose
    target is finite in every channel, selected before any arithmetic (a NaN target times a zero
    weight would still give a NaN gradient)."""
    valid = torch.isfinite(target).all(1)
    sample = valid.nonzero()[:, 0]
    return output.permute(0, 2, 3, 1)[valid].float(), target.permute(0, 2, 3, 1)[valid].float(), sample


class DenseLoss(ModeLoss):
    """A loss on per-pixel values over the target's valid pixels; none valid: zero, with no gradient."""

    modes = ("dense_regression",)

    def __init__(self, mode: str = "dense_regression") -> None:
        super().__init__(mode)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, truth, sample = valid_pixels(output, target)
        if not len(pred):
            return output.sum() * 0.0
        return self.pixels(pred, truth, sample, output.shape[0])

    def pixels(self, pred: torch.Tensor, truth: torch.Tensor, sample: torch.Tensor, batch: int
               ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MaskedL1(DenseLoss):
    """Mean absolute error over the valid pixels' values: LibMTL's NYUv2 depth loss (its sum of
    ``|pred - gt|`` over valid pixels divided by their count; per value when C > 1)."""

    def pixels(self, pred, truth, sample, batch) -> torch.Tensor:
        return (pred - truth).abs().mean()


class Cosine(DenseLoss):
    """1 - cosine similarity of predicted and true vectors, averaged over the valid pixels: LibMTL's NYUv2
    normal loss (the prediction normalised per pixel; the target is a unit vector)."""

    def pixels(self, pred, truth, sample, batch) -> torch.Tensor:
        return 1 - (F.normalize(pred, dim=1, eps=1e-12) * truth).sum(1).mean()


class ScaleInvariantLog(DenseLoss):
    """Eigen, Puhrsch & Fergus 2014 (Depth Map Prediction from a Single Image using a Multi-Scale Deep
    Network), eq. 4: per image, with d = log(pred) - log(true) over its n valid pixels,
    ``mean(d^2) - lam * mean(d)^2``, averaged over the images with a valid pixel. ``lam`` 0.5 is the
    paper's training value (1: fully scale-invariant, 0: the plain log MSE). Pixels with a true depth
    <= 0 are invalid too (no logarithm); predictions are clamped to ``eps`` (a depth head's softplus
    can underflow to 0)."""

    def __init__(self, mode: str = "dense_regression", lam: float = 0.5, eps: float = 1e-6) -> None:
        super().__init__(mode)
        self.lam, self.eps = float(lam), float(eps)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.shape[1] != 1:
            raise ValueError(f"the scale-invariant log loss is a depth loss: one channel, got {output.shape[1]}")
        positive = target.where(target > 0, torch.full_like(target, float("nan")))  # 0 or less: no log
        return super().forward(output, positive)

    def pixels(self, pred, truth, sample, batch) -> torch.Tensor:
        d = torch.log(pred[:, 0].clamp(min=self.eps)) - torch.log(truth[:, 0])
        n = torch.bincount(sample, minlength=batch).to(d.dtype)
        s1 = torch.zeros(batch, dtype=d.dtype, device=d.device).index_add(0, sample, d)
        s2 = torch.zeros(batch, dtype=d.dtype, device=d.device).index_add(0, sample, d * d)
        has = n > 0
        n, s1, s2 = n[has], s1[has], s2[has]
        return (s2 / n - self.lam * (s1 / n) ** 2).mean()
