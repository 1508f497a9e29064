"""Write a task's split as files another task reads back: an image folder (``DIR/Images/0001.jpg`` +
``DIR/Masks/0001.png``, the folder task) or, for samples with depth and normals, the preprocessed NYUv2
layout (``DIR/train/`` or ``DIR/val/``, the nyuv2 task)."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from zoo.core.files import atomic_write_bytes
from zoo.data.idx import DataError


def export_dataset(dataset, out: Path, n: int) -> int:
    """Write the first ``n`` samples (image as JPEG, class-index mask as single-channel PNG)."""
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    n = min(n, len(dataset))
    width = max(4, len(str(n)))
    for i in range(n):
        s = dataset[i]
        img = (s["image"].numpy() * 255).round().astype(np.uint8)
        img = img[0] if img.shape[0] == 1 else cv2.cvtColor(img.transpose(1, 2, 0), cv2.COLOR_RGB2BGR)
        mask = s["mask"].numpy().astype(np.uint8)
        name = f"{i + 1:0{width}d}"
        ok1, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        ok2, png = cv2.imencode(".png", mask)
        if not (ok1 and ok2):
            raise DataError(f"could not encode sample {i}")
        atomic_write_bytes(out / "Images" / f"{name}.jpg", jpg.tobytes())
        atomic_write_bytes(out / "Masks" / f"{name}.png", png.tobytes())
    return n


#: the NYUv2 folder a split is written to: NYUv2's val/ is its held-out (test) set, which the nyuv2 task tests on
NYUV2_FOLDERS = {"train": "train", "val": "val", "test": "val"}


def export_nyuv2(dataset, out: Path, n: int, split: str) -> tuple[int, Path]:
    """Write the first ``n`` samples as MTAN's preprocessed NYUv2 files (``zoo.data.nyuv2``): ``image/N.npy``
    HxWx3 float32, ``label/N.npy`` HxW float32 (classes, -1 ignore), ``depth/N.npy`` HxWx1 float32 with a
    missing (NaN) depth written as 0, ``normal/N.npy`` HxWx3 float32 with a missing normal written as 0,
    N = 0, 1, ... Returns the count and the folder. Rendered datasets are drawn in batches (``render``)."""
    if n < 1:
        raise DataError(f"--n must be >= 1, got {n}")
    n = min(n, len(dataset))
    folder = out / NYUV2_FOLDERS[split]
    step = 64
    for start in range(0, n, step):
        index = list(range(start, min(n, start + step)))
        if hasattr(dataset, "render"):
            import torch
            batch = {k: v.cpu() for k, v in dataset.render(torch.tensor(index)).items()}
            samples = [{k: v[j] for k, v in batch.items()} for j in range(len(index))]
        else:
            samples = [dataset[i] for i in index]
        for i, s in zip(index, samples):
            missing = [f for f in ("image", "mask", "depth", "normals") if f not in s]
            if missing:
                raise DataError(f"sample {i} has no {', '.join(missing)}: the NYUv2 layout needs image, mask, depth "
                                "and normals")
            arrays = {"image": s["image"].float().permute(1, 2, 0).numpy(),
                      "label": s["mask"].numpy().astype(np.float32),
                      "depth": np.nan_to_num(s["depth"].float().permute(1, 2, 0).numpy(), nan=0.0),
                      "normal": np.nan_to_num(s["normals"].float().permute(1, 2, 0).numpy(), nan=0.0)}
            for name, a in arrays.items():
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
                atomic_write_bytes(folder / name / f"{i}.npy", buf.getvalue())
    return n, folder
