"""zoo/data/coco.py and zoo/tasks/coco.py: COCO instance annotations to binary and multi-class masks, on small
datasets written here in COCO's format (and as it ships: bad file names, duplicate ids, overlaps, EXIF)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_clear, rgb, run_cli, square, write_coco
from zoo.data.idx import DataError
from zoo.data.config import DataConfig


def test_coco_masks(tmp_path):
    from zoo.tasks.coco import CocoBinaryTask, CocoSemanticTask

    root = write_coco(tmp_path / "coco")
    with pytest.warns(UserWarning, match="skipped 2 annotation"):
        data = CocoSemanticTask(size=None).datasets(DataConfig(root=str(root), val_fraction=0.25))
    assert data.info["num_classes"] == 3 and json.loads(data.info["category_index"]) == {"1": 1, "7": 2}
    test = data.test["main"]
    m = test[0]["mask"].numpy()
    assert m[25, 25] == 1 and m[15, 15] == 2, "cat = 1, dog = 2; the smaller dog wins the overlap"
    assert m[0, 0] == 0 and m.shape == (40, 60)
    m2 = test[1]["mask"].numpy()
    assert (m2[:10, 0] == 2).all() and m2[10, 0] == 0 and m2[2, 2] == 0, "crowd RLE painted; skipped ones not"
    assert test[1]["image"].shape == (3, 40, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = CocoBinaryTask(size=[20, 30]).datasets(DataConfig(root=str(root), val_fraction=0.25))
    mb = b.test["main"][0]["mask"]
    assert mb.shape == (20, 30) and set(mb.unique().tolist()) == {0, 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only_dog = CocoSemanticTask(size=None, categories=["dog"]).datasets(DataConfig(root=str(root), val_fraction=0.25))
    assert only_dog.info["num_classes"] == 2 and only_dog.test["main"][0]["mask"][25, 25] == 0


def test_coco_bad_inputs(tmp_path):
    from zoo.tasks.coco import CocoSemanticTask

    with pytest.raises(DataError, match="no annotations/instances_train.json"):
        CocoSemanticTask().datasets(DataConfig(root=str(tmp_path)))
    root = write_coco(tmp_path / "c")
    (root / "annotations" / "instances_val.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        CocoSemanticTask().datasets(DataConfig(root=str(root)))
    root = write_coco(tmp_path / "c2")
    with pytest.raises(DataError, match="matches none of"):
        CocoSemanticTask(categories=["zebra"]).datasets(DataConfig(root=str(root)))


def _edited_coco(tmp_path: Path, edit) -> Path:
    root = write_coco(tmp_path / "c")
    f = root / "annotations" / "instances_train.json"
    data = json.loads(f.read_text())
    edit(data)
    f.write_text(json.dumps(data))
    return root


def _all_skipped(d):
    for a in d["annotations"]:
        a["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # fewer than 3 points


def _bbox_only(d):
    for a in d["annotations"]:
        a.pop("segmentation")
        a["bbox"] = [1, 1, 5, 5]


@pytest.mark.parametrize("edit,expect", [
    (_all_skipped, "all 5 annotation(s) were skipped"),
    (_bbox_only, "all 5 annotation(s) were skipped"),
    (lambda d: d["annotations"].append({"id": 77, "image_id": 999, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}),
     "annotation 77 refers to image_id 999"),
    (lambda d: d["images"][0].pop("file_name"), "has no 'file_name'"),
])
def test_coco_bad_annotations(tmp_path, capsys, edit, expect):
    root = _edited_coco(tmp_path, edit)
    rc, err = run_cli(["--task", "coco", "--data-root", str(root), "--out", str(tmp_path / "o"), "--task-arg",
                       "size=[32, 48]"], capsys)
    assert_clear(rc, err, "instances_train.json", expect)


def _coco(root: Path, images: list[dict], anns: list[dict]) -> Path:
    """``images`` (and an unannotated second one, so train splits into train/val) in both splits."""
    images = images + [{"id": 999, "file_name": "pad.jpg", "height": images[0]["height"], "width": images[0]["width"]}]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (root / split).mkdir(exist_ok=True)
        for img in images:
            if not (root / split / img["file_name"]).exists() and "/" not in img["file_name"]:
                cv2.imwrite(str(root / split / img["file_name"]), rgb(img["height"], img["width"], img["id"]))
        data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def _test_masks(root: Path, **kw):
    from zoo.tasks.coco import CocoSemanticTask

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = CocoSemanticTask(size=None).datasets(DataConfig(root=str(root), val_fraction=0.5))
    return data.test["main"], [str(w.message) for w in caught]


@pytest.mark.parametrize("name", ["../../outside.jpg", "/etc/passwd", "sub/../../outside.jpg"])
def test_coco_file_name_outside_the_root_is_refused_unread(tmp_path, monkeypatch, name):
    """A file_name that leaves the image folder is refused before any image is opened."""
    import PIL.Image

    cv2.imwrite(str(tmp_path / "outside.jpg"), rgb(8, 8, 0))
    root = _coco(tmp_path / "c", [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8},
                                  {"id": 2, "file_name": name, "height": 8, "width": 8}], [])
    opened = []
    real_open, real_imread = PIL.Image.open, cv2.imread
    monkeypatch.setattr(PIL.Image, "open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1])
    monkeypatch.setattr(cv2, "imread", lambda p, *a: (opened.append(str(p)), real_imread(p, *a))[1])
    with pytest.raises(DataError, match=r"file_name .* points outside the image folder"):
        _test_masks(root)
    assert not any("outside" in p or "passwd" in p for p in opened), opened


def test_coco_duplicate_image_ids_are_refused(tmp_path):
    root = _coco(tmp_path / "c", [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8},
                                  {"id": 1, "file_name": "b.jpg", "height": 8, "width": 8}], [])
    with pytest.raises(DataError, match=r"image id 1 is given to more than one image entry \(e.g. 'b.jpg'\)"):
        _test_masks(root)


def test_coco_overlaps_follow_decoded_areas_and_ties_the_lower_id(tmp_path):
    """The JSON's area is not trusted (missing, or wrong): the smaller decoded object wins an overlap;
    of two equal areas the lower annotation id wins, as documented."""
    from pycocotools import mask as mask_utils

    img = {"id": 1, "file_name": "a.jpg", "height": 40, "width": 40}
    anns = [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": [square(2, 2, 30, 30)], "area": 5},  # wrong
            {"id": 11, "image_id": 1, "category_id": 2, "segmentation": [square(10, 10, 20, 20)]},  # no area
            {"id": 21, "image_id": 1, "category_id": 2, "segmentation": [square(25, 25, 35, 35)], "area": 100},
            {"id": 20, "image_id": 1, "category_id": 1, "segmentation": [square(25, 25, 35, 35)], "area": 100}]
    m = _test_masks(_coco(tmp_path / "c", [img], anns))[0][0]["mask"].numpy()
    assert m[15, 15] == 2 and m[5, 5] == 1, "the small dog (no area field) is in front of the big cat (area 5)"
    assert m[30, 30] == 1, "equal areas: annotation 20 (cat) beats 21 (dog)"
    cat = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([square(2, 2, 30, 30)], 40, 40))).astype(bool)
    assert ((m > 0) == (cat | (m == 2) | (m == 1))).all() and (m[cat] > 0).all()


def test_coco_keeps_the_valid_polygons_and_counts_the_others(tmp_path):
    """One valid polygon and a 2-point one: the valid part is drawn (as pycocotools draws it); a NaN
    polygon is dropped and counted in the warning."""
    from pycocotools import mask as mask_utils

    img = {"id": 1, "file_name": "a.jpg", "height": 30, "width": 30}
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square(3, 3, 12, 12), [1.0, 1.0, 2.0, 2.0]]},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [square(15, 15, 25, 25),
                                                                         [float("nan")] * 8]}]
    root = _coco(tmp_path / "c", [img], [])
    for split in ("train", "val"):  # NaN needs a JSON writer that allows it, as Python's does
        f = root / "annotations" / f"instances_{split}.json"
        data = json.loads(f.read_text())
        data["annotations"] = anns
        f.write_text(json.dumps(data))
    test, warned = _test_masks(root)
    m = test[0]["mask"].numpy()
    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([square(3, 3, 12, 12)], 30, 30))).astype(bool)
    assert np.array_equal(m == 1, want) and (m == 2).sum() > 0
    assert any("dropped 2 invalid polygon(s)" in w for w in warned), warned


def test_coco_reads_exif_rotated_jpegs_as_stored(tmp_path):
    """A non-square JPEG tagged 'rotate 90' is read as its stored pixels, which the annotations use
    (OpenCV's default rotated it: a silent misalignment when square, a crash otherwise)."""
    from PIL import Image

    root = _coco(tmp_path / "c", [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 40}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square(0, 0, 9, 19)]}])
    for split in ("train", "val"):
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 CW to display
        stored = np.zeros((20, 40, 3), np.uint8)
        stored[:, :10] = 255  # the annotated object, bright, in the stored pixels' left quarter
        Image.fromarray(stored).save(root / split / "a.jpg", exif=exif.tobytes(), quality=95)
    sample = _test_masks(root)[0][0]
    assert sample["image"].shape == (3, 20, 40)
    bright = sample["image"].mean(0) > 0.5
    assert (bright == (sample["mask"] == 1)).float().mean() > 0.95
