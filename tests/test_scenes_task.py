"""The scenes tasks (zoo.tasks.scenes): a few joint training steps lower every head's loss, the
single-task variants are the joint task's baselines, bad settings are one line before training."""
from __future__ import annotations

import statistics
import warnings

import pytest
from conftest import load_script
import torch

from zoo.bench import main
from zoo.data.config import DataConfig
from zoo.engine.build import load_registry, task_spec
from zoo.engine.build_run import setup
from zoo.engine.config import RunConfig
from zoo.engine.train import build_optimizer, train_one_epoch

TINY = {"train_size": 16, "val_size": 4, "test_size": 4, "size": [32, 32], "objects": [2, 4]}


def test_a_few_joint_steps_lower_every_loss():
    """Eight epochs of two steps on 16 tiny scenes (scratch encoder, width 8): each head's mean loss over
    the last two epochs is below its first two epochs' (segmentation, depth and normals alike). Unweighted
    segmentation: class weights from 16 tiny scenes weigh a sphere pixel 80 times a wall pixel, and that
    loss falls too slowly for eight epochs (its weights have their own test below)."""
    cfg = RunConfig(task="scenes", encoder="scratch", device="cpu", epochs=1, batch_size=8, lr=0.01,
                    schedule="none", seed=0, encoder_settings={"width": 8},
                    task_settings=dict(TINY, class_weights=False))
    torch.manual_seed(0)
    s = setup(cfg)
    loaders, optimizer = s.loaders("train"), build_optimizer(s.model, s.weighting, cfg, s.device)
    history = []
    for epoch in range(8):
        for loader in loaders.values():
            loader.set_epoch(epoch)
        losses, seen = train_one_epoch(s.model, s.plans, s.weighting, optimizer, loaders, s.device, cfg, epoch)
        assert seen == 16
        history.append(losses)
    heads = ("seg", "depth", "normals")
    assert set(heads) <= set(history[0])
    for h in heads:
        first = (history[0][h] + history[1][h]) / 2
        last = (history[-1][h] + history[-2][h]) / 2
        assert last < 0.9 * first, (h, [round(e[h], 4) for e in history])


def test_the_single_task_variants_are_the_joint_tasks_baselines():
    reg = load_registry()
    joint = task_spec("scenes", reg)
    heads = {h.name: (h.head, h.loss, h.target) for h in joint.heads}
    for task, head in (("scenes_seg", "seg"), ("scenes_depth", "depth"), ("scenes_normals", "normals")):
        single = task_spec(task, reg)
        assert [h.name for h in single.heads] == [head]
        h = single.heads[0]
        assert (h.head, h.loss, h.target) == heads[head]  # like for like: the same head, loss and target
        assert single.budget == joint.budget  # and the same budget (the joint run sees each task's samples)
        assert type(single.task).__name__ == type(joint.task).__name__
        assert vars(single.task) == vars(joint.task)  # the same scenes
        assert any(ref.startswith(task + ".") for ref in joint.baselines.values())
        # a variant without the class head trains on the same labelled scenes (their labels unused)
        resolved = single.task.resolve(single, single.task.datasets(DataConfig(train_limit=2, test_limit=2)), reg)
        assert [h.name for h in resolved.heads] == [head]
    # delta_m reads every metric's direction: the errors count negated
    assert {"depth_abs_err", "depth_rel_err", "normals_mean", "normals_median"} <= joint.lower_is_better
    assert not {"seg_miou", "seg_pixel_acc", "normals_within_11_25"} & joint.lower_is_better


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main([*args, "--quiet", "--no-figures"])
    return rc, capsys.readouterr().err.replace("\n", " ")


@pytest.mark.parametrize("arg, expect", [
    ("objects=[0, 3]", "objects must be between 1 and 64 per scene, got [0, 3]"),
    ("size=[16, 16]", "size [16, 16] is outside 32..4096 pixels a side"),
    ("fov=[0, 60]", "fov must lie inside (0, 180) degrees, got [0, 60]"),
    ("fov=[60, 180]", "fov must lie inside (0, 180) degrees, got [60, 180]"),
    ("train_size=0", "train_size must be an integer >= 1"),
    ("lights=2", "unknown setting(s) 'lights'"),
    ("class_weights=maybe", "class_weights must be true or false, got 'maybe'"),
])
def test_bad_scene_settings_are_one_line_before_training(tmp_path, capsys, arg, expect):
    rc, err = run_cli(["--task", "scenes", "--encoder", "scratch", "--quick", "--out", str(tmp_path / "res"),
                       "--task-arg", arg], capsys)
    assert rc == 2, err
    assert "Traceback" not in err and "error:" in err
    assert expect in err[err.index("error:"):], err
    assert "epoch 1/" not in err
    assert not (tmp_path / "res").exists()  # refused before any run: no empty results folder left behind


def test_export_writes_nyuv2_files_that_the_nyuv2_task_reads_back(tmp_path, capsys):
    """``python -m zoo.data export --task scenes`` writes train/ and (for the test split) val/ in MTAN's
    NYUv2 layout; the nyuv2 task reads them back as the very scenes rendered: image, labels, depth (holes
    NaN again, written as 0) and normals."""
    from zoo.data.__main__ import main as data_main
    from zoo.data.scenes import SceneSettings, render_scenes
    from zoo.tasks.nyuv2 import NYUv2Task

    out = tmp_path / "nyu"
    for split in ("train", "test"):
        assert data_main(["export", "--task", "scenes", "--split", split, "--n", "5", "--out", str(out)]) == 0
    assert "wrote 5 test scenes to" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "val").iterdir()) == ["depth", "image", "label", "normal"]
    data = NYUv2Task(size=[64, 64], augment=False).datasets(DataConfig(root=str(out), val_fraction=0.2))
    test = data.test["main"]
    assert len(test) == 5
    truth = render_scenes(SceneSettings(), 0, "test", torch.arange(5))
    assert truth["depth"].isnan().any()  # the round trip carries holes
    for i in range(5):
        got = test[i]
        assert torch.equal(got["image"], truth["image"][i])
        assert torch.equal(got["mask"], truth["mask"][i])
        assert torch.equal(got["depth"].nan_to_num(-1.0), truth["depth"][i].nan_to_num(-1.0))
        assert torch.allclose(got["normals"], truth["normals"][i], atol=1e-6)  # (the reader renormalises)


