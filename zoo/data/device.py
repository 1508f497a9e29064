"""Device-resident datasets: the whole split lives on the training device and a batch is an index
gather plus batched augmentation (``zoo.data.batched``), so the step never waits for the host.

A dataset offers this by a ``device_view(device, fields)`` method returning a view with
``len(view)`` and ``view.batch(index, generator) -> dict[str, Tensor]``, the same fields,
dtypes and shapes its ``__getitem__`` gives (stacked). ``fields`` names what the consumer
reads (the image, the heads' targets, the metrics' targets): fields that cost work per batch
(the augmented digit's minimum enclosing circle) are computed only when named.

Labels stay consistent exactly as in the per-sample path:
- the mask of an augmented digit is the warped image above that digit's own Otsu threshold
  (nearest warps copy pixels, so it is the thresholded image); with ``gamma``/``rethreshold``
  it is Otsu of the augmented image, computed per image on the device;
- composites are assembled from the augmented digit tensors on the device;
- circles are OpenCV's ``minEnclosingCircle`` of the augmented mask, only where asked for (a
  host round trip: no batched minimum enclosing circle exists).

Datasets whose samples never change between epochs (no augmentation) and that fit under
:data:`MAX_BYTES` are cached whole by :class:`CachedView`; anything else keeps a ``DataLoader``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from zoo.core.geometry import enclosing_circle, rasterize_circles
from zoo.data.augment import Augment
from zoo.data.batched import BatchAugment, exact_float, otsu_thresholds

#: the largest split (all fields, as stacked tensors) kept on the device; bigger ones use a DataLoader
MAX_BYTES = 1 << 30
CIRCLE_FIELDS = ("circle", "circle_mask")


def circle_fields(masks: torch.Tensor, fields: set[str] | None) -> dict[str, torch.Tensor]:
    """OpenCV's minimum enclosing circle of each mask (on the host) and its rasterization (on the
    masks' device), for the fields asked for."""
    if fields is not None and not fields & set(CIRCLE_FIELDS):
        return {}
    host = masks.to("cpu", torch.uint8).numpy()
    circles = torch.tensor(np.array([enclosing_circle(m) for m in host], dtype=np.float32).reshape(-1, 3))
    return with_rasters(circles.to(masks.device), *masks.shape[-2:])


def with_rasters(circles: torch.Tensor, h: int, w: int) -> dict[str, torch.Tensor]:
    """The ``circle`` and ``circle_mask`` fields of circles ``[B, 3]`` (rasterized as the per-sample path does)."""
    return {"circle": circles, "circle_mask": rasterize_circles(circles.to(exact_float(circles.device)), h, w).long()}


