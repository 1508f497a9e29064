"""One owner of "run the heads of a stream on a batch": the forward (with or without test-time
augmentation), the hard predictions, and each head's loss. Training, evaluation, preflight,
figures and speed all call these, so a head's contract is read in one place."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from zoo.core.model import MultiTaskModel
from zoo.data.partial import labelled
from zoo.tasks.base import HeadSpec

TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


@dataclass
class HeadPlan:
    """A resolved head (its ``HeadSpec``: stream, batch field, ...) with its built loss: what the
    trainer runs. The spec is carried, not copied."""

    spec: HeadSpec
    loss: torch.nn.Module

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stream(self) -> str:
        return self.spec.stream

    @property
    def target(self) -> str:
        return self.spec.target


def streams(plans: list[HeadPlan]) -> dict[str, list[HeadPlan]]:
    """The plans grouped by the stream their heads read, in order."""
    by: dict[str, list[HeadPlan]] = {}
    for p in plans:
        by.setdefault(p.stream, []).append(p)
    return by


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA (fp16 where bf16 is missing); float32 elsewhere (slower on this CPU, measured)."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def run_heads(model: MultiTaskModel, images: torch.Tensor, heads: list[HeadPlan] | list[str],
              tta: bool = False, mirror: bool = False) -> dict[str, torch.Tensor]:
    """The raw outputs of ``heads`` on ``images``. With ``tta`` they are averaged over the input and
    its 1-pixel shifts, each head undoing the shift on its own output (``Head.shift_output``); with
    ``mirror`` too (a task whose images may be mirrored, ``Task.mirrors``) over the left-right mirrored
    input, each head mirroring its output back (``Head.flip_output``: a normal's x changes sign)."""
    names = [h if isinstance(h, str) else h.name for h in heads]
    if not tta:
        return model(images, heads=names)
    acc: dict[str, torch.Tensor] = {}
    n = len(TTA_SHIFTS) + bool(mirror)
    for dy, dx in TTA_SHIFTS:
        out = model(torch.roll(images, (dy, dx), (2, 3)), heads=names)
        for k, v in out.items():
            acc[k] = acc.get(k, 0) + model.heads[k].shift_output(v.float(), dy, dx) / n
    if mirror:
        out = model(torch.flip(images, (3,)), heads=names)
        for k, v in out.items():
            acc[k] = acc[k] + model.heads[k].flip_output(v.float(), images.shape[3]) / n
    return acc


def predictions(model: MultiTaskModel, outputs: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hard predictions (what the metrics score) from raw outputs, at the input's size."""
    return model.predict({k: v.detach().float() for k, v in outputs.items()}, size=tuple(images.shape[-2:]))


def head_losses(outputs: dict[str, torch.Tensor], batch: dict, heads: list[HeadPlan]) -> dict[str, torch.Tensor]:
    """Each head's loss on its stream's batch.

    A sample whose target for a head is missing (``batch["valid"][target]`` False: partial
    labels) is left out of that head's loss; a batch with no labelled sample gives the head a
    zero loss (no gradient) rather than a NaN.
    """
    losses = {}
    for h in heads:
        keep = labelled(batch, (h.target,))
        if keep is None:
            losses[h.name] = h.loss(outputs[h.name], batch[h.target])
        elif bool(keep.any()):  # partial labels only: a host sync to pick the samples
            losses[h.name] = h.loss(outputs[h.name][keep], batch[h.target][keep])
        else:
            losses[h.name] = outputs[h.name].sum() * 0.0
    return losses


def step_losses(model: MultiTaskModel, batches: dict[str, dict], by_stream: dict[str, list[HeadPlan]]
                ) -> dict[str, torch.Tensor]:
    """Every head's loss, each stream's batch through the encoder once with the heads that read it."""
    losses: dict[str, torch.Tensor] = {}
    for stream, heads in by_stream.items():
        batch = batches[stream]
        losses.update(head_losses(run_heads(model, batch["image"], heads), batch, heads))
    return losses
