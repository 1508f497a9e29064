"""What every head shares: the contract it declares, and the output kinds it declares them in."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

#: What a head's ``forward`` returns. The model (cropping padding), the losses (their mode), test-time
#: augmentation, figures and ``zoo.predict`` read this declaration, never the tensor's shape.
OUTPUT_KINDS = {
    "binary_mask": "[B, 1, H, W] foreground logits",
    "dense_classes": "[B, N, H, W] class logits (or log-probabilities) per pixel",
    "class_logits": "[B, N] class logits",
    "circle": "[B, 3] a circle (cx, cy, r) in pixels",
    "values": "[B, K] real values (regression)",
}
#: the kinds with one value per pixel
DENSE_KINDS = ("binary_mask", "dense_classes")
#: the loss mode each kind trains in: smp's ``binary`` and ``multiclass``, and ``regression``
LOSS_MODES = {"binary_mask": "binary", "dense_classes": "multiclass", "class_logits": "multiclass",
              "circle": "regression", "values": "regression"}


@dataclass
class Description:
    """What ``zoo.predict`` reports for one head on one image: ``values`` go into its record (as
    ``<head>_<key>``); ``mask`` (model pixels), ``circle`` (the user's image's pixels) and ``label``
    (class, probability) are drawn on the overlay."""

    values: dict[str, float | int] = field(default_factory=dict)
    mask: torch.Tensor | None = None
    circle: tuple[float, float, float] | None = None
    label: tuple[int, float] | None = None
    text: str | None = None  # anything else the overlay writes (a regression head's values)


class Head(nn.Module):
    """A head: ``forward(features) -> Tensor`` (raw logits or parameters) and
    ``predict(output) -> Tensor`` (the hard prediction the metrics score).

    The head declares its contract here, so the builder, the trainer and the figures read one
    attribute or hook instead of guessing (smp's ``requires_divisible_input_shape`` style):
    """

    #: what ``forward`` returns: one of ``OUTPUT_KINDS`` (a head whose kind depends on its settings
    #: overrides ``output_for``)
    output_kind: str | None = None
    #: reads the raw input image: the encoder must be built with ``input_skip: true``
    needs_input_skip: bool = False
    #: ``forward(features, size=(H, W))`` gets the unpadded input size
    needs_input_size: bool = False
    #: its output depends on the encoder's features (``False``: a head that reads only the raw input,
    #: whose encoder gradient is zero; strategies that weigh encoder gradients must leave it out)
    reads_encoder: bool = True
    #: the loss and batch field that train it when the task entry does not name them
    default_loss: str | None = None
    default_target: str | None = None
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

    @classmethod
    def output_for(cls, settings: dict) -> str:
        """The output kind of a head built with ``settings``, read before any head exists (a head whose
        kind depends on its settings overrides this, and sets ``output_kind`` on the instance to match)."""
        if cls.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"{cls.__name__} declares output_kind {cls.output_kind!r}; a head declares what its "
                             f"forward returns, one of: {', '.join(OUTPUT_KINDS)}")
        return cls.output_kind

    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        super().__init__()
        if len(channels) != len(reductions) or not channels:
            raise ValueError(f"channels {channels} and reductions {reductions} must be non-empty and of equal length")
        self.channels = list(channels)
        self.reductions = list(reductions)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def shift_output(self, output: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        """Undo a ``(dy, dx)`` roll of the input on this head's output (test-time augmentation):
        dense maps roll back, a circle's centre moves back, anything else is shift-invariant."""
        if self.output_kind in DENSE_KINDS:
            return torch.roll(output, (-dy, -dx), (2, 3))
        if self.output_kind == "circle":
            return output - output.new_tensor([dx, dy, 0])
        return output

    def check_output(self, output: torch.Tensor, target: torch.Tensor) -> str | None:
        """What is wrong with training ``output`` against ``target`` (``None``: they fit). The
        default: one output per sample, and what the declared kind needs of its target."""
        if output.shape[0] != target.shape[0]:
            return "batch sizes differ"
        if self.output_kind in DENSE_KINDS and (target.dim() != 3 or output.shape[-2:] != target.shape[-2:]):
            return "a dense output [B, C, H, W] needs a target [B, H, W] of the same height and width"
        if self.output_kind == "class_logits" and target.dim() != 1:
            return "class logits [B, N] need a target [B] of class indices"
        if self.output_kind == "circle" and tuple(target.shape[1:]) != (3,):
            return "a circle output [B, 3] trains against a [B, 3] circle target (cx, cy, r) (target: circle)"
        return None

    def describe(self, output: torch.Tensor, pred: torch.Tensor, to_original) -> Description:
        """What ``zoo.predict`` reports for one image (a batch of one). ``to_original(x, y, r)`` maps
        model pixel coordinates onto the user's image. Class logits give the class and its
        probability, dense kinds their mask; a head with more to say overrides this."""
        if self.output_kind == "class_logits":
            prob = output.float().softmax(1)[0]
            label = (int(prob.argmax()), round(float(prob.max()), 6))
            return Description({"class": label[0], "prob": label[1]}, label=label)
        if self.output_kind in DENSE_KINDS:  # the record says what the mask holds; the mask is a PNG beside it
            mask = pred[0]
            if self.output_kind == "binary_mask":
                return Description({"foreground_pct": round(100.0 * float((mask > 0).float().mean()), 4)}, mask=mask)
            return Description({"classes": " ".join(str(int(c)) for c in torch.unique(mask).tolist())}, mask=mask)
        if self.output_kind == "values":  # the raw values, and the head's own prediction when it differs (rounded)
            raw = output[0].flatten().tolist()
            values: dict[str, float | int] = ({"value": raw[0]} if len(raw) == 1 else
                                              {f"value_{i}": v for i, v in enumerate(raw)})
            hard = pred[0].flatten().tolist() if pred.dim() else [pred.item()]
            if hard != raw:
                values.update({"pred": hard[0]} if len(hard) == 1 else {f"pred_{i}": v for i, v in enumerate(hard)})
            shown = hard if hard != raw else raw
            return Description(values, text=" ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in shown))
        return Description()

    def figure_panels(self, sample: dict[str, torch.Tensor], pred: torch.Tensor,
                      target: str) -> tuple[str, list[tuple[torch.Tensor, str]]]:
        """What a prediction figure shows for one sample: a title fragment and image panels.
        A mask (a dense head's, or a circle's) is drawn beside its truth; a class goes into the title."""
        if self.output_kind == "class_logits":  # (a sample may lack the label: partial labels)
            return (f"{int(sample[target])}->{int(pred)}" if sample.get(target) is not None else f"{int(pred)}"), []
        if self.output_kind in DENSE_KINDS or self.output_kind == "circle":
            return "", [(sample[self.figure_truth or target], "true"), (pred, "pred")]
        if self.output_kind == "values":  # the predicted values go into the title
            return " ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in pred.flatten().tolist()), []
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
