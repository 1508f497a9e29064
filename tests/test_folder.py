"""zoo/data/folder.py and zoo/tasks/folder.py: image + index-mask folders, on small folders written here; and
what every format reads through zoo/data/folder.py (the size setting, images to samples), each format
trained once through the command line."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_clear, run_cli, write_coco, write_folder, write_npz, write_pets
from zoo.bench import main
from zoo.data.idx import DataError
from zoo.data.config import DataConfig


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


@pytest.mark.parametrize("size", ["[0, 0]", "[32]", "[32, -4]", "abc"])
@pytest.mark.parametrize("task", ["folder", "pets", "coco", "npz"])
def test_bad_size(tmp_path, capsys, task, size):
    rc, err = run_cli(["--task", task, "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), "--task-arg",
                       f"size={size}"], capsys)
    assert_clear(rc, err, "size must be [H, W] with two integers >= 1")


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
