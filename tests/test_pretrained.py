"""The shipped reference models: listed, loadable, described, and scoring what their metadata says."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import load_script

import zoo
from zoo.data.idx import BUNDLED
from zoo.engine.evaluate import evaluate_checkpoint
from zoo.use.pretrained import PRETRAINED_DIR

SHIPPED = zoo.list_pretrained()
ROOT = Path(__file__).resolve().parent.parent
#: what a shipped model's record must say it was trained and scored on, where that is not the MNIST digits
DATA = {"scenes": ("train: 795 scenes + 200 validation (64x64", "the 654 test scenes (64x64")}


def test_reference_models_are_shipped():
    assert {"foreground/scratch", "circlization/scratch", "semantic/scratch", "scenes/scratch"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_metadata_record(name):
    meta = zoo.pretrained_meta(name)
    task, _, encoder = name.partition("/")
    assert (meta["task"], meta["encoder"]) == (task, encoder)
    data = (PRETRAINED_DIR / meta["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert abs(len(data) / 2**20 - meta["file_size_mb"]) < 1e-3
    model = zoo.create_model(task, encoder, pretrained=True)
    assert sum(p.numel() for p in model.parameters()) == meta["num_params"]
    assert set(model.heads) == set(meta["heads"]) and meta["gflops"] > 0
    train, test = DATA.get(task, ("train: 5,000 digits", "10,000"))
    assert meta["recipe"].startswith("python -m zoo.bench") and train in meta["train_data"]
    assert meta["metrics"] and test in meta["metrics_data"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_its_metadata(name):
    """Scored on the test digits, each shipped model reproduces its recorded metrics to 0.01."""
    meta = zoo.pretrained_meta(name)
    scores = evaluate_checkpoint(PRETRAINED_DIR / meta["file"], data_root=str(BUNDLED), device="cpu")
    for metric, value in meta["metrics"].items():
        assert scores[metric] == pytest.approx(value, abs=0.01), metric


def test_a_joint_configuration_ships_as_joint_encoder_and_predicts_every_head(tiny_mnist, tmp_path, capsys):
    """Item 6 of the MTL issue: make_pretrained ships one joint configuration of an MTL table
    (``--only``) as ``joint-<encoder>``, refuses to pick between two by itself, and the shipped
    file loads with its architecture and gives all four heads' outputs on one image."""
    import json

    import cv2
    import numpy as np

    from zoo.bench import main as bench
    from zoo.predict import main as predict

    res = tmp_path / "res"
    for arch in ("hard_sharing", "mtan"):
        assert bench(["--task", "joint", "--encoder", "scratch", "--architecture", arch, "--quick", "--epochs", "1",
                      "--encoder-arg", "width=4", "--data-root", str(tiny_mnist), "--out", str(res), "--quiet",
                      "--no-figures", "--no-speed", "--no-baselines", "--device", "cpu"]) == 0
    mode = {r["budget_mode"] for r in json.loads((res / "results.json").read_text())["rows"]}.pop()
    make = load_script("make_pretrained")
    out = tmp_path / "pre"
    with pytest.raises(SystemExit) as e:  # both rows are joint/scratch: which one ships is the user's choice
        make.main([str(res), "--out", str(out), "--only", f"budget_mode={mode}", "--only", "task=joint"])
    assert e.value.code == 2 and "several rows would be shipped as joint-scratch.safetensors" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):  # the default budget mode: no quick row is shipped by accident
        make.main([str(res), "--out", str(out), "--only", "architecture=mtan"])
    assert make.main([str(res), "--out", str(out), "--only", f"budget_mode={mode}", "--only", "architecture=mtan"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert list(index) == ["joint/scratch"] and index["joint/scratch"]["config"]["architecture"] == "mtan"
    model = zoo.create_model("joint", "scratch", pretrained=out / "joint-scratch.safetensors")
    assert type(model.architecture).__name__ == "MTAN", type(model.architecture)
    assert set(model.heads) == set(index["joint/scratch"]["heads"]) == {"mask", "digit", "circle", "seg"}
    image = tmp_path / "digit.png"
    cv2.imwrite(str(image), (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8))
    assert predict([str(out / "joint-scratch.safetensors"), str(image), "--out", str(tmp_path / "pred")]) == 0
    rec = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    rec = rec[0] if isinstance(rec, list) else rec
    for key in ("digit_class", "digit_prob", "circle_cx", "circle_cy", "circle_r", "mask_png", "seg_png"):
        assert key in json.dumps(rec), key
