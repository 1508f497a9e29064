"""MNIST loading, the three tasks' labels, composites, augmentation, export and folder round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import REAL_MNIST, assert_clear, make_mnist, rect_digit, run_cli, write_idx
from zoo.data.augment import Augment
from zoo.data.datasets import BACKGROUND, CompositeDataset, DigitDataset, composite_tuple
from zoo.data.digits import Digits, split_mnist
from zoo.data.idx import DataError, load_mnist


def test_hand_made_digits_have_known_mask_and_circle():
    for label in range(10):
        img, (x0, y0, x1, y1) = rect_digit(label)
        d = Digits.from_arrays(img[None], np.array([label]))
        expected = np.zeros((28, 28), np.uint8)
        expected[y0 : y1 + 1, x0 : x1 + 1] = 1
        assert np.array_equal(d.masks[0], expected), "Otsu mask is exactly the rectangle"
        cx, cy, r = d.circles[0]
        assert cx == pytest.approx((x0 + x1) / 2, abs=1e-3) and cy == pytest.approx((y0 + y1) / 2, abs=1e-3)
        assert r == pytest.approx(math.hypot(x1 - x0, y1 - y0) / 2, rel=2e-3)  # OpenCV pads r by ~1e-3


def test_load_counts_from_header_and_layouts(tmp_path):
    make_mnist(tmp_path / "flat", n_train=30, n_test=12, gz=True)
    m = load_mnist(tmp_path / "flat")
    assert m.train_images.shape == (30, 28, 28) and m.test_images.shape == (12, 28, 28)
    make_mnist(tmp_path / "tv" / "MNIST" / "raw", n_train=20, n_test=10, gz=False)  # torchvision layout, raw files
    m = load_mnist(tmp_path / "tv")
    assert len(m.train_labels) == 20 and m.source.endswith("raw")


def test_zoo_data_env(tmp_path, monkeypatch):
    make_mnist(tmp_path, n_train=20, n_test=10)
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    assert len(load_mnist().train_images) == 20


def test_not_found_offline_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_mnist()  # default cache (a temp dir in tests), download disabled
    assert "looked for" in str(e.value) and "--data-root" in str(e.value) and "ZOO_DATA" in str(e.value)
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        load_mnist(tmp_path / "empty")


def test_bundled_subset_is_the_offline_fallback(monkeypatch, capsys):
    """No root, no $ZOO_DATA, an empty cache and no download: the copy shipped in the package, said so."""
    from zoo.data.idx import BUNDLED

    monkeypatch.delenv("ZOO_DATA", raising=False)
    monkeypatch.setenv("ZOO_NO_BUNDLED", "0")
    m = load_mnist()
    assert (len(m.train_images), len(m.test_images)) == (5000, 10000)
    assert "train: 5,000 digits, bundled subset" in m.source and str(BUNDLED) in m.source
    assert "bundled subset" in capsys.readouterr().err
    assert (BUNDLED / "README.md").read_text().count("CC BY-SA 3.0") >= 1


def _corrupt(tmp_path, name, data):
    make_mnist(tmp_path, n_train=20, n_test=10, gz=False)
    (tmp_path / name).write_bytes(data)
    return tmp_path


def test_wrong_magic(tmp_path):
    root = _corrupt(tmp_path, "train-images-idx3-ubyte", b"\x00\x00\x09\x99" + bytes(100))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: wrong magic number"):
        load_mnist(root)


def test_truncated(tmp_path):
    make_mnist(tmp_path, n_train=20, n_test=10, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: truncated"):
        load_mnist(tmp_path)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        load_mnist(tmp_path)


def test_count_mismatch(tmp_path):
    make_mnist(tmp_path, n_train=20, n_test=10, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, np.uint8), gz=False)
    with pytest.raises(DataError, match="20 images but .*19 labels"):
        load_mnist(tmp_path)


def test_bad_gzip(tmp_path):
    make_mnist(tmp_path, n_train=20, n_test=10, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-gzip")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: cannot read or decompress"):
        load_mnist(tmp_path)


def test_splits_disjoint_and_seeded(tiny_mnist):
    m = load_mnist(tiny_mnist)
    a = split_mnist(m, val_fraction=0.1, seed=3)
    b = split_mnist(m, val_fraction=0.1, seed=3)
    assert len(a.train) == 180 and len(a.val) == 20 and len(a.test) == 60
    assert np.array_equal(a.val.images, b.val.images)
    # the train and val digits partition the training file: as multisets of (image, label)
    # rows, train + val is exactly the file (so no digit is in both, none is lost)
    all_rows = [x.tobytes() + bytes([y]) for x, y in zip(m.train_images, m.train_labels)]
    assert sorted(all_rows) == sorted([x.tobytes() + bytes([y]) for x, y in zip(a.train.images, a.train.labels)] +
                                      [x.tobytes() + bytes([y]) for x, y in zip(a.val.images, a.val.labels)])
    with pytest.raises(DataError, match="val_fraction"):
        split_mnist(m, val_fraction=1.5)


def test_digit_dataset_fields(tiny_mnist):
    s = split_mnist(load_mnist(tiny_mnist))
    x = DigitDataset(s.test)[3]
    assert x["image"].shape == (1, 28, 28) and x["image"].max() <= 1
    assert torch.equal(x["mask"], torch.from_numpy(s.test.masks[3].astype(np.int64)))
    cx, cy, r = x["circle"].tolist()
    ys, xs = np.nonzero(x["mask"].numpy())
    assert np.all((xs - cx) ** 2 + (ys - cy) ** 2 <= r**2 + 1e-3), "circle encloses every foreground pixel"
    assert x["circle_mask"].sum() >= x["mask"].sum()


def test_augmentation_keeps_mask_and_circle_consistent(tiny_mnist):
    s = split_mnist(load_mnist(tiny_mnist))
    ds = DigitDataset(s.train, Augment(shift=2, rotate=15, scale=0.1, elastic=1.0), seed=0)
    for i in range(20):
        x = ds[i]
        img = (x["image"][0].numpy() * 255).round()
        assert np.array_equal(x["mask"].numpy(), (img > s.train.thresholds[i]).astype(np.int64))
        cx, cy, r = x["circle"].tolist()
        ys, xs = np.nonzero(x["mask"].numpy())
        assert np.all((xs - cx) ** 2 + (ys - cy) ** 2 <= r**2 + 1e-3)
    a, b = ds[5]["image"], ds[5]["image"]
    assert torch.equal(a, b), "same seed, epoch and index: same augmentation"
    ds.set_epoch(1)
    assert not torch.equal(a, ds[5]["image"]), "a new epoch draws new augmentations"
    with pytest.raises(ValueError, match="rotate"):
        Augment(rotate=-1)


def test_nearest_interpolation_only_copies_intensities(tiny_mnist):
    s = split_mnist(load_mnist(tiny_mnist))
    near = DigitDataset(s.train, Augment(shift=2, rotate=15, scale=0.1, elastic=1.0, interpolation="nearest"), seed=0)
    lin = DigitDataset(s.train, Augment(shift=2, rotate=15, scale=0.1, elastic=1.0), seed=0)
    new_levels = 0
    for i in range(20):
        x = near[i]
        img = (x["image"][0].numpy() * 255).round().astype(np.uint8)
        assert set(np.unique(img)) <= set(np.unique(s.train.images[i])), "nearest warps create no new intensity"
        assert np.array_equal(x["mask"].numpy(), (img > s.train.thresholds[i]).astype(np.int64))
        assert not np.array_equal(img, s.train.images[i]), "the digit still moves"
        lin_img = (lin[i]["image"][0].numpy() * 255).round().astype(np.uint8)
        new_levels += len(set(np.unique(lin_img)) - set(np.unique(s.train.images[i])))
    assert new_levels > 0, "linear warps blend pixels into new intensities (the contrast this option removes)"
    with pytest.raises(ValueError, match="interpolation must be one of linear, nearest"):
        Augment(rotate=5, interpolation="cubic")


def test_composite_tuples_unique_and_deterministic():
    n, size = 9, 6000  # 9^4 = 6561 possible tuples: a dense draw must still have no duplicates
    tuples = [composite_tuple(i, n, seed=1) for i in range(size)]
    assert len(set(tuples)) == size
    assert tuples[:10] == [composite_tuple(i, n, seed=1) for i in range(10)]
    big = {composite_tuple(i, 4500, seed=0) for i in range(250_000)}
    assert len(big) == 250_000


def test_composite_labels(tiny_mnist):
    s = split_mnist(load_mnist(tiny_mnist))
    ds = CompositeDataset(s.val, size=50, seed=2)
    x = ds[7]
    assert x["image"].shape == (1, 56, 56) and x["mask"].shape == (56, 56)
    ids = composite_tuple(7, len(s.val), 2)
    for q, d in enumerate(ids):
        r, c = (q // 2) * 28, (q % 2) * 28
        quad = x["mask"][r : r + 28, c : c + 28].numpy()
        fg = s.val.masks[d] > 0
        assert np.all(quad[fg] == s.val.labels[d]) and np.all(quad[~fg] == BACKGROUND)
    region = CompositeDataset(s.val, size=50, seed=2, labelling="region")[7]["mask"]
    assert int(region[0, 0]) == s.val.labels[ids[0]] and int(region[55, 55]) == s.val.labels[ids[3]]
    with pytest.raises(ValueError, match="size must be"):
        CompositeDataset(s.val, size=len(s.val) ** 4 + 1)
    with pytest.raises(ValueError, match="labelling"):
        CompositeDataset(s.val, size=5, labelling="blob")


def test_composites_use_only_their_split(tiny_mnist):
    from zoo.data.config import DataConfig
    from zoo.tasks.mnist import SemanticTask

    data = SemanticTask(train_size=300, val_size=50, test_size=40).datasets(DataConfig(root=str(tiny_mnist)))
    for split in ("train", "val", "test"):
        ds = getattr(data, split)["main"]
        digits = ds.digits
        assert max(max(composite_tuple(i, len(digits), ds.seed)) for i in range(len(ds))) < len(digits)
    assert data.val["main"].digits is not data.train["main"].digits


def test_export_and_folder_round_trip(tiny_mnist, tmp_path):
    from zoo.data.__main__ import main as data_main
    from zoo.data.folder import read_mask
    from zoo.data.config import DataConfig
    from zoo.tasks.folder import FolderTask

    out = tmp_path / "exp"
    assert data_main(["export", "--task", "semantic", "--split", "test", "--n", "12", "--out", str(out),
                      "--data-root", str(tiny_mnist)]) == 0
    assert sorted(p.name for p in (out / "Images").iterdir())[:2] == ["0001.jpg", "0002.jpg"]
    assert len(list((out / "Masks").iterdir())) == 12
    m = read_mask(out / "Masks" / "0001.png")
    assert m.shape == (56, 56) and m.max() <= 10
    data = FolderTask().datasets(DataConfig(root=str(out)))
    assert data.info["num_classes"] == 11
    sample = data.train["main"][0]
    assert sample["image"].shape == (1, 56, 56) and sample["mask"].dtype == torch.int64
    assert data_main(["export", "--task", "nope", "--out", str(out)]) == 2


@pytest.mark.skipif(not REAL_MNIST, reason="ZOO_DATA not set (CI sets it to ../shared/data/mnist)")
def test_real_mnist_smoke():
    m = load_mnist(REAL_MNIST)
    assert m.train_images.shape[1:] == (28, 28) and len(m.train_images) == len(m.train_labels)
    assert len(m.test_images) == 10_000
    s = split_mnist(m)
    assert len(s.train) + len(s.val) == len(m.train_images)
    x = DigitDataset(s.test)[0]
    assert 20 < int(x["mask"].sum()) < 400 and 5 < float(x["circle"][2]) < 20


# ----------------------------------------------------------------------------- bad MNIST files and settings
@pytest.mark.parametrize("arg,expect", [
    ("train_size=abc", "train_size must be an integer >= 1"),
    ("test_size=0", "test_size must be an integer >= 1"),
    ("labelling=blobs", "labelling must be one of pixel, region"),
])
def test_bad_task_arg_type_with_quick(tiny_mnist, tmp_path, capsys, arg, expect):
    rc, err = run_cli(["--task", "semantic", "--quick", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
                       "--task-arg", arg], capsys)
    assert_clear(rc, err, expect)


def test_mnist_train_and_test_of_different_sizes(tmp_path, capsys):
    root = make_mnist(tmp_path / "m")
    write_idx(root / "train-images-idx3-ubyte", np.zeros((200, 20, 20), np.uint8))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "holds 20x20 images", "holds 28x28", "must have one size")


def test_mnist_images_too_small_for_the_tasks(tmp_path, capsys):
    """1x1-pixel digits gave a NaN test IoU and exit 0."""
    root = make_mnist(tmp_path / "m")
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 255, (200, 1, 1)).astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 255, (60, 1, 1)).astype(np.uint8))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "are 1x1 pixels; the digit tasks need at least 8x8")


@pytest.mark.parametrize("split,file", [("train", "train-images-idx3-ubyte"), ("test", "t10k-images-idx3-ubyte")])
def test_mnist_with_no_foreground_at_all(tmp_path, capsys, split, file):
    """All-black digits used to train with a NaN validation IoU at every epoch (a checkpoint picked on
    NaN) and exit 0; now one line names the split and the files."""
    root = make_mnist(tmp_path / "m")
    n = 200 if split == "train" else 60
    write_idx(root / file, np.zeros((n, 28, 28), np.uint8))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"MNIST {split} digits", "has a foreground pixel", "the digit tasks need images with strokes")


def test_idx_header_and_gzip_cannot_make_zoo_allocate(tmp_path, capsys):
    """A header whose dimensions multiply past any real file, and a gzip that would inflate to gigabytes,
    are refused from the header: nothing is decompressed beyond the size it declares."""
    import gzip
    import struct

    root = make_mnist(tmp_path / "m")
    header = struct.pack(">IIII", 0x803, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + b"\0" * 100))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "train-images-idx3-ubyte.gz: the header declares", "more than zoo reads")
    # 6 GB of zeros after a header that says 200 images: only the declared 156,800 bytes are inflated
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 200, 28, 28))
        f.write(np.asarray([__import__("conftest").rect_digit(i % 10)[0] for i in range(200)]).tobytes())
        block = b"\0" * (1 << 20)
        for _ in range(64):  # 64 MB here stands for the 6 GB: read() stops at the declared size either way
            f.write(block)
    from zoo.data.idx import read_idx
    assert read_idx(root / "train-images-idx3-ubyte.gz", 3).shape == (200, 28, 28)
