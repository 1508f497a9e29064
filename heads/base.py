"""What every head shares."""
from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """A head: ``forward(features) -> Tensor`` (raw logits or parameters) and
    ``predict(output) -> Tensor`` (the hard prediction the metrics score).

    The head declares its contract here, so the builder, the trainer and the figures read one
    attribute or hook instead of guessing (smp's ``requires_divisible_input_shape`` style):
    """

    #: reads the raw input image: the encoder must be built with ``input_skip: true``
    needs_input_skip: bool = False
    #: ``forward(features, size=(H, W))`` gets the unpadded input size
    needs_input_size: bool = False
    #: the loss and batch field that train it when the task entry does not name them
    default_loss: str | None = None
    default_target: str | None = None
    #: predicts one of N classes per pixel: the task gives it the data's class count
    dense_classes: bool = False
    #: the batch field a figure draws as this head's truth (``None``: its training target)
    figure_truth: str | None = None
    #: what an exported graph's output is, and the post-processing ``predict`` does outside it
    export_note: str = "raw output; see the head's predict"

    @classmethod
    def defaults(cls, settings: dict) -> tuple[str | None, str | None]:
        """The loss and the batch field that train a head built with ``settings`` when its task entry
        names neither: read from the class, before any head exists (a head whose defaults depend on
        its settings overrides this)."""
        return cls.default_loss, cls.default_target

    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        if len(channels) != len(reductions) or not channels:
            raise ValueError(f"channels {channels} and reductions {reductions} must be non-empty and of equal length")
        self.channels = list(channels)
        self.reductions = list(reductions)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def shift_output(self, output: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        """Undo a ``(dy, dx)`` roll of the input on this head's output (test-time augmentation).
        Dense maps roll back; anything else is taken as shift-invariant."""
        return torch.roll(output, (-dy, -dx), (2, 3)) if output.dim() == 4 else output

    def check_output(self, output: torch.Tensor, target: torch.Tensor) -> str | None:
        """What is wrong with training ``output`` against ``target`` (``None``: they fit). The
        default: one output per sample, and a dense output has the target's height and width."""
        if output.shape[0] != target.shape[0]:
            return "batch sizes differ"
        if output.dim() == 4 and (target.dim() != 3 or output.shape[-2:] != target.shape[-2:]):
            return "a dense output [B, C, H, W] needs a target [B, H, W] of the same height and width"
        return None

    def describe(self, output: torch.Tensor, pred: torch.Tensor,
                 to_original) -> tuple[dict[str, float], torch.Tensor | None]:
        """What ``zoo.predict`` reports for one image (a batch of one): named values, and a mask in
        model pixels (``None`` if the head has none). ``to_original(x, y, r)`` maps model pixel
        coordinates onto the user's image. Class logits give the class and its probability."""
        if output.dim() == 2:
            prob = output.float().softmax(1)[0]
            return {"class": int(prob.argmax()), "prob": round(float(prob.max()), 6)}, None
        return {}, pred[0] if pred.dim() == 3 else None

    def figure_panels(self, sample: dict[str, torch.Tensor], pred: torch.Tensor,
                      target: str) -> tuple[str, list[tuple[torch.Tensor, str]]]:
        """What a prediction figure shows for one sample: a title fragment and image panels.
        A 2-D prediction is drawn beside its truth; a class goes into the title."""
        if pred.dim() == 2:
            return "", [(sample[self.figure_truth or target], "true"), (pred, "pred")]
        if pred.dim() == 0 and sample.get(target) is not None and sample[target].dim() == 0:
            return f"{int(sample[target])}->{int(pred)}", []
        return "", []


def global_pool(features: torch.Tensor) -> torch.Tensor:
    """Global average and max pooling of a feature map ``[B, C, H, W]``: ``[B, 2C]``."""
    return torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1)


def require_input_skip(head: str, reductions: list[int]) -> None:
    """Heads that read the raw input need it first in the feature list, at stride 1."""
    if reductions[0] != 1:
        raise ValueError(f"{head} reads the raw input, so the encoder must pass it on: build it with "
                         "input_skip: true (e.g. --encoder-arg input_skip=true)")


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Validate an integer setting with a clear message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
