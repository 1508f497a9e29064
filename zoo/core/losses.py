"""Per-head losses, registered by name; the heavy lifting is torch's and smp's.

Every loss is called as ``loss(output, target)``: ``output`` is the head's raw tensor,
``target`` the batch field named by the task. Dense losses handle both one-channel binary
logits (target ``[B, H, W]`` of 0/1) and N-class logits (target ``[B, H, W]`` class indices).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



def _binary(output: torch.Tensor) -> bool:
    return output.dim() == 4 and output.shape[1] == 1


class CrossEntropy(nn.Module):
    """Cross-entropy for class logits ``[B, N]`` or ``[B, N, H, W]``; BCE for one-channel logits."""

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100, class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _binary(output):
            return F.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())
        return F.cross_entropy(output.float(), target.long(), weight=self.class_weights,
                               label_smoothing=self.label_smoothing, ignore_index=self.ignore_index)


class BCE(nn.Module):
    """Binary cross-entropy on one-channel logits."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())


class Dice(nn.Module):
    """smp's soft Dice loss, binary or multi-class by the number of output channels."""

    def __init__(self, smooth: float = 0.0) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss  # smp imports timm: only when used

        self.binary = DiceLoss("binary", from_logits=True, smooth=smooth)
        self.multi = DiceLoss("multiclass", from_logits=True, smooth=smooth)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _binary(output):
            return self.binary(output.float(), target.unsqueeze(1).float())
        return self.multi(output.float(), target.long())


class BCEDice(nn.Module):
    """Cross-entropy (BCE for binary) plus soft Dice: the usual segmentation pairing."""

    def __init__(self, dice_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ce = CrossEntropy(label_smoothing=label_smoothing)
        self.dice = Dice()
        self.dice_weight = float(dice_weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(output, target) + self.dice_weight * self.dice(output, target)




class Focal(nn.Module):
    """smp's focal loss, binary or multi-class by the number of output channels."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import FocalLoss  # smp imports timm: only when used

        self.binary = FocalLoss("binary", gamma=gamma, alpha=alpha)
        self.multi = FocalLoss("multiclass", gamma=gamma, alpha=alpha)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.dim() == 2:
            return self.multi(output.float().unsqueeze(-1).unsqueeze(-1), target.long().view(-1, 1, 1))
        if _binary(output):
            return self.binary(output.float(), target.unsqueeze(1).float())
        return self.multi(output.float(), target.long())


class BCELovasz(nn.Module):
    """Cross-entropy (BCE for binary) plus smp's Lovasz loss, a direct surrogate of IoU."""

    def __init__(self, lovasz_weight: float = 1.0) -> None:
        super().__init__()
        self.ce = CrossEntropy()
        from segmentation_models_pytorch.losses import LovaszLoss  # smp imports timm: only when used

        self.binary = LovaszLoss("binary", per_image=False)
        self.multi = LovaszLoss("multiclass", per_image=False)
        self.lovasz_weight = float(lovasz_weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _binary(output):
            lov = self.binary(output.float(), target.unsqueeze(1).float())
        else:
            lov = self.multi(output.float(), target.long())
        return self.ce(output, target) + self.lovasz_weight * lov


class CircleL1(nn.Module):
    """Smooth-L1 between predicted and true circle parameters (cx, cy, r), in pixels."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(output.float(), target.float(), beta=self.beta)
