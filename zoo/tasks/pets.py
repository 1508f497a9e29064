"""Oxford-IIIT Pet: ``images/*.jpg`` + ``annotations/trimaps/*.png`` (1 = pet, 2 = background,
3 = boundary) -> binary pet mask, pet + boundary = foreground. ``--data-root`` is that folder, or
torchvision's root (the folder holding ``oxford-iiit-pet/``, as ``OxfordIIITPet(root)`` downloads
it); trimaps may be grayscale or palette PNGs.

Splits: ``annotations/trainval.txt`` / ``annotations/test.txt`` when present (the official
lists: the first column is the image name), else a seeded split. Images are resized
bilinear, masks nearest.
"""
from __future__ import annotations

from pathlib import Path

from zoo.data.folder import check_readable, check_size
from zoo.data.idx import DataError
from zoo.data.pets import PetsDataset, read_split_list
from zoo.data.split import limit, split_items
from zoo.data.config import DataConfig
from zoo.tasks.base import Task, TaskData, sample_info


class PetsTask(Task):
    """Binary pet segmentation on the Oxford-IIIT Pet layout."""
    needs_root = "the pets task needs --data-root DIR (with images/ and annotations/trimaps/)"

    in_all = False

    def __init__(self, size: list[int] | None = (128, 128), channels: int = 3) -> None:
        self.size = check_size(size)
        if channels not in (1, 3):
            raise ValueError(f"pets task channels must be 1 or 3, got {channels!r}")
        self.channels = channels

    def datasets(self, data: DataConfig) -> TaskData:
        self.check_data(data)
        root = Path(data.root)
        if not (root / "images").is_dir() and (root / "oxford-iiit-pet").is_dir():
            root = root / "oxford-iiit-pet"  # torchvision's OxfordIIITPet(root) layout: the folder that holds it
        for d in (root / "images", root / "annotations" / "trimaps"):
            if not d.is_dir():
                raise DataError(f"{root}: missing folder {d.relative_to(root)}/ (Oxford-IIIT Pet layout: images/*.jpg, "
                                f"annotations/trimaps/*.png; give that folder, or the folder holding oxford-iiit-pet/ "
                                "as torchvision lays it out)")
        images = {p.stem for p in (root / "images").glob("*.jpg")}
        trimaps = {p.stem for p in (root / "annotations" / "trimaps").glob("*.png") if not p.name.startswith("._")}
        if images - trimaps:
            raise DataError(f"{root / 'images'}: {len(images - trimaps)} image(s) without a trimap, e.g. "
                            f"{sorted(images - trimaps)[0]}.jpg")
        if trimaps - images:
            raise DataError(f"{root / 'annotations' / 'trimaps'}: {len(trimaps - images)} trimap(s) without an image, "
                            f"e.g. {sorted(trimaps - images)[0]}.png")
        trainval, test = read_split_list(root / "annotations" / "trainval.txt"), read_split_list(root / "annotations" / "test.txt")
        if trainval is not None and test is not None:
            unknown = [n for n in trainval + test if n not in images]
            if unknown:
                raise DataError(f"{root / 'annotations'}: split lists name {len(unknown)} missing image(s), e.g. {unknown[0]}")
            train, val, _ = split_items(trainval, data.val_fraction, 0.0, data.seed, "images")
        else:
            train, val, test = split_items(sorted(images), data.val_fraction, 0.2, data.seed, "images")
        train, test = limit(train, data.train_limit), limit(test, data.test_limit)
        for split, names in (("train", train), ("val", val), ("test", test)):
            check_readable(f"{root} {split}", [root / "images" / f"{n}.jpg" for n in names], self.size,
                           [root / "annotations" / "trimaps" / f"{n}.png" for n in names])
        make = lambda names: {"main": PetsDataset(root, names, self.size, self.channels)}  # noqa: E731
        return TaskData(train=make(train), val=make(val), test=make(test), in_channels=self.channels,
                        info={"data_source": str(root), **sample_info(train, val, test)})
