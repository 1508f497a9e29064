"""Exact metrics, accumulated over a whole split.

Each metric keeps its counts in one float64 tensor (``state``), so a distributed run sums
the states across ranks and computes the same numbers as one process. ``update`` receives
the hard predictions (``model.predict``) and the batch; ``compute`` returns percentages.

Definitions (also in the README):

* ``accuracy``: top-1 correct / samples.
* ``iou``: binary, total intersection / total union over all pixels of the split; the same
  metric also reports binary Dice 2|A∩B| / (|A| + |B|) as ``<name>_dice``.
* ``confusion`` (multi-class): from one confusion matrix over all pixels of the split;
  per class Dice 2TP/(2TP+FP+FN) and IoU TP/(TP+FP+FN); ``dice`` and ``miou`` average over the
  classes not in ``exclude`` (the background), ``dice_all``/``miou_all`` over all classes;
  ``pixel_acc``. A class absent from both prediction and truth is left out of the averages.
* ``gated_iou``: per sample, IoU of predicted and true circle masks if the predicted class
  is right, else 0; averaged over samples.
* ``depth`` and ``normals``: errors of per-pixel values (``zoo.core.dense_metrics``), some better lower.

Every metric declares which of its values are better lower (``Metric.lower_is_better``); all these
are better higher.
"""
from __future__ import annotations

from typing import Any

import torch



class Metric:
    """Accumulates ``state`` over batches; ``compute`` turns it into named percentages."""

    #: takes ``num_classes`` and ``exclude``: on a head that predicts a class per pixel, the task
    #: fills them from the data (the declaration, not the constructor's signature, says so)
    takes_class_count: bool = False
    #: the direction of each value ``compute`` returns: these (``<name>_<suffix>``) are better lower (an
    #: error), every other one higher. delta_m reads it (``lower_is_better``), with a minus sign
    lower_is_better: tuple[str, ...] = ()

    @classmethod
    def lower_keys(cls, name: str) -> set[str]:
        """The result keys of a metric of this class named ``name`` that are better lower."""
        return {f"{name}_{suffix}" for suffix in cls.lower_is_better}

    def __init__(self, name: str, head: str, target: str) -> None:
        self.name, self.head, self.target = name, head, target
        self.state = torch.zeros(self.state_size(), dtype=torch.float64)

    def state_size(self) -> int | tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def targets(self) -> tuple[str, ...]:
        """The batch fields this metric reads (a sample missing any of them is not scored)."""
        return (self.target,)

    def reset(self) -> None:
        self.state.zero_()

    def update(self, preds: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def result_keys(self) -> tuple[str, ...]:
        """The names of the values ``compute`` returns (a model's record lists its test metrics by them).
        Read from an empty state: a metric names its values the same whatever it has seen."""
        saved = self.state.clone()
        try:
            self.reset()
            return tuple(self.compute())
        finally:
            self.state.copy_(saved)


def pct(num: torch.Tensor | float, den: torch.Tensor | float) -> float:
    den = float(den)
    return 100.0 * float(num) / den if den > 0 else float("nan")


class Accuracy(Metric):
    def state_size(self) -> int:
        return 2

    def update(self, preds, batch) -> None:
        p, t = preds[self.head].cpu(), batch[self.target].cpu()
        self.state += torch.tensor([(p == t).sum().item(), t.numel()], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        return {self.name: pct(self.state[0], self.state[1])}


class BinaryIoU(Metric):
    def state_size(self) -> int:
        return 4  # intersection, union, |pred|, |true|

    def update(self, preds, batch) -> None:
        p, t = preds[self.head].cpu().bool(), batch[self.target].cpu().bool()
        inter = (p & t).sum().item()
        self.state += torch.tensor([inter, (p | t).sum().item(), p.sum().item(), t.sum().item()], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        i, u, sp, st = self.state.tolist()
        return {self.name: pct(i, u), f"{self.name}_dice": pct(2 * i, sp + st)}


class Confusion(Metric):
    takes_class_count = True

    def __init__(self, name: str, head: str, target: str, num_classes: int, exclude: list[int] | None = None,
                 prefix: str = "", per_class: bool = False) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"confusion metric needs num_classes >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.exclude = sorted(set(exclude or []))
        bad = [c for c in self.exclude if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"exclude classes {bad} are outside 0..{num_classes - 1}")
        self.prefix, self.per_class = prefix, per_class
        super().__init__(name, head, target)

    def state_size(self) -> tuple[int, int]:
        return (self.num_classes, self.num_classes)  # rows: truth, columns: prediction

    def update(self, preds, batch) -> None:
        p, t = preds[self.head].cpu().long().flatten(), batch[self.target].cpu().long().flatten()
        valid = (t >= 0) & (t < self.num_classes)
        idx = t[valid] * self.num_classes + p[valid].clamp(0, self.num_classes - 1)
        self.state += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1).double()

    def compute(self) -> dict[str, float]:
        cm = self.state
        tp = cm.diag()
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
        present = (tp + fp + fn) > 0
        dice = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        iou = tp / (tp + fp + fn).clamp(min=1)
        keep = present.clone()
        keep[self.exclude] = False

        def mean(v: torch.Tensor, mask: torch.Tensor) -> float:
            return 100.0 * float(v[mask].mean()) if mask.any() else float("nan")

        p = self.prefix
        out = {f"{p}dice": mean(dice, keep), f"{p}dice_all": mean(dice, present), f"{p}miou": mean(iou, keep),
               f"{p}miou_all": mean(iou, present), f"{p}pixel_acc": pct(tp.sum(), cm.sum())}
        if self.per_class:
            out.update({f"{p}iou_{c}": 100.0 * float(iou[c]) for c in range(self.num_classes) if present[c]})
        return out

    def result_keys(self) -> tuple[str, ...]:
        # per-class values are returned only for the classes seen: every class's name is a key
        per_class = tuple(f"{self.prefix}iou_{c}" for c in range(self.num_classes)) if self.per_class else ()
        return super().result_keys() + per_class


class GatedIoU(Metric):
    def __init__(self, name: str, head: str, target: str, gate: str, gate_target: str) -> None:
        self.gate, self.gate_target = gate, gate_target
        super().__init__(name, head, target)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target, self.gate_target)

    def state_size(self) -> int:
        return 2  # sum of gated IoUs, samples

    def update(self, preds, batch) -> None:
        p, t = preds[self.head].cpu().bool().flatten(1), batch[self.target].cpu().bool().flatten(1)
        inter = (p & t).sum(1).double()
        union = (p | t).sum(1).double()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        correct = preds[self.gate].cpu() == batch[self.gate_target].cpu()
        self.state += torch.tensor([(iou * correct).sum().item(), len(iou)], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        return {self.name: pct(self.state[0], self.state[1])}


def build_metric(registry: Any, name: str, metric: str, settings: dict[str, Any]) -> Metric:
    """Construct a registered metric with its YAML settings, naming the entry in errors."""
    cls = registry.entry("metrics", metric).obj
    try:
        return cls(name=name, **settings)
    except TypeError as exc:
        raise ValueError(f"metric {name!r} ({metric}): bad settings {settings}: {exc}") from None
