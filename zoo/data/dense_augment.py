"""LibMTL's NYUv2 training augmentation, batched on the device: a random scale-crop, then a random
left-right flip, applied alike to a batch's image and its dense targets.

As in LibMTL (``examples/nyu/create_dataset.py``, after MTAN): per sample a scale ``sc`` from
``(1.0, 1.2, 1.5)``, a crop of ``int(H / sc)`` x ``int(W / sc)`` at a uniform position, resized back to
``H`` x ``W``: the image and the normals bilinearly (``align_corners=True``), the labels and the depth by
nearest neighbour (``F.interpolate``'s ``nearest``: source pixel ``floor(y * h / H)``), the depth divided
by ``sc`` (the zoomed view is as if the camera were ``sc`` times closer); then, with probability 1/2,
everything mirrored left-right and the normals' x negated (camera x points right).

Fields are known by their batch names (``image``, ``mask``, ``depth``, ``normals``); other fields pass
through. Per-sample parameters come from a generator of the batch's device: no host round trip.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SCALES = (1.0, 1.2, 1.5)


def scale_crop_flip(batch: dict[str, torch.Tensor], gen: torch.Generator | None,
                    scales: tuple[float, ...] = SCALES, flip: bool = True) -> dict[str, torch.Tensor]:
    """The batch (fields ``[B, C, H, W]``, or ``[B, H, W]`` labels) scale-cropped and flipped per sample."""
    image = batch["image"]
    b, _, h, w = image.shape
    dev = image.device
    sc = torch.tensor(scales, device=dev, dtype=torch.float64)[
        torch.randint(len(scales), (b,), generator=gen, device=dev)]
    ch, cw = (h / sc).long(), (w / sc).long()  # int(height / sc), as LibMTL
    top = (torch.rand(b, generator=gen, device=dev, dtype=torch.float64) * (h - ch + 1)).long().clamp_max(h - ch)
    left = (torch.rand(b, generator=gen, device=dev, dtype=torch.float64) * (w - cw + 1)).long().clamp_max(w - cw)
    mirrored = (torch.rand(b, generator=gen, device=dev) < 0.5) if flip else torch.zeros(b, dtype=torch.bool,
                                                                                           device=dev)
    oy = torch.arange(h, device=dev, dtype=torch.float64)
    ox = torch.arange(w, device=dev, dtype=torch.float64)
    ox = torch.where(mirrored[:, None], (w - 1) - ox[None], ox[None])  # [B, W] output column read per sample
    # bilinear, align_corners: output pixel y reads crop coordinate y * (ch - 1) / (h - 1)
    sy = top[:, None] + oy[None] * ((ch - 1) / max(h - 1, 1))[:, None]
    sx = left[:, None] + ox * ((cw - 1) / max(w - 1, 1))[:, None]
    grid = torch.stack(torch.broadcast_tensors((sx * (2.0 / max(w - 1, 1)) - 1)[:, None, :],
                                               (sy * (2.0 / max(h - 1, 1)) - 1)[:, :, None]), -1).float()
    # nearest: output pixel y reads crop row floor(y * ch / h)
    ny = top[:, None] + torch.floor(oy[None] * (ch / h)[:, None]).long()
    nx = left[:, None] + torch.floor(ox * (cw / w)[:, None]).long()
    rows, cols = ny[:, :, None], nx[:, None, :]
    bi = torch.arange(b, device=dev)[:, None, None]

    def bilinear(x: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=True).to(x.dtype)

    def nearest(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return x[bi, rows, cols]
        return x[bi, :, rows, cols].permute(0, 3, 1, 2)

    out = dict(batch)
    out["image"] = bilinear(image)
    if "mask" in batch:
        out["mask"] = nearest(batch["mask"])
    if "depth" in batch:
        out["depth"] = nearest(batch["depth"]) / sc.view(b, 1, 1, 1).to(batch["depth"].dtype)
    if "normals" in batch:
        n = bilinear(batch["normals"])
        sign = torch.where(mirrored, -1.0, 1.0).to(n.dtype)
        out["normals"] = torch.cat([n[:, :1] * sign.view(b, 1, 1, 1), n[:, 1:]], 1)
    return out
