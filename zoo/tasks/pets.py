"""Oxford-IIIT Pet: ``images/*.jpg`` + ``annotations/trimaps/*.png`` (1 = pet, 2 = background,
3 = boundary) -> binary pet mask, pet + boundary = foreground.

Splits: ``annotations/trainval.txt`` / ``annotations/test.txt`` when present (the official
lists: the first column is the image name), else a seeded split. Images are resized
bilinear, masks nearest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.folder import read_image, read_mask, resize_pair, to_sample
from zoo.data.idx import DataError
from zoo.registry import register
from zoo.tasks.base import DataConfig, Task, TaskData
from zoo.tasks.folder import split_pairs

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


def _list(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


@register("tasks", "pets")
class PetsTask(Task):
    """Binary pet segmentation on the Oxford-IIIT Pet layout."""

    in_all = False

    def __init__(self, size: list[int] | None = (128, 128), channels: int = 3) -> None:
        self.size = tuple(size) if size else None
        self.channels = channels

    def datasets(self, data: DataConfig) -> TaskData:
        if not data.root:
            raise DataError("the pets task needs --data-root DIR (with images/ and annotations/trimaps/)")
        root = Path(data.root)
        for d in (root / "images", root / "annotations" / "trimaps"):
            if not d.is_dir():
                raise DataError(f"{root}: missing folder {d.relative_to(root)}/ (Oxford-IIIT Pet layout: images/*.jpg, "
                                f"annotations/trimaps/*.png)")
        images = {p.stem for p in (root / "images").glob("*.jpg")}
        trimaps = {p.stem for p in (root / "annotations" / "trimaps").glob("*.png") if not p.name.startswith("._")}
        if images - trimaps:
            raise DataError(f"{root / 'images'}: {len(images - trimaps)} image(s) without a trimap, e.g. "
                            f"{sorted(images - trimaps)[0]}.jpg")
        if trimaps - images:
            raise DataError(f"{root / 'annotations' / 'trimaps'}: {len(trimaps - images)} trimap(s) without an image, "
                            f"e.g. {sorted(trimaps - images)[0]}.png")
        trainval, test = _list(root / "annotations" / "trainval.txt"), _list(root / "annotations" / "test.txt")
        if trainval is not None and test is not None:
            unknown = [n for n in trainval + test if n not in images]
            if unknown:
                raise DataError(f"{root / 'annotations'}: split lists name {len(unknown)} missing image(s), e.g. {unknown[0]}")
            train, val, _ = split_pairs(trainval, data.val_fraction, 0.0, data.seed)
        else:
            train, val, test = split_pairs(sorted(images), data.val_fraction, 0.2, data.seed)
        if data.train_limit:
            train = train[: data.train_limit]
        if data.test_limit:
            test = test[: data.test_limit]
        make = lambda names: {"main": PetsDataset(root, names, self.size, self.channels)}  # noqa: E731
        return TaskData(train=make(train), val=make(val), test=make(test), in_channels=self.channels,
                        info={"data_source": str(root), "train_digits": len(train), "val_digits": len(val),
                              "test_digits": len(test)})
