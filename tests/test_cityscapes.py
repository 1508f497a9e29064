"""Cityscapes (#38) in MTAN's preprocessed layout (7 or 19 classes + depth) and in the official one (label ids ->
train ids, depth = baseline x fx / disparity from the camera file), on fixtures written in each layout; an image
without its disparity, camera or label file is one line naming it."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from zoo.data.config import DataConfig
from zoo.data.idx import DataError
from zoo.tasks.cityscapes import CityscapesTask

H, W = 8, 16


def write_preprocessed(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for name in ("image", "label_7", "label_19", "depth"):
            (root / split / name).mkdir(parents=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((H, W, 3)).astype(np.float32))
            np.save(root / split / "label_7" / f"{i}.npy", rng.integers(-1, 7, (H, W)).astype(np.float32))
            np.save(root / split / "label_19" / f"{i}.npy", rng.integers(-1, 19, (H, W)).astype(np.float32))
            depth = rng.uniform(0.1, 1.0, (H, W, 1)).astype(np.float32)
            depth[0] = 0.0
            np.save(root / split / "depth" / f"{i}.npy", depth)


@pytest.mark.parametrize("classes", [7, 19])
def test_the_preprocessed_layout_loads_7_or_19_classes_with_missing_depth_as_nan(tmp_path, classes):
    write_preprocessed(tmp_path)
    data = CityscapesTask(num_classes=classes, size=[H, W]).datasets(DataConfig(root=str(tmp_path), val_fraction=0.2))
    s = data.test["main"][0]
    assert (len(data.train["main"]), len(data.val["main"]), len(data.test["main"])) == (5, 1, 3)
    assert s["image"].shape == (3, H, W) and s["mask"].dtype == torch.int64 and s["depth"].shape == (1, H, W)
    want = np.load(tmp_path / "val" / f"label_{classes}" / "0.npy").astype(np.int64)
    assert torch.equal(s["mask"], torch.from_numpy(want)) and data.num_classes == classes
    assert bool(torch.isnan(s["depth"][0, 0]).all()) and bool(torch.isfinite(s["depth"][0, 1:]).all())
    assert data.info["invalid_pixels"].startswith(f"depth train {round(100 / H, 3)} %")
    assert "preprocessed" in data.info["data_source"] and "test = val (3 images)" in data.info["validation"]


def test_a_preprocessed_label_beyond_the_class_count_is_one_line(tmp_path):
    write_preprocessed(tmp_path)
    np.save(tmp_path / "train" / "label_7" / "2.npy", np.full((H, W), 9, np.float32))
    with pytest.raises(DataError, match=r"train/label_7/2\.npy: label 9 is neither one of the 7 classes"):
        CityscapesTask(num_classes=7, size=[H, W]).datasets(DataConfig(root=str(tmp_path)))


CITY, STEM = "aachen", "aachen_000000_000019"


def write_official(root: Path, n: int = 3, omit: str | None = None, camera: dict | None = None) -> None:
    """Images of 8x16 with label ids road (7), car (26), unlabeled (0) and sky (23) in bands, and a disparity
    holding p = 0 (invalid), 1 (d = 0, invalid), 257 (d = 1) and 513 (d = 2)."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for i in range(n):
            stem = f"{CITY}_{i:06d}_000019"
            paths = {"image": root / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png",
                     "label": root / "gtFine" / split / CITY / f"{stem}_gtFine_labelIds.png",
                     "disparity": root / "disparity" / split / CITY / f"{stem}_disparity.png",
                     "camera": root / "camera" / split / CITY / f"{stem}_camera.json"}
            for p in paths.values():
                p.parent.mkdir(parents=True, exist_ok=True)
            ids = np.zeros((H, W), np.uint8)
            ids[0:2], ids[2:4], ids[4:6], ids[6:8] = 7, 26, 0, 23
            disp = np.zeros((H, W), np.uint16)
            disp[:, 4:8], disp[:, 8:12], disp[:, 12:] = 1, 257, 513
            files = {"image": lambda p: cv2.imwrite(str(p), rng.integers(0, 256, (H, W, 3), dtype=np.uint8)),
                     "label": lambda p: cv2.imwrite(str(p), ids),
                     "disparity": lambda p: cv2.imwrite(str(p), disp),
                     "camera": lambda p: p.write_text(json.dumps(camera or {
                         "extrinsic": {"baseline": 0.2, "pitch": 0.04, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": 0.0,
                                       "z": 1.2},
                         "intrinsic": {"fx": 2000.0, "fy": 2000.0, "u0": 1000.0, "v0": 500.0}}))}
            for what, write in files.items():
                if omit != what or i != 1 or split != "train":
                    write(paths[what])


