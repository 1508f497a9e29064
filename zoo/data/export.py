"""Write a task's split as an image folder: ``DIR/Images/0001.jpg`` + ``DIR/Masks/0001.png``."""
from __future__ import annotations

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
