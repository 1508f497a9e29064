"""COCO, Oxford-IIIT Pet, npz and folder tasks on small datasets written here in each real format."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_clear, run_cli
from zoo.bench import main
from zoo.data.idx import DataError
from zoo.data.config import DataConfig


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- COCO
def square(x0, y0, x1, y1):
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def write_coco(root: Path) -> Path:
    """Two splits; category ids 1 ('cat') and 7 ('dog'): contiguous indices 1 and 2."""
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train", 4), ("val", 2)):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            name = f"{split}_{i}.jpg"
            cv2.imwrite(str(root / split / name), rgb(40, 60, i))
            images.append({"id": i + 1, "file_name": name, "height": 40, "width": 60})
        # image 1: a big cat square with a small dog square on top of it (overlap)
        anns.append({"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square(5, 5, 35, 35)], "area": 900, "iscrowd": 0})
        anns.append({"id": 2, "image_id": 1, "category_id": 7, "segmentation": [square(10, 10, 20, 20)], "area": 100, "iscrowd": 0})
        # image 2: a crowd RLE (uncompressed counts, column-major) of dog covering column 0 rows 0-9
        anns.append({"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 1, "area": 10,
                     "segmentation": {"size": [40, 60], "counts": [0, 10, 2390]}})
        # unknown category and an invalid polygon: skipped and counted, never a crash
        anns.append({"id": 4, "image_id": 2, "category_id": 99, "segmentation": [square(1, 1, 5, 5)], "area": 16, "iscrowd": 0})
        anns.append({"id": 5, "image_id": 2, "category_id": 1, "segmentation": [[1.0, 2.0, 3.0]], "area": 1, "iscrowd": 0})
        # images 3.. have no annotations: all background
        data = {"images": images, "annotations": anns,
                "categories": [{"id": 7, "name": "dog"}, {"id": 1, "name": "cat"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


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


# ----------------------------------------------------------------------------- Pets
def write_pets(root: Path, n: int = 6, lists: bool = True) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for i in range(n):
        name = f"Abyssinian_{i + 1}"
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), rgb(30, 40, i))
        tri = np.full((30, 40), 2, np.uint8)
        tri[5:25, 10:30] = 3
        tri[7:23, 12:28] = 1
        cv2.imwrite(str(root / "annotations" / "trimaps" / f"{name}.png"), tri)
    if lists:
        names = [f"Abyssinian_{i + 1} 1 1 1" for i in range(n)]
        (root / "annotations" / "trainval.txt").write_text("\n".join(names[:4]) + "\n")
        (root / "annotations" / "test.txt").write_text("\n".join(names[4:]) + "\n")
    return root


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


# ----------------------------------------------------------------------------- npz
def write_npz(path: Path, n: int = 20, stacked: bool = False, classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, 16, 24), dtype=np.uint8)
    y = np.zeros((n, 16, 24), np.uint8)
    y[:, :8] = 1
    y[:, 8:, :12] = 2
    y[:3, 0:2, 0:2] = classes - 1  # a rare class in 3 images
    if stacked:
        np.savez(path, training_set=np.stack([x, y], 1))
    else:
        np.savez(path, images=x, masks=y)
    return path


def test_npz_weights_oversampling_exclusion(tmp_path):
    from zoo.data.arrays import class_weights
    from zoo.tasks.npz import NpzTask

    f = write_npz(tmp_path / "mars.npz")
    data = NpzTask(oversample=2, rare_classes=[3], exclude=[0]).datasets(DataConfig(root=str(f), val_fraction=0.1))
    assert data.info["num_classes"] == 4
    w = data.class_weights
    assert w[3] > w[1] and w[3] > w[2], "the rare class weighs most"
    assert data.exclude == [0]
    train = data.train["main"]
    base = data.info["train_samples"] - data.info["oversampled"]
    assert data.info["oversampled"] == 2 * sum(int((train.masks[i] == 3).any()) for i in train.index[:base])
    assert class_weights(np.array([[0, 0, 1, 2]]), 3) == [0.5, 1.0, 1.0]
    st = NpzTask(stacked="training_set").datasets(DataConfig(root=str(write_npz(tmp_path / "s.npz", stacked=True))))
    assert st.train["main"][0]["image"].shape == (1, 16, 24)


def test_npz_bad_inputs(tmp_path):
    from zoo.tasks.npz import NpzTask

    f = write_npz(tmp_path / "m.npz")
    with pytest.raises(DataError, match="no array 'training_set'; arrays in the file: images, masks"):
        NpzTask(stacked="training_set").datasets(DataConfig(root=str(f)))
    with pytest.raises(DataError, match="outside 0..2"):
        NpzTask(num_classes=3).datasets(DataConfig(root=str(f)))
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 8, 8)), masks=np.zeros((3, 8, 9)))
    with pytest.raises(DataError, match="sizes differ"):
        NpzTask().datasets(DataConfig(root=str(tmp_path / "bad.npz")))
    (tmp_path / "junk.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable .npz"):
        NpzTask().datasets(DataConfig(root=str(tmp_path / "junk.npz")))


@pytest.mark.parametrize("masks,expect", [
    (np.full((10, 8, 8), 0.5), "masks hold fractional values (e.g. 0.5"),
    (np.where(np.eye(8)[None].repeat(10, 0) > 0, np.nan, 0.0), "masks hold 80 NaN/inf value(s)"),
    (np.full((10, 8, 8), -1, np.int32), "mask values -1..-1 are outside 0..65535"),
    (np.full((10, 8, 8), 300, np.int32), "masks hold values 300..300, outside 0..3"),
])
def test_npz_masks_never_wrap_or_truncate(tmp_path, capsys, masks, expect):
    f = tmp_path / "d.npz"
    np.savez(f, images=np.zeros((10, 8, 8), np.uint8), masks=masks)
    rc, err = run_cli(["--task", "npz", "--data-root", str(f), "--out", str(tmp_path / "o"), "--task-arg",
                       "num_classes=4"], capsys)
    assert_clear(rc, err, str(f), expect)


def test_npz_auto_classes_with_a_stray_value_warns_not_wraps(tmp_path):
    from zoo.data.config import DataConfig
    from zoo.tasks.npz import NpzTask

    masks = np.zeros((10, 8, 8), np.int32)
    masks[:, :4] = 1
    masks[3, 0, 0] = 300  # a uint8 cast would make it 44
    np.savez(tmp_path / "d.npz", images=np.zeros((10, 8, 8), np.uint8), masks=masks)
    with pytest.warns(UserWarning, match=r"found 301 classes because the masks hold the value 300.*\[2, 3, 4"):
        data = NpzTask().datasets(DataConfig(root=str(tmp_path / "d.npz")))
    assert data.num_classes == 301
    assert max(int(data.train["main"][i]["mask"].max()) for i in range(len(data.train["main"]))) in (1, 300)


def test_npz_zero_d_array(tmp_path, capsys):
    f = tmp_path / "d.npz"
    np.savez(f, images=np.zeros((4, 8, 8)), masks=np.array(3))
    rc, err = run_cli(["--task", "npz", "--data-root", str(f), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "array 'masks' is a 0-d scalar")


# ----------------------------------------------------------------------------- folder
def write_folder(root: Path, n: int = 6, classes: int = 3) -> Path:
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "Images" / f"{i:03d}.png"), rgb(20, 24, i)[..., 0])
        m = np.zeros((20, 24), np.uint8)
        m[5:15, 5:15] = 1 + i % (classes - 1)
        cv2.imwrite(str(root / "Masks" / f"{i:03d}.png"), m)
    return root


def _load_all(task, root):
    data = task.datasets(DataConfig(root=str(root)))
    for split in (data.train, data.val, data.test):
        ds = split["main"]
        for i in range(len(ds)):
            ds[i]


def test_folder_bad_inputs(tmp_path):
    from zoo.tasks.folder import FolderTask

    with pytest.raises(DataError, match="missing folder Images/"):
        FolderTask().datasets(DataConfig(root=str(tmp_path)))
    r = write_folder(tmp_path / "a")
    (r / "Masks" / "002.png").unlink()
    with pytest.raises(DataError, match="image\\(s\\) without a mask.*002.png"):
        FolderTask().datasets(DataConfig(root=str(r)))
    r = write_folder(tmp_path / "b")
    (r / "Images" / "003.png").unlink()
    with pytest.raises(DataError, match="mask\\(s\\) without an image.*003.png"):
        FolderTask().datasets(DataConfig(root=str(r)))
    r = write_folder(tmp_path / "c")
    with pytest.raises(DataError, match="mask value 2 is outside 0..1"):
        _load_all(FolderTask(num_classes=2), r)
    r = write_folder(tmp_path / "d")
    cv2.imwrite(str(r / "Masks" / "001.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="must match"):
        _load_all(FolderTask(), r)
    r = write_folder(tmp_path / "e")
    (r / "Images" / "004.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="004.png: cannot read the image"):
        _load_all(FolderTask(), r)


def test_folder_images_of_different_sizes_suggest_size(tmp_path, capsys):
    r = write_folder(tmp_path / "f")
    for i in (0, 2, 4):  # half the images 30x30: the 4 training images hold both sizes
        cv2.imwrite(str(r / "Images" / f"{i:03d}.png"), np.zeros((30, 30), np.uint8))
        cv2.imwrite(str(r / "Masks" / f"{i:03d}.png"), np.zeros((30, 30), np.uint8))
    rc, err = run_cli(["--task", "folder", "--data-root", str(r), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "images differ in size", "--task-arg 'size=[H, W]'")


@pytest.mark.parametrize("which", ["val", "test"])
def test_unreadable_val_or_test_image_is_found_before_training(tmp_path, capsys, which):
    from zoo.data.split import split_items
    from zoo.data.folder import find_pairs

    r = write_folder(tmp_path / "f", n=10)
    train, val, test = split_items(find_pairs(r), 0.1, 0.2, 0, "images")
    bad = (val if which == "val" else test)[0].image
    bad.write_bytes(b"not a png")
    rc, err = run_cli(["--task", "folder", "--data-root", str(r), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"{bad}: cannot read the image")


def test_folder_auto_classes_with_a_stray_value_warns(tmp_path):
    from zoo.data.config import DataConfig
    from zoo.tasks.folder import FolderTask

    r = write_folder(tmp_path / "f", n=6, classes=2)  # masks hold {0, 1}
    m = cv2.imread(str(r / "Masks" / "004.png"), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 9
    cv2.imwrite(str(r / "Masks" / "004.png"), m)
    with pytest.warns(UserWarning, match=r"found 10 classes because .*004.png holds the value 9.*\[2, 3, 4, 5, 6, 7, 8\]"):
        FolderTask().datasets(DataConfig(root=str(r)))


@pytest.mark.parametrize("task,writer,extra", [
    ("pets", lambda p: write_pets(p), ["--task-arg", "size=[32, 32]"]),
    ("npz", lambda p: write_npz(p.with_suffix(".npz")), []),
    ("folder", lambda p: write_folder(p), []),
    ("coco", lambda p: write_coco(p), ["--task-arg", "size=[32, 48]"]),
    ("coco_binary", lambda p: write_coco(p), ["--task-arg", "size=[32, 48]"]),
])
def test_cli_trains_each_format(tmp_path, task, writer, extra):
    src = writer(tmp_path / "data")
    out = tmp_path / "res"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["--task", task, "--encoder", "scratch", "--data-root", str(src), "--out", str(out), "--epochs", "1",
                   "--batch-size", "2", "--quiet", "--encoder-arg", "width=4", *extra])
    assert rc == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    metric = "iou" if task in ("pets", "coco_binary") else "miou"
    assert 0.0 <= row[metric] <= 100.0 or np.isnan(row[metric])
    assert (Path(row["run_dir"]) / "figure.png").stat().st_size > 1000
    assert row["train_samples"] >= 1 and "train_digits" not in row, "non-MNIST rows count samples"


@pytest.mark.parametrize("size", ["[0, 0]", "[32]", "[32, -4]", "abc"])
@pytest.mark.parametrize("task", ["folder", "pets", "coco", "npz"])
def test_bad_size(tmp_path, capsys, task, size):
    rc, err = run_cli(["--task", task, "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), "--task-arg",
                       f"size={size}"], capsys)
    assert_clear(rc, err, "size must be [H, W] with two integers >= 1")


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


# ----------------------------------------------------------------------------- COCO as it ships
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


def test_npz_the_mars_layout_as_it_ships(tmp_path):
    """A stacked training_set and an unlabelled test_set: train/val/test come from the labelled images,
    the unlabelled count is recorded, and zoo.predict takes FILE.npz:test_set."""
    from zoo.tasks.npz import NpzTask

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 16, 24)).astype(np.float32)
    y = np.zeros((20, 16, 24), np.float32)
    y[:, :8] = 1
    np.savez(tmp_path / "mars.npz", training_set=np.stack([x, y], 1), test_set=rng.integers(0, 255, (7, 16, 24)))
    data = NpzTask(stacked="training_set", test_images="test_set").datasets(DataConfig(root=str(tmp_path / "mars.npz")))
    assert data.info["unlabelled_test_images"] == 7
    assert data.info["train_samples"] + data.info["val_samples"] + data.info["test_samples"] == 20
    assert data.test["main"][0]["mask"].max() <= 1


@pytest.mark.parametrize("images,expect", [
    (np.full((6, 8, 8), 0.5, np.float32) * np.linspace(0.1, 1, 6)[:, None, None].astype(np.float32),
     "float32 in [0, 1], x 255"),
    (np.linspace(-1000, 920, 6 * 64).reshape(6, 8, 8).astype(np.int16), "int16 -1000..920 mapped linearly"),
    (np.full((6, 8, 8, 1), 40, np.uint8), "uint8, as stored"),
])
def test_npz_images_are_scaled_per_array_and_say_how(tmp_path, images, expect):
    """One scaling for the whole array (a dark float image is not brightened on its own), stated in
    the row; (N, H, W, 1) images beside (M, H, W) test images are one channel both."""
    from zoo.tasks.npz import NpzTask

    masks = np.zeros(images.shape[:3], np.uint8)
    masks[:, :4] = 1
    np.savez(tmp_path / "a.npz", images=images, masks=masks, test_images=images[:2, ..., 0] if images.ndim == 4
             else images[:2], test_masks=masks[:2])
    data = NpzTask(test_images="test_images", test_masks="test_masks").datasets(DataConfig(root=str(tmp_path / "a.npz")))
    assert expect in data.info["image_scaling"]
    first = data.test["main"][0]["image"]
    assert first.shape == (1, 8, 8)
    if images.dtype == np.float32:  # the darkest image stays dark: 0.05 of full scale, not stretched to 1
        assert abs(float(first.max()) - float(images[0].max())) < 1 / 255 + 1e-6


@pytest.mark.parametrize("make,expect", [
    (lambda p: p.write_bytes(b""), "not a readable .npz"),
    (lambda p: np.savez(p, images=np.full((4, 8, 8), np.nan, np.float32), masks=np.zeros((4, 8, 8), np.uint8)),
     "NaN/inf value(s)"),
    (lambda p: np.savez(p, images=np.zeros((4, 8, 8, 5), np.uint8), masks=np.zeros((4, 8, 8), np.uint8)),
     "must be (N, H, W), (N, H, W, 1) or (N, H, W, 3), got (4, 8, 8, 5)"),
    (lambda p: np.savez(p, images=np.zeros((0, 8, 8), np.uint8), masks=np.zeros((0, 8, 8), np.uint8)),
     "the images array is empty"),
], ids=["empty-file", "nan", "five-channels", "no-images"])
def test_npz_bad_arrays_are_one_line(tmp_path, capsys, make, expect):
    f = tmp_path / "bad.npz"
    make(f)
    rc = main(["--task", "npz", "--data-root", str(f), "--out", str(tmp_path / "o"), "--quiet", "--no-figures"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert rc == 2 and expect in err and "Traceback" not in err, err


def test_predict_the_unlabelled_mars_test_set(tmp_path):
    """The documented command for the unlabelled set: python -m zoo.predict RUN/best.pt FILE.npz:test_set
    (one record and mask per array image)."""
    from zoo.predict import main as predict_main

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 16, 24)).astype(np.uint8)
    y = np.zeros((12, 16, 24), np.uint8)
    y[:, :8] = 1
    f = tmp_path / "mars.npz"
    np.savez(f, training_set=np.stack([x, y], 1), test_set=rng.integers(0, 255, (3, 16, 24)).astype(np.uint8))
    out = tmp_path / "runs"
    assert main(["--task", "npz", "--data-root", str(f), "--task-arg", "stacked=training_set",
                 "--task-arg", "test_images=test_set", "--encoder-arg", "width=4", "--epochs", "1", "--out", str(out),
                 "--quiet", "--no-figures", "--no-speed"]) == 0
    [row] = json.loads((out / "results.json").read_text())["rows"]
    assert row["unlabelled_test_images"] == 3
    ckpt = next(out.glob("*/best.pt"))
    assert predict_main([str(ckpt), f"{f}:test_set", "--out", str(tmp_path / "p")]) == 0
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())["predictions"]
    assert [p["file"] for p in preds] == [f"{f}:test_set[{i}]" for i in range(3)]
    assert all((tmp_path / "p" / p["seg_png"]).is_file() for p in preds)


def test_a_tiny_folder_run_warns_about_its_step_count_before_training(tmp_path, capsys):
    """A bring-your-own-data run of a few optimizer steps says so before the first epoch, with the numbers
    and what to change; a --quick run is told it is a smoke run instead; a run of enough steps says nothing."""
    src = write_folder(tmp_path / "data", n=12)
    args = ["--task", "folder", "--encoder", "scratch", "--data-root", str(src), "--encoder-arg", "width=4", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--out", str(tmp_path / "a"), "--epochs", "2", "--batch-size", "64"]) == 0
        err = capsys.readouterr().err.replace("\n", " ")
        # 12 images: 8 train after the validation and test splits, one batch of 64 -> 1 step per epoch
        assert "warning: this run takes only 2 optimizer step(s) (1 per epoch x 2 epoch(s) at batch size 64)" in err
        assert "give --epochs 50" in err and err.index("warning: this run") < err.index("epoch 1/")
        assert main([*args, "--out", str(tmp_path / "b"), "--quick"]) == 0
        err = capsys.readouterr().err.replace("\n", " ")
        assert "note: smoke-sized run (--quick)" in err and "warning: this run" not in err
        assert main([*args, "--out", str(tmp_path / "c"), "--epochs", "50", "--batch-size", "64"]) == 0
        assert "optimizer step" not in capsys.readouterr().err


def test_colour_images_read_as_grey_are_said_so_in_the_console_and_the_row(tmp_path, capsys):
    """The folder task reads grey by default: colour images are converted, and the run says so (console and
    row) with the setting that keeps colour; grey images, or channels=3, are read as they are, with no word."""
    colour = write_folder(tmp_path / "colour", n=8)
    for path in (colour / "Images").iterdir():
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path), np.stack([img, 255 - img, img // 2], -1))
    grey = write_folder(tmp_path / "grey", n=8)
    args = ["--task", "folder", "--encoder", "scratch", "--encoder-arg", "width=4", "--quiet", "--epochs", "1",
            "--no-speed", "--no-figures"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for root, extra, said in ((colour, [], True), (colour, ["--task-arg", "channels=3"], False), (grey, [], False)):
            out = tmp_path / f"o-{root.name}-{len(extra)}"
            assert main([*args, "--data-root", str(root), "--out", str(out), *extra]) == 0
            err = capsys.readouterr().err.replace("\n", " ")
            row = json.loads((out / "results.json").read_text())["rows"][0]
            assert ("colour images read as grey" in err) == said, err
            assert ("--task-arg channels=3 keeps their colour" in row.get("input_conversion", "")) == said
