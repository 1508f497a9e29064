"""Splits of rendered scenes (``zoo.data.scenes``) as datasets, and their device-resident view.

A split is ``size`` scenes, scene ``i`` rendered from ``(seed, split, i)``. On the training device
(:class:`SceneView`) a split that fits in ``zoo.data.device.MAX_BYTES`` is rendered once, in chunks,
and kept there (a fixed training set: every epoch sees the same scenes, newly augmented); a larger one
(e.g. 795 scenes at NYUv2's 288x384) is rendered batch by batch. Training batches then get LibMTL's
NYUv2 augmentation (``zoo.data.dense_augment``), drawn from the loader's generator.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.dense_augment import scale_crop_flip
from zoo.data.device import MAX_BYTES
from zoo.data.scenes import SceneSettings, render_scenes

FIELDS = ("image", "mask", "depth", "normals")
#: bytes per pixel of each field as kept on the device (labels as int8: 6 classes)
_BYTES = {"image": 12, "mask": 1, "depth": 4, "normals": 12}
#: pixels rendered at once (scenes x pixels per chunk): caps the renderer's temporaries (~40 of them)
CHUNK_PIXELS = 1 << 20


def render_chunked(settings: SceneSettings, seed: int, split: str, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """``render_scenes`` over ``index`` in chunks of at most :data:`CHUNK_PIXELS` pixels."""
    h, w = settings.size
    step = max(1, CHUNK_PIXELS // (h * w))
    parts = [render_scenes(settings, seed, split, index[k:k + step]) for k in range(0, len(index), step)]
    return {f: torch.cat([p[f] for p in parts]) for f in parts[0]}


class SceneDataset(Dataset):
    """``size`` scenes of ``split``; with ``augment``, LibMTL's scale-crop and flip (training).

    ``__getitem__`` renders one scene on the host (exports, the per-sample loader, the preflight);
    training uses :meth:`device_view`.
    """

    #: ``python -m zoo.data export`` writes these samples as the nyuv2 task reads them
    export_layout = "nyuv2"

    def __init__(self, settings: SceneSettings, split: str, size: int, seed: int = 0, augment: bool = False) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"scenes in the {split} split must be an integer >= 1, got {size!r}")
        self.settings, self.split, self.size, self.seed, self.augment = settings, split, size, int(seed), augment
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.size:
            raise IndexError(f"scene {i} out of range [0, {self.size})")
        out = render_scenes(self.settings, self.seed, self.split, torch.tensor([int(i)]))
        if self.augment:
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence((self.seed, self.epoch, int(i)))
                                                    .generate_state(1)[0]))
            out = scale_crop_flip(out, gen)
        return {k: v[0] for k, v in out.items()}

    def render(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scenes ``index`` of this split, rendered on ``index``'s device (unaugmented)."""
        return render_chunked(self.settings, self.seed, self.split, index)

    def device_view(self, device: torch.device, fields: set[str] | None = None) -> "SceneView":
        return SceneView(self, device, fields)


class SceneView:
    """A split of scenes on ``device``: rendered once and kept when it fits, else rendered per batch."""

    def __init__(self, ds: SceneDataset, device: torch.device, fields: set[str] | None = None,
                 max_bytes: int = MAX_BYTES) -> None:
        self.ds, self.device = ds, torch.device(device)
        self.fields = [f for f in FIELDS if fields is None or f in fields or f == "image"]
        h, w = ds.settings.size
        need = len(ds) * h * w * sum(_BYTES[f] for f in self.fields)
        self.cache: dict[str, torch.Tensor] | None = None
        if need <= max_bytes:
            index = torch.arange(len(ds), device=self.device)
            out = ds.render(index)
            self.cache = {f: (out[f].to(torch.int8) if f == "mask" else out[f]) for f in self.fields}

    def __len__(self) -> int:
        return len(self.ds)

    def batch(self, index: torch.Tensor, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
        index = index.to(self.device)
        if self.cache is not None:
            out = {f: v[index] for f, v in self.cache.items()}
            if "mask" in out:
                out["mask"] = out["mask"].long()
        else:
            full = self.ds.render(index)
            out = {f: full[f] for f in self.fields}
        return scale_crop_flip(out, gen) if self.ds.augment else out