def test_a_trained_scenes_model_loads_from_its_checkpoint_and_predicts_three_maps(tmp_path, capsys):
    """A scenes run's best.pt loads with zoo.load_model alone (its record sizes the 6-class head: the class count
    comes from the data, which loading does not read), and ``python -m zoo.predict`` on a rendered image writes
    the segmentation mask, the depth and the normals maps."""
    import json

    import numpy as np
    from PIL import Image

    from zoo.data.scenes import CLASSES, SceneSettings, render_scenes
    from zoo.predict import main as predict
    from zoo.runs.results import load_rows
    from zoo.use.load import load_model

    out = tmp_path / "res"
    tiny = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    rc, err = run_cli(["--task", "scenes", "--encoder", "scratch", "--quick", "--no-baselines", "--no-speed",
                       "--encoder-arg", "width=4", "--device", "cpu", "--out", str(out),
                       *[a for t in tiny for a in ("--task-arg", t)]], capsys)
    assert rc == 0, err
    (row,) = load_rows(out)
    model = load_model(str(tmp_path / "res" / row["run_dir"].split("/")[-1] / "best.pt"))
    assert model.record.info["num_classes"] == len(CLASSES)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    assert y["seg"].shape == (1, len(CLASSES), 32, 32) and y["depth"].shape == (1, 1, 32, 32)
    assert y["normals"].shape == (1, 3, 32, 32)
    image = render_scenes(SceneSettings(size=(48, 64)), 0, "test", torch.arange(1))["image"][0]
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "room.png")
    assert predict([str(tmp_path / "res" / row["run_dir"].split("/")[-1] / "best.pt"), str(tmp_path / "room.png"),
                    "--out", str(tmp_path / "pred")]) == 0
    written = {p.name for p in (tmp_path / "pred").iterdir()}
    assert {f"0000_room_{f}" for f in ("seg.png", "depth.npy", "depth.png", "normals.npy", "normals.png")} <= written
    assert np.load(tmp_path / "pred" / "0000_room_depth.npy").shape == (1, 48, 64)  # at the image's own size
    normals = np.load(tmp_path / "pred" / "0000_room_normals.npy")
    assert normals.shape == (3, 48, 64) and np.allclose(np.linalg.norm(normals, axis=0), 1, atol=1e-3)
    # shipped as make_pretrained ships the table's best joint model: its record says what data it saw
    import zoo
    make = load_script("make_pretrained")
    assert make.main([str(out), "--out", str(tmp_path / "pre"), "--only", f"budget_mode={row['budget_mode']}"]) == 0
    meta = json.loads((tmp_path / "pre" / "index.json").read_text())["scenes/scratch"]
    assert meta["metrics_data"] == "the 4 test scenes (32x32, scene_seed 0, rendered by zoo.data.scenes)"
    assert meta["train_data"] == "train: 16 scenes + 4 validation (32x32, scene_seed 0, rendered by zoo.data.scenes)"
    assert {"seg_miou", "depth_abs_err", "normals_mean"} <= set(meta["metrics"])
    shipped = zoo.create_model("scenes", "scratch", pretrained=tmp_path / "pre" / "scenes-scratch.safetensors")
    with torch.no_grad():
        assert torch.equal(shipped(x)["depth"], y["depth"])


def test_class_weights_balance_the_segmentation_loss_by_the_training_pixels():
    """``--task-arg class_weights=true``: median-frequency weights (median frequency / class frequency) from the
    training split's pixels, counted by hand here on the same rendered scenes, go to the segmentation head's
    loss; without it the loss is unweighted."""
    from zoo.data.scenes import CLASSES, SceneSettings, render_scenes
    from zoo.tasks.scenes import ScenesTask

    reg = load_registry()
    spec = task_spec("scenes", reg)
    settings = {k: v for k, v in TINY.items() if not k.endswith("_size")}
    data = ScenesTask(train_size=6, val_size=2, test_size=2, class_weights=True, **settings).datasets(DataConfig())
    masks = render_scenes(SceneSettings(**settings), 0, "train", torch.arange(6))["mask"]
    counts = torch.bincount(masks.flatten(), minlength=len(CLASSES)).double()
    freq = counts / counts.sum()
    median = statistics.median(f for f in freq.tolist() if f > 0)
    want = [median / f if f > 0 else 0.0 for f in freq.tolist()]
    assert data.class_weights == pytest.approx(want, rel=1e-5)
    seg = next(h for h in spec.task.resolve(spec, data, reg).heads if h.name == "seg")
    assert seg.loss_settings["class_weights"] == data.class_weights
    plain = ScenesTask(train_size=6, val_size=2, test_size=2, **settings).datasets(DataConfig())
    seg = next(h for h in spec.task.resolve(spec, plain, reg).heads if h.name == "seg")
    assert "class_weights" not in seg.loss_settings
