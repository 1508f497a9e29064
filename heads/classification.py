"""Classification head: pooled deepest features -> N logits."""
from __future__ import annotations

import torch
from torch import nn

from zoo.core.layers import global_pool, positive_int
from zoo.heads.base import Head


class ClassificationHead(Head):
    """Logits ``[B, N]`` from global average (and max) pooling of the deepest feature map."""

    output_kind = "class_logits"
    default_loss, default_target = "ce", "label"  # when the task entry names neither

    export_note = "class logits [B, N]; class = argmax, probability = softmax"

    def __init__(self, channels: list[int], reductions: list[int], num_classes: int = 10,
                 dropout: float = 0.0, hidden: int = 0) -> None:
        super().__init__(channels, reductions)
        self.num_classes = positive_int("num_classes", num_classes, minimum=2)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        c = channels[-1] * 2  # average and max pooled
        layers: list[nn.Module] = [nn.Flatten()]
        if hidden:
            layers += [nn.Linear(c, positive_int("hidden", hidden)), nn.ReLU(inplace=True)]
            c = hidden
        layers += [nn.Dropout(float(dropout)), nn.Linear(c, num_classes)]
        self.classification_head = nn.Sequential(*layers)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classification_head(global_pool(features[-1]))

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return output.argmax(1)
