"""zoo/data/pets.py and zoo/tasks/pets.py: Oxford-IIIT Pet trimaps to binary masks, on small datasets written
here in its format (and torchvision's layout)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import write_pets
from zoo.data.idx import DataError
from zoo.data.config import DataConfig


def test_pets_trimaps_to_binary(tmp_path):
    from zoo.tasks.pets import PetsTask

    root = write_pets(tmp_path / "pets")
    data = PetsTask(size=None).datasets(DataConfig(root=str(root), val_fraction=0.25))
    assert len(data.test["main"]) == 2 and len(data.train["main"]) + len(data.val["main"]) == 4
    m = data.test["main"][0]["mask"].numpy()
    assert m[15, 20] == 1 and m[6, 11] == 1, "pet and boundary are foreground"
    assert m[0, 0] == 0 and m.sum() == 20 * 20
    small = PetsTask(size=[15, 20]).datasets(DataConfig(root=str(root), val_fraction=0.25)).test["main"][0]
    assert small["mask"].shape == (15, 20) and set(small["mask"].unique().tolist()) <= {0, 1}
    assert small["image"].shape == (3, 15, 20)


def test_pets_bad_inputs(tmp_path):
    from zoo.tasks.pets import PetsTask

    with pytest.raises(DataError, match="missing folder images"):
        PetsTask().datasets(DataConfig(root=str(tmp_path)))
    root = write_pets(tmp_path / "a")
    (root / "annotations" / "trimaps" / "Abyssinian_1.png").unlink()
    with pytest.raises(DataError, match="without a trimap, e.g. Abyssinian_1.jpg"):
        PetsTask().datasets(DataConfig(root=str(root)))
    root = write_pets(tmp_path / "b")
    (root / "images" / "Abyssinian_2.jpg").unlink()
    with pytest.raises(DataError, match="trimap.* without an image"):
        PetsTask().datasets(DataConfig(root=str(root)))
    root = write_pets(tmp_path / "c", lists=False)
    cv2.imwrite(str(root / "annotations" / "trimaps" / "Abyssinian_3.png"), np.full((30, 40), 7, np.uint8))
    data = PetsTask(size=None).datasets(DataConfig(root=str(root)))
    every = [d for split in (data.train, data.val, data.test) for d in [split["main"]]]
    with pytest.raises(DataError, match=r"trimap values \[7\]"):
        for ds in every:
            for i in range(len(ds)):
                ds[i]


@pytest.mark.parametrize("trimap_mode", ["L", "P"])
def test_pets_in_torchvisions_layout_with_palette_trimaps(tmp_path, trimap_mode):
    """torchvision's root (the folder holding oxford-iiit-pet/) and the inner folder both load, with
    grayscale or palette trimaps, to the same masks."""
    from PIL import Image

    from zoo.tasks.pets import PetsTask

    inner = write_pets(tmp_path / "tv" / "oxford-iiit-pet")
    if trimap_mode == "P":
        for f in (inner / "annotations" / "trimaps").glob("*.png"):
            im = Image.fromarray(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), "L").convert("P")
            im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
            im.save(f)
        assert Image.open(next((inner / "annotations" / "trimaps").glob("*.png"))).mode == "P"
    for root in (tmp_path / "tv", inner):
        data = PetsTask(size=None).datasets(DataConfig(root=str(root), val_fraction=0.25))
        m = data.test["main"][0]["mask"].numpy()
        assert m[15, 20] == 1 and m[6, 11] == 1 and m[0, 0] == 0 and m.sum() == 20 * 20