class DigitView:
    """A split of digits (``zoo.data.digits.Digits``) on ``device``: uint8 images, labels, thresholds."""

    def __init__(self, digits: Any, augment: Augment | None, device: torch.device, fields: set[str] | None) -> None:
        self.device, self.fields = device, fields
        self.augment = BatchAugment(augment) if augment is not None and augment.active else None
        self.images = torch.from_numpy(np.array(digits.images)).to(device)  # a copy: the source may be read-only
        self.labels = torch.from_numpy(digits.labels.astype(np.int64)).to(device)
        self.thresholds = torch.from_numpy(digits.thresholds.astype(np.int64)).to(device)
        if self.augment is None:  # unaugmented: the per-sample path's precomputed fields
            self.masks = torch.from_numpy(digits.masks).to(device)
            self.circles = torch.from_numpy(digits.circles.astype(np.float32)).to(device)

    def __len__(self) -> int:
        return len(self.images)

    def images_masks(self, index: torch.Tensor, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and 0/1 foreground masks ``[B, H, W]`` of digits ``index``, augmented."""
        images = self.images[index]
        if self.augment is None:
            return images, self.masks[index]
        images = self.augment(images, gen)
        thr = otsu_thresholds(images) if self.augment.rethresholds else self.thresholds[index]
        return images, (images > thr.view(-1, 1, 1)).to(torch.uint8)

    def batch(self, index: torch.Tensor, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
        images, masks = self.images_masks(index, gen)
        out = {"image": images[:, None].float() / 255.0, "label": self.labels[index], "mask": masks.long()}
        if self.augment is None:
            if self.fields is None or self.fields & set(CIRCLE_FIELDS):
                out.update(with_rasters(self.circles[index], *images.shape[-2:]))
        else:
            out.update(circle_fields(masks, self.fields))
        return out


class CompositeView:
    """2x2 composites assembled on the device from a :class:`DigitView` of their split's digits."""

    def __init__(self, digits: DigitView, ids: torch.Tensor, labelling: str, background: int) -> None:
        self.digits, self.labelling, self.background = digits, labelling, background
        self.ids = ids.to(digits.device)  # [size, 4]: top-left, top-right, bottom-left, bottom-right

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: torch.Tensor, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
        ids = self.ids[index]  # [B, 4]
        b = len(ids)
        images, fg = self.digits.images_masks(ids.flatten(), gen)  # each quadrant's digit augmented on its own
        h, w = images.shape[-2:]
        labels = self.digits.labels[ids]  # [B, 4]
        per_pixel = labels.view(-1, 1, 1).expand(-1, h, w)
        if self.labelling == "pixel":
            per_pixel = torch.where(fg.bool(), per_pixel, torch.full_like(per_pixel, self.background))

        def tile(x: torch.Tensor) -> torch.Tensor:  # [4B, h, w] -> [B, 2h, 2w]
            return x.view(b, 2, 2, h, w).permute(0, 1, 3, 2, 4).reshape(b, 2 * h, 2 * w)

        return {"image": tile(images)[:, None].float() / 255.0, "mask": tile(per_pixel).long(), "labels": labels}


class PartialView:
    """A view whose samples carry only some targets (``zoo.data.partial.PartialLabels``)."""

    def __init__(self, inner: Any, valid: dict[str, torch.Tensor]) -> None:
        self.inner, self.valid = inner, valid

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, index: torch.Tensor, gen: torch.Generator | None) -> dict[str, Any]:
        out = self.inner.batch(index, gen)
        out["valid"] = {t: v[index] for t, v in self.valid.items()}
        return out


class CachedView:
    """Every sample of an epoch-invariant dataset, stacked once and kept on the device."""

    def __init__(self, tensors: dict[str, Any], n: int) -> None:
        self.tensors, self.n = tensors, n

    def __len__(self) -> int:
        return self.n

    def batch(self, index: torch.Tensor, gen: torch.Generator | None) -> dict[str, Any]:
        return {k: ({kk: vv[index] for kk, vv in v.items()} if isinstance(v, dict) else v[index])
                for k, v in self.tensors.items()}


def _nbytes(sample: dict[str, Any]) -> int:
    return sum(_nbytes(v) if isinstance(v, dict) else v.numel() * v.element_size()
               for v in sample.values() if isinstance(v, dict) or torch.is_tensor(v))


def device_view(ds: Dataset, device: torch.device, fields: set[str] | None = None, max_bytes: int = MAX_BYTES):
    """``ds`` as a device-resident view, or ``None`` when it keeps a DataLoader (it offers no view,
    its samples change between epochs, or it does not fit in ``max_bytes``)."""
    if hasattr(ds, "device_view"):
        return ds.device_view(device, fields)
    if not getattr(ds, "epoch_invariant", False) or len(ds) == 0:
        return None
    first = ds[0]
    if _nbytes(first) * len(ds) > max_bytes:
        return None
    stacked = default_collate([first] + [ds[i] for i in range(1, len(ds))])
    moved = {k: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v.to(device))
             for k, v in stacked.items()}
    return CachedView(moved, len(ds))
