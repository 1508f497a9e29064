"""NYUv2 as MTAN / LibMTL ship it (#38): fixtures written in the exact layout (train/ and val/, each image/,
label/, depth/, normal/ of N.npy), what the loader makes of them, every bad input as one line naming the
file, LibMTL's augmentation, and a few steps of the joint model on a fixture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_clear, run_cli
from zoo.data.config import DataConfig
from zoo.data.dense_augment import scale_crop_flip
from zoo.data.idx import DataError
from zoo.data.nyuv2 import DenseScenes
from zoo.tasks.nyuv2 import NYUv2Task

H, W = 16, 24


def write_split(folder: Path, n: int, seed: int, h: int = H, w: int = W) -> None:
    """``n`` scenes as MTAN's files hold them: float images in [0, 1], float labels with -1, depth HxWx1 with
    zeros (missing) and a NaN, unit normals with zero vectors (missing)."""
    rng = np.random.default_rng(seed)
    for name in ("image", "label", "depth", "normal"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = rng.integers(-1, 13, (h, w)).astype(np.float32)
        depth = rng.uniform(0.5, 5.0, (h, w, 1)).astype(np.float32)
        depth[0, :4] = 0.0
        depth[1, 0] = np.nan
        normal = rng.normal(size=(h, w, 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        normal[2, :3] = 0.0
        np.save(folder / "image" / f"{i}.npy", rng.random((h, w, 3)).astype(np.float32))
        np.save(folder / "label" / f"{i}.npy", label)
        np.save(folder / "depth" / f"{i}.npy", depth)
        np.save(folder / "normal" / f"{i}.npy", normal)


@pytest.fixture
def nyu(tmp_path) -> Path:
    root = tmp_path / "nyuv2"
    write_split(root / "train", 10, 0)
    write_split(root / "val", 4, 1)
    return root


def load(root: Path, **settings):
    return NYUv2Task(size=[H, W], **settings).datasets(DataConfig(root=str(root), val_fraction=0.2, seed=3))


def test_the_layout_loads_with_its_shapes_classes_and_validity(nyu):
    data = load(nyu, augment=False)
    train, val, test = data.train["main"], data.val["main"], data.test["main"]
    assert (len(train), len(val), len(test)) == (8, 2, 4)  # test = val/; validation a seeded slice of train/
    s = test[0]
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    assert s["mask"].shape == (H, W) and s["mask"].dtype == torch.int64
    assert set(s["mask"].unique().tolist()) <= set(range(-1, 13))
    assert s["depth"].shape == (1, H, W) and s["normals"].shape == (3, H, W)
    # missing depth (0 and NaN) and missing normals (zero vectors) are NaN in every channel
    raw = np.load(nyu / "val" / "depth" / "0.npy")[..., 0]
    assert torch.equal(torch.isnan(s["depth"][0]), torch.from_numpy((raw == 0) | np.isnan(raw)))
    assert bool(torch.isnan(s["normals"][:, 2, :3]).all()) and int(torch.isnan(s["normals"]).any(0).sum()) == 3
    valid = torch.isfinite(s["normals"]).all(0)
    assert torch.allclose(s["normals"][:, valid].norm(dim=0), torch.ones(int(valid.sum())), atol=1e-5)
    assert data.num_classes == 13 and data.in_channels == 3
    info = data.info
    assert info["validation"].startswith("a seeded 20% slice of train/ (seed 3, 2 scenes); test = val/ (4 scenes)")
    depth_pct = round(100 * 5 / (H * W), 3)  # 4 zeros and 1 NaN per scene
    assert f"depth train/ {depth_pct} %, val/ {depth_pct} % (NaN/inf: 14 px)" in info["invalid_pixels"]
    assert f"normals train/ {round(100 * 3 / (H * W), 3)} %" in info["invalid_pixels"]
    # the same seed gives the same validation slice; another seed another
    again = load(nyu, augment=False)
    assert [s.index for s in again.val["main"].scenes] == [s.index for s in val.scenes]


def test_the_shipped_288x384_shape_loads_without_a_size_setting(tmp_path):
    write_split(tmp_path / "train", 3, 0, 288, 384)
    write_split(tmp_path / "val", 1, 1, 288, 384)
    data = NYUv2Task(augment=False).datasets(DataConfig(root=str(tmp_path)))
    s = data.test["main"][0]
    assert (s["image"].shape, s["depth"].shape, s["normals"].shape) == ((3, 288, 384), (1, 288, 384), (3, 288, 384))
    assert NYUv2Task().input_spec() == ("resize", (288, 384))  # what zoo.predict brings a user's image to


def test_training_scenes_get_libmtls_scale_crop_and_flip(nyu):
    """The training split applies zoo.data.dense_augment's scale_crop_flip (LibMTL's), drawn per (seed, epoch,
    index); evaluation splits are left as they are. On a scene of constant depth 2 and normals (0.6, 0, 0.8):
    the depth is 2 / scale for a scale of LibMTL's (1, 1.2, 1.5), the normals' x is +-0.6 with the mirror."""
    for name, value in (("depth", np.full((H, W, 1), 2.0, np.float32)),
                        ("normal", np.tile(np.float32([0.6, 0.0, 0.8]), (H, W, 1)))):
        for i in range(10):
            np.save(nyu / "train" / name / f"{i}.npy", value)
    data = load(nyu, augment=True)
    train = data.train["main"]
    plain = DenseScenes(train.scenes)
    seen_depth, seen_x = set(), set()
    for epoch in range(4):
        train.set_epoch(epoch)
        for i in range(len(train)):
            s = train[i]
            gen = torch.Generator().manual_seed((3 * 1_000_003 + epoch) * 1_000_003 + i)
            want = scale_crop_flip({k: v[None] for k, v in plain[i].items()}, gen)
            assert all(torch.equal(s[k], want[k][0]) for k in s)
            seen_depth.add(round(float(s["depth"].mean()), 4))
            seen_x.add(round(float(s["normals"][0].mean()), 4))
    assert seen_depth == {2.0, round(2 / 1.2, 4), round(2 / 1.5, 4)} and seen_x == {0.6, -0.6}
    assert torch.equal(data.test["main"][0]["image"], data.test["main"][0]["image"])  # (no augmentation there)


def _save(path: Path, array) -> None:
    np.save(path, array)


BAD = {
    "image of the wrong shape": (lambda r: _save(r / "train/image/1.npy", np.zeros((H, W + 1, 3), np.float32)),
                                 r"train/image/1\.npy: the image is 16x25x3 float32; expected 16x24x3 float"),
    "image of the wrong dtype": (lambda r: _save(r / "train/image/1.npy", np.zeros((H, W, 3), np.uint8)),
                                 r"train/image/1\.npy: the image is 16x24x3 uint8; expected 16x24x3 float"),
    "depth of the wrong shape": (lambda r: _save(r / "val/depth/2.npy", np.ones((H, W, 2), np.float32)),
                                 r"val/depth/2\.npy: the depth map is 16x24x2 float32; expected 16x24x1 or 16x24"),
    "a missing index": (lambda r: (r / "train/depth/3.npy").unlink(),
                        r"train/depth/3\.npy: missing \(train/image holds 10 scenes"),
    "an extra index": (lambda r: _save(r / "val/label/7.npy", np.zeros((H, W), np.float32)),
                       r"val/label/7\.npy: an extra index"),
    "a stray file name": (lambda r: _save(r / "val/normal/01.npy", np.zeros((H, W, 3), np.float32)),
                          r"val/normal/01\.npy: not a scene index"),
    "NaN in an image": (lambda r: _save(r / "train/image/0.npy", np.full((H, W, 3), np.nan, np.float32)),
                        r"train/image/0\.npy: the image holds 1152 NaN/inf values"),
    "normals off unit length": (lambda r: _save(r / "val/normal/1.npy", np.full((H, W, 3), 0.7, np.float32)),
                                r"val/normal/1\.npy: normals are not unit length \(norms 1\.212 \.\. 1\.212\)"),
    "a label beyond the classes": (lambda r: _save(r / "train/label/4.npy", np.full((H, W), 13, np.float32)),
                                   r"train/label/4\.npy: label 13 is neither one of the 13 classes 0\.\.12 nor "
                                   r"the ignore value -1"),
    "Cityscapes' 255 as a label": (lambda r: _save(r / "train/label/4.npy", np.full((H, W), 255, np.int64)),
                                   r"train/label/4\.npy: label 255 is neither"),
    "a fractional label": (lambda r: _save(r / "train/label/4.npy", np.full((H, W), 0.5, np.float32)),
                           r"train/label/4\.npy: labels must be whole numbers"),
    "a negative depth": (lambda r: _save(r / "train/depth/5.npy", -np.ones((H, W, 1), np.float32)),
                         r"train/depth/5\.npy: negative depth -1"),
    "a split without valid depth": (lambda r: [_save(r / f"val/depth/{i}.npy", np.zeros((H, W, 1), np.float32))
                                               for i in range(4)],
                                    r"val/depth: no valid depth pixel in the whole split"),
    "a pickled array": (lambda r: _save(r / "train/label/2.npy", np.array([{"a": 1}], dtype=object)),
                        r"train/label/2\.npy: not a readable \.npy array"),
    "a truncated file": (lambda r: (r / "train/normal/2.npy").write_bytes((r / "train/normal/2.npy").read_bytes()[:200]),
                         r"train/normal/2\.npy: not a readable \.npy array"),
    "no val/ folder": (lambda r: [p.unlink() for p in (r / "val").rglob("*.npy")] and
                       [d.rmdir() for d in sorted((r / "val").rglob("*"), reverse=True)] and (r / "val").rmdir(),
                       r"val: no such folder; the nyuv2 task reads ROOT/train/ and ROOT/val/"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_input_is_one_line_naming_the_file(nyu, case):
    spoil, message = BAD[case]
    spoil(nyu)
    with pytest.raises(DataError, match=message) as info:
        load(nyu)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("task", ["nyuv2_depth", "nyuv2_normals", "nyuv2_seg", "nyuv2"])
def test_each_variant_resolves_on_the_same_files(nyu, task):
    """The single-task variants read the same scenes: one without a class head leaves the labels unused."""
    import zoo
    from zoo.engine.build import task_spec

    reg = zoo.load_registry()
    spec = task_spec(task, reg, {"size": [H, W]})
    resolved = spec.task.resolve(spec, spec.task.datasets(DataConfig(root=str(nyu))), reg)
    assert [h.output for h in resolved.heads] == [
        {"seg": "dense_classes", "depth": "dense_values", "normals": "dense_values"}[h.name] for h in spec.heads]
    assert spec.lower_is_better == {"nyuv2": {"depth_abs_err", "depth_rel_err", "normals_mean", "normals_median"},
                                    "nyuv2_depth": {"depth_abs_err", "depth_rel_err"},
                                    "nyuv2_normals": {"normals_mean", "normals_median"}, "nyuv2_seg": set()}[task]


def test_nan_and_inf_depth_are_invalid_and_counted_not_refused(nyu):
    depth = np.full((H, W, 1), 3.0, np.float32)
    depth[0, 0], depth[0, 1] = np.inf, -np.inf
    np.save(nyu / "val" / "depth" / "0.npy", depth)
    data = load(nyu, augment=False)
    assert int(torch.isnan(data.test["main"][0]["depth"]).sum()) == 2
    assert "(NaN/inf: 15 px)" in data.info["invalid_pixels"]  # 14 scenes with one NaN each, scene 0 now two


def test_normals_off_unit_length_are_normalised_when_asked_and_the_row_says_so(nyu):
    np.save(nyu / "val" / "normal" / "1.npy", np.full((H, W, 3), 0.7, np.float32))
    data = load(nyu, normalise_normals=True)
    n = data.test["main"][1]["normals"]
    assert torch.allclose(n.norm(dim=0), torch.ones(H, W), atol=1e-6)
    assert data.info["input_conversion"].startswith("normals divided by their length (norms were 1 .. 1.212)")


def test_the_cli_without_data_root_says_where_to_get_the_data(tmp_path, capsys):
    code, err = run_cli(["--task", "nyuv2_depth", "--encoder", "scratch", "--quick", "--out", str(tmp_path / "o")],
                        capsys)
    assert_clear(code, err, "the nyuv2 task needs --data-root DIR holding train/ and val/, each with image/, label/, "
                 "depth/ and normal/ of N.npy: MTAN's preprocessed NYUv2 (https://www.dropbox.com/")


def test_a_bad_file_through_the_cli_is_one_line_before_training(nyu, tmp_path, capsys):
    np.save(nyu / "train" / "label" / "4.npy", np.full((H, W), 13, np.float32))
    code, err = run_cli(["--task", "nyuv2_seg", "--encoder", "scratch", "--quick", "--data-root", str(nyu),
                         "--task-arg", f"size=[{H}, {W}]", "--out", str(tmp_path / "o")], capsys)
    assert_clear(code, err, "4.npy: label 13 is neither one of the 13 classes")


def test_a_few_steps_of_the_joint_model_lower_every_loss(nyu, monkeypatch):
    """seg (cross-entropy, -1 ignored), depth (masked L1) and normals (1 - cosine) all fall on a fixture, with
    every metric finite; with --tta the evaluation also averages the mirrored scenes (nyuv2 mirrors)."""
    from zoo.engine.config import RunConfig
    from zoo.engine.train import fit
    from zoo.heads.dense_values import NormalsHead

    mirrored = []
    flip = NormalsHead.flip_output
    monkeypatch.setattr(NormalsHead, "flip_output", lambda self, out, w: mirrored.append(w) or flip(self, out, w))
    cfg = RunConfig(task="nyuv2", encoder="scratch", epochs=6, batch_size=4, lr=1e-2, schedule="none",
                    data_root=str(nyu), val_fraction=0.2, encoder_settings={"width": 8, "depth": 2},
                    task_settings={"size": [H, W], "augment": False}, tta=True)
    r = fit(cfg, show_progress=False)
    assert mirrored and set(mirrored) == {W}
    first, last = r.history[0]["losses"], r.history[-1]["losses"]
    assert all(last[h] < first[h] for h in ("seg", "depth", "normals")), (first, last)
    scores = r.history[-1]["val"]
    assert all(np.isfinite(v) for v in scores.values())
    assert {"seg_miou", "depth_abs_err", "depth_delta1", "normals_median", "normals_within_30"} <= set(scores)
