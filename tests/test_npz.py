"""zoo/data/arrays.py and zoo/tasks/npz.py: segmentation from one .npz of images and masks (Mars-terrain
style), on small files written here; and predicting its unlabelled test set."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_clear, run_cli, write_npz
from zoo.bench import main
from zoo.data.idx import DataError
from zoo.data.config import DataConfig


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