@pytest.mark.parametrize("classes,car", [(19, 13), (7, 6)])
def test_the_official_layout_maps_label_ids_and_turns_disparity_into_depth(tmp_path, classes, car):
    write_official(tmp_path)
    data = CityscapesTask(num_classes=classes, size=[H, W], augment=False).datasets(
        DataConfig(root=str(tmp_path), val_fraction=0.34))
    s = data.test["main"][0]
    # road -> 0 (flat), car -> 13 / vehicle 6, unlabeled -> ignored, sky -> 10 / 4
    assert s["mask"][:, 0].tolist() == [0, 0, car, car, -1, -1, 10 if classes == 19 else 4] + [10 if classes == 19 else 4]
    depth = s["depth"][0]
    assert bool(torch.isnan(depth[:, :8]).all())  # p = 0 and p = 1 (d = 0) are missing
    assert torch.allclose(depth[:, 8:12], torch.full((H, 4), 0.2 * 2000 / 1.0))
    assert torch.allclose(depth[:, 12:], torch.full((H, 4), 0.2 * 2000 / 2.0))
    assert s["image"].shape == (3, H, W) and "official" in data.info["data_source"]
    assert data.info["invalid_pixels"].startswith("depth train 50.0 %, val 50.0 %")


def test_official_images_are_resized_to_the_task_size_labels_and_depth_by_nearest(tmp_path):
    write_official(tmp_path)
    data = CityscapesTask(num_classes=19, size=[2 * H, 2 * W], augment=False).datasets(
        DataConfig(root=str(tmp_path), val_fraction=0.34))
    s = data.test["main"][0]
    assert s["image"].shape == (3, 2 * H, 2 * W)
    assert s["mask"][:, 0].tolist() == [0] * 4 + [13] * 4 + [-1] * 4 + [10] * 4  # each band twice as tall
    assert s["depth"][0, 0].tolist()[16:] == pytest.approx([400.0] * 8 + [200.0] * 8)
    assert bool(torch.isnan(s["depth"][0, :, :16]).all())


@pytest.mark.parametrize("omit,names", [("disparity", "disparity/train/aachen/aachen_000001_000019_disparity.png: missing"),
                                        ("camera", "camera/train/aachen/aachen_000001_000019_camera.json: missing"),
                                        ("label", "aachen_000001_000019_gtFine_labelIds.png: missing")])
def test_an_image_without_its_disparity_camera_or_labels_is_one_line(tmp_path, omit, names):
    write_official(tmp_path, omit=omit)
    with pytest.raises(DataError, match=names) as info:
        CityscapesTask(num_classes=19, size=[H, W]).datasets(DataConfig(root=str(tmp_path)))
    assert "\n" not in str(info.value) and "aachen_000001_000019_leftImg8bit.png needs its" in str(info.value)


def test_a_broken_camera_file_is_one_line(tmp_path):
    write_official(tmp_path, camera={"extrinsic": {}, "intrinsic": {"fx": 2000.0}})
    with pytest.raises(DataError, match=r"camera\.json: not a Cityscapes camera file \(extrinsic\.baseline"):
        CityscapesTask(num_classes=19, size=[H, W]).datasets(DataConfig(root=str(tmp_path)))


def test_without_data_root_the_error_says_where_and_which_layouts(tmp_path):
    with pytest.raises(DataError, match="the cityscapes task needs --data-root DIR holding MTAN's preprocessed "
                                        "Cityscapes.*or the official layout: leftImg8bit/"):
        CityscapesTask().datasets(DataConfig())
    with pytest.raises(DataError, match="neither leftImg8bit/ nor train/ and val/"):
        CityscapesTask().datasets(DataConfig(root=str(tmp_path)))


def test_a_few_steps_of_the_cityscapes_model_lower_both_losses(tmp_path):
    from zoo.engine.config import RunConfig
    from zoo.engine.train import fit

    write_preprocessed(tmp_path)
    cfg = RunConfig(task="cityscapes", encoder="scratch", epochs=5, batch_size=3, lr=1e-2, schedule="none",
                    data_root=str(tmp_path), val_fraction=0.2, encoder_settings={"width": 8, "depth": 2},
                    task_settings={"size": [H, W], "augment": False, "num_classes": 19})
    r = fit(cfg, show_progress=False)
    first, last = r.history[0]["losses"], r.history[-1]["losses"]
    assert last["seg"] < first["seg"] and last["depth"] < first["depth"], (first, last)
    assert r.model.heads["seg"].num_classes == 19 and np.isfinite(r.history[-1]["val"]["depth_abs_err"])
