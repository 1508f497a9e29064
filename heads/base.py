"""What every head shares: the contract it declares (its output kind is one of ``zoo.core.kinds``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from zoo.core.kinds import DENSE_KINDS, OUTPUT_KINDS


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
    #: per-pixel values ``[C, H, W]`` (model pixels): ``zoo.predict`` maps them onto the user's image and
    #: writes them as ``.npy`` and as the head's picture (``Head.picture``)
    dense: torch.Tensor | None = None


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
    #: output channels that change sign when the image is mirrored left-right (a normal's x)
    mirror_channels: tuple[int, ...] = ()

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

    def flip_output(self, output: torch.Tensor, width: int) -> torch.Tensor:
        """Undo a left-right mirror of an input ``width`` pixels wide on this head's output (test-time
        augmentation of a task whose images may be mirrored): dense maps mirror back and the channels in
        ``mirror_channels`` change sign (a normal's x), a circle's centre mirrors, classes and values
        are left as they are."""
        if self.output_kind in DENSE_KINDS:
            out = torch.flip(output, (3,))
            if self.mirror_channels:
                sign = torch.ones(out.shape[1], dtype=out.dtype, device=out.device)
                sign[list(self.mirror_channels)] = -1
                out = out * sign.view(1, -1, 1, 1)
            return out
        if self.output_kind == "circle":
            return output * output.new_tensor([-1, 1, 1]) + output.new_tensor([width - 1, 0, 0])
        return output

    def check_output(self, output: torch.Tensor, target: torch.Tensor) -> str | None:
        """What is wrong with training ``output`` against ``target`` (``None``: they fit). The
        default: one output per sample, and what the declared kind needs of its target."""
        if output.shape[0] != target.shape[0]:
            return "batch sizes differ"
        if self.output_kind == "dense_values":
            if target.dim() != 4 or target.shape[1:] != output.shape[1:] or not target.is_floating_point():
                return (f"a dense_values output {list(output.shape[1:])} needs a float target [B, "
                        f"{', '.join(map(str, output.shape[1:]))}] (NaN where invalid)")
            return None
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
        if self.output_kind == "dense_values":  # the values go to .npy and a picture; the record their range
            v = pred[0].float()
            return Description({"min": round(float(v.min()), 6), "mean": round(float(v.mean()), 6),
                                "max": round(float(v.max()), 6)}, dense=v)
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
        if self.output_kind == "dense_values":  # truth and prediction in one colour scale: the truth's
            truth = sample[self.figure_truth or target].float()
            lo, hi = value_range(truth)
            return "", [(torch.from_numpy(self.picture(truth, lo, hi)) / 255.0, "true"),
                        (torch.from_numpy(self.picture(pred.float(), lo, hi)) / 255.0, "pred")]
        if self.output_kind in DENSE_KINDS or self.output_kind == "circle":
            return "", [(sample[self.figure_truth or target], "true"), (pred, "pred")]
        if self.output_kind == "values":  # the predicted values go into the title
            return " ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in pred.flatten().tolist()), []
        return "", []


    def picture(self, values: torch.Tensor, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        """Per-pixel values ``[C, H, W]`` as an RGB uint8 picture ``[H, W, 3]``: the first channel through
        the viridis colour map from ``lo`` to ``hi`` (default: its own finite range); NaN pixels black.
        A head whose values are a direction (normals) overrides this."""
        import cv2  # only when a picture is drawn

        v = values[0].float()  # (a [C, H, W] map)
        if lo is None or hi is None:
            lo, hi = value_range(v)
        scaled = ((v - lo) / max(hi - lo, 1e-12)).clamp(0, 1).nan_to_num(0.0)
        rgb = cv2.applyColorMap((scaled * 255).round().to(torch.uint8).cpu().numpy(), cv2.COLORMAP_VIRIDIS)[..., ::-1]
        rgb = np.ascontiguousarray(rgb)
        rgb[~torch.isfinite(values).all(0).cpu().numpy()] = 0
        return rgb


def value_range(values: torch.Tensor) -> tuple[float, float]:
    """The finite range of ``values`` (0, 1 when none is finite): a picture's colour scale."""
    finite = values[torch.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)

