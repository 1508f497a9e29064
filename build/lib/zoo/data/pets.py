"""Oxford-IIIT Pet files: ``images/*.jpg`` + ``annotations/trimaps/*.png`` (1 = pet, 2 = background,
3 = boundary) -> binary pet mask, pet + boundary = foreground."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.folder import read_image, read_mask, resize_pair, to_sample
from zoo.data.idx import DataError

TRIMAP_VALUES = (1, 2, 3)


def trimap_to_binary(trimap: np.ndarray, path: Path) -> np.ndarray:
    bad = np.setdiff1d(np.unique(trimap), TRIMAP_VALUES)
    if bad.size:
        raise DataError(f"{path}: trimap values {bad.tolist()} are not pet (1), background (2) or boundary (3)")
    return ((trimap == 1) | (trimap == 3)).astype(np.uint8)


class PetsDataset(Dataset):
    def __init__(self, root: Path, names: list[str], size: tuple[int, int] | None, channels: int) -> None:
        self.root, self.names, self.size, self.channels = root, names, size, channels

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        name = self.names[i]
        img_path, tri_path = self.root / "images" / f"{name}.jpg", self.root / "annotations" / "trimaps" / f"{name}.png"
        image, trimap = read_image(img_path, self.channels), read_mask(tri_path)
        if image.shape[:2] != trimap.shape[:2]:
            raise DataError(f"{img_path} is {image.shape[1]}x{image.shape[0]} but its trimap {tri_path} is "
                            f"{trimap.shape[1]}x{trimap.shape[0]}")
        image, mask = resize_pair(image, trimap_to_binary(trimap, tri_path), self.size)
        return to_sample(image, mask)


def read_split_list(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
