"""Exact metrics of per-pixel values (depth, surface normals) over a whole split.

As the other metrics (``zoo.core.metrics``), each keeps float64 sums in ``state``, so a distributed run
sums them across ranks and computes what one process would. Only the target's valid pixels count (finite
in every channel; a depth also > 0). The definitions are LibMTL's NYUv2 metrics (``examples/nyu/utils.py``)
computed over every valid pixel of the split (LibMTL averages the depth errors per batch):

* ``depth`` -> ``<name>_abs_err`` mean |pred - true| (the target's unit), ``<name>_rel_err`` mean
  |pred - true| / true, both lower-is-better; ``<name>_delta1/2/3`` % of pixels with
  max(pred / true, true / pred) < 1.25, 1.25², 1.25³ (Eigen et al. 2014), higher-is-better.
* ``normals`` -> the angle between the (normalised) predicted and the true normal, in degrees:
  ``<name>_mean`` and ``<name>_median`` (lower-is-better) and ``<name>_within_11_25``, ``_within_22_5``,
  ``_within_30``, the % of pixels under those angles. The median is read from a histogram of
  :data:`ANGLE_BIN` degree bins (what sums across ranks): the centre of the bin holding the middle angle (the
  mean of the two middle ones' bins for an even count, as numpy's median), within half a bin of the exact one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zoo.core.losses import valid_pixels
from zoo.core.metrics import Metric, pct

#: the normals' histogram bin width, degrees (the median angle is exact to half of it)
ANGLE_BIN = 0.01
ANGLE_BINS = round(180 / ANGLE_BIN)
DELTAS = (1.25, 1.25**2, 1.25**3)
ANGLES = (11.25, 22.5, 30.0)


class DepthErrors(Metric):
    lower_is_better = ("abs_err", "rel_err")

    def state_size(self) -> int:
        return 6  # valid pixels, sum |d|, sum |d| / true, within delta 1, 2, 3

    def update(self, preds, batch) -> None:
        target = batch[self.target].float()
        target = target.where(target > 0, torch.full_like(target, float("nan")))  # no ratio to a depth of 0
        pred, true, _ = valid_pixels(preds[self.head].float(), target)
        pred, true = pred[:, 0].double(), true[:, 0].double()
        err = (pred - true).abs()
        ratio = torch.maximum(pred / true, true / pred)  # a prediction of 0: inf, never within
        self.state += torch.stack([torch.tensor(float(len(err)), dtype=torch.float64, device=err.device), err.sum(),
                                   (err / true).sum(), *[(ratio < d).sum().double() for d in DELTAS]]).cpu()

    def compute(self) -> dict[str, float]:
        n = float(self.state[0])
        mean = (lambda v: float(v) / n) if n else (lambda v: float("nan"))
        out = {f"{self.name}_abs_err": mean(self.state[1]), f"{self.name}_rel_err": mean(self.state[2])}
        out.update({f"{self.name}_delta{k}": pct(self.state[2 + k], n) for k in (1, 2, 3)})
        return out


class NormalErrors(Metric):
    lower_is_better = ("mean", "median")

    def state_size(self) -> int:
        return 2 + len(ANGLES) + ANGLE_BINS  # valid pixels, sum of angles, within each angle, the histogram

    def update(self, preds, batch) -> None:
        pred, true, _ = valid_pixels(preds[self.head].float(), batch[self.target].float())
        cos = (F.normalize(pred.double(), dim=1, eps=1e-12) * true.double()).sum(1).clamp(-1, 1)
        angle = torch.rad2deg(torch.acos(cos))
        hist = torch.bincount((angle / ANGLE_BIN).long().clamp(0, ANGLE_BINS - 1), minlength=ANGLE_BINS).double()
        head = torch.stack([torch.tensor(float(len(angle)), dtype=torch.float64, device=angle.device), angle.sum(),
                            *[(angle < a).sum().double() for a in ANGLES]])
        self.state += torch.cat([head, hist]).cpu()

    def compute(self) -> dict[str, float]:
        n = float(self.state[0])
        hist = self.state[2 + len(ANGLES):]
        median = float("nan")
        if n:  # as numpy's: the middle angle, or the mean of the two middle ones, each its bin's centre
            cum = hist.cumsum(0)
            ranks = torch.tensor([math.floor((n + 1) / 2), math.ceil((n + 1) / 2)], dtype=torch.float64)
            median = (float(torch.searchsorted(cum, ranks).double().mean()) + 0.5) * ANGLE_BIN
        out = {f"{self.name}_mean": float(self.state[1]) / n if n else float("nan"), f"{self.name}_median": median}
        out.update({f"{self.name}_within_{str(a).rstrip('0').rstrip('.').replace('.', '_')}": pct(self.state[2 + i], n)
                    for i, a in enumerate(ANGLES)})
        return out
