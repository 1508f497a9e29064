"""The product surface on tiny trained models: export (ONNX through onnxruntime, TorchScript, exported
program), predict on image files, speed columns and TensorBoard logs."""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import zoo
from conftest import load_script, write_registry
from zoo.bench import main as bench
from zoo.engine.config import RunConfig
from zoo.engine.record import hand_record
from zoo.export import export, main as export_main
from zoo.predict import main as predict_main, predict
from zoo.engine.build_run import setup
from zoo.use.speed import train_peak_memory_mb

REG = zoo.load_registry()
HEAD_CASES = [(h, s) for h in REG.names("heads") for s in ([{"mode": "fit"}, {"mode": "regress"}] if h == "circle" else [{}])]


@pytest.fixture(scope="module")
def circ_run(tiny_mnist, tmp_path_factory) -> Path:
    """A circlization model trained for 2 epochs on the rectangle digits, with TensorBoard logs."""
    out = tmp_path_factory.mktemp("circ")
    assert bench(["--task", "circlization", "--encoder", "scratch", "--data-root", str(tiny_mnist), "--out", str(out),
                  "--epochs", "2", "--batch-size", "16", "--encoder-arg", "width=8", "--quiet", "--tensorboard"]) == 0
    return out


@pytest.mark.parametrize("encoder", ["scratch", "resnet18"])
@pytest.mark.parametrize("head,settings", HEAD_CASES, ids=[f"{h}{'-' + s['mode'] if s else ''}" for h, s in HEAD_CASES])
def test_every_head_exports_to_onnx_and_matches_pytorch(tmp_path, encoder, head, settings):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = zoo.build_model(encoder, {"out": {"head": head, "settings": settings}},
                            encoder_settings={"input_skip": True}).eval()
    model.record = hand_record(("resize", (56, 56)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(model, "onnx", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path))
    for batch in (1, 3):  # the batch size is dynamic
        x = torch.rand(batch, 1, 56, 56)
        got = session.run(None, {"image": x.numpy()})[0]
        want = model(x)["out"].detach().numpy()
        assert got.shape == want.shape
        assert np.abs(np.where(got == want, 0, got - want)).max() <= 1e-4
    info = json.loads(Path(str(path) + ".json").read_text())
    assert info["outputs"][0]["name"] == "out" and info["outputs"][0]["postprocessing"] == model.heads["out"].export_note


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_export_cli_other_formats(circ_run, tmp_path, capsys, fmt):
    ckpt = next(circ_run.glob("*/best.pt"))
    out = tmp_path / f"m.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert export_main([str(ckpt), "--format", fmt, "--out", str(out)]) == 0
    model = zoo.load_model(ckpt)
    x = torch.rand(5, 1, 28, 28)
    want = model(x)
    loaded = torch.jit.load(str(out)) if fmt == "torchscript" else torch.export.load(str(out)).module()
    got = loaded(x)
    for name, g in zip(model.heads, got):
        assert torch.allclose(g, want[name], atol=1e-5)


def _digit_png(path: Path, rect: tuple[int, int, int, int], invert: bool, rgb: bool) -> Path:
    """A big 'digit' (a filled rectangle) on a plain background, like a user's photo of a sheet."""
    img = np.full((120, 90), 255 if invert else 0, np.uint8)
    x0, y0, x1, y1 = rect
    img[y0:y1, x0:x1] = 0 if invert else 230
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if rgb else img)
    return path


def test_predict_writes_overlays_and_tables(circ_run, tmp_path):
    ckpt = next(circ_run.glob("*/best.pt"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    _digit_png(folder / "a.png", (20, 30, 60, 100), invert=True, rgb=False)
    _digit_png(folder / "b.png", (30, 20, 50, 90), invert=False, rgb=True)
    records = predict(str(ckpt), [folder], tmp_path / "out")
    assert [Path(r["file"]).name for r in records] == ["a.png", "b.png"]
    for r in records:
        assert 0 <= r["digit_class"] <= 9 and 0.0 < r["digit_prob"] <= 1.0
        assert {"circle_cx", "circle_cy", "circle_r", "overlay"} <= set(r)
        assert (tmp_path / "out" / r["overlay"]).stat().st_size > 200
    csv = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert csv[0].startswith("file,digit_class,digit_prob,circle_cx") and len(csv) == 3
    data = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert data["model"]["task"] == "circlization" and len(data["predictions"]) == 2


def test_predict_maps_the_input_frame_back(tmp_path):
    """The digit preprocessing is an affine map: a point of the model's 28x28 frame maps back onto
    the user's image (a rectangle's centre goes to the frame's centre of mass and back)."""
    from zoo.data.inputs import prepare, read_any

    path = _digit_png(tmp_path / "d.png", (20, 30, 60, 100), invert=True, rgb=True)
    x, frame = prepare(read_any(path), "digit", 1)
    assert x.shape == (28, 28) and x.max() > 200 and x[0].max() == 0, "white digit on black, as MNIST"
    ys, xs = np.nonzero(x > 127)
    assert max(xs.max() - xs.min(), ys.max() - ys.min()) + 1 == 20, "the longer side is 20 pixels"
    cx, cy, r = frame.to_original(14.0, 14.0, 10.0)
    scale = 70 / 20  # original pixels per model pixel: the 70-pixel side became 20
    assert abs(r - 10 * scale) < 1e-6
    assert abs(cx - 39.5) < 0.5 * scale and abs(cy - 64.5) < 0.5 * scale, "within half a model pixel"


@pytest.mark.parametrize("make,expect", [
    (lambda d: (d / "bad.png").write_bytes(b"not an image") and d / "bad.png", "cannot read the image"),
    (lambda d: __import__("PIL.Image").Image.new("CMYK", (20, 20)).save(d / "c.jpg") or d / "c.jpg",
     "a CMYK image (4 channels"),
    (lambda d: d / "missing.png", "no such file or folder"),
    (lambda d: cv2.imwrite(str(d / "dot.png"), np.full((1, 1), 255, np.uint8)) and d / "dot.png",
     "the image is 1x1 pixels; zoo predicts on images of at least 8x8"),
])
def test_predict_bad_inputs(circ_run, tmp_path, capsys, make, expect):
    ckpt = next(circ_run.glob("*/best.pt"))
    path = make(tmp_path)
    assert predict_main([str(ckpt), str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert expect in err and "Traceback" not in err and str(path.name) in err


def test_predict_with_nan_weights_is_an_error_not_a_nan_answer(circ_run, tmp_path, capsys):
    """A model whose weights are NaN gives one clear line, never ``digit_prob: nan`` in the tables."""
    from zoo.use.load import load_model

    model = load_model(next(circ_run.glob("*/best.pt")))
    with torch.no_grad():
        next(model.heads["digit"].parameters()).fill_(float("nan"))
    img = tmp_path / "seven.png"
    cv2.imwrite(str(img), np.full((28, 28), 255, np.uint8))
    with pytest.raises(ValueError, match=r"output for head\(s\) digit is NaN or inf"):
        predict(model, [img], out=tmp_path / "o")
    assert not (tmp_path / "o" / "predictions.csv").exists()


def test_predict_unknown_model_name(tmp_path, capsys):
    assert predict_main(["circlisation/scratch", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "unknown pretrained model 'circlisation/scratch'" in err and "Traceback" not in err


def test_rows_have_speed_columns(circ_run):
    [row] = json.loads((circ_run / "results.json").read_text())["rows"]
    assert row["gflops"] > 0 and row["infer_img_s_b1"] > 0 and row["infer_img_s_beval"] > 0
    assert row["eval_batch"] == 60 and row["peak_memory_mb"] > 100  # the test split has 60 digits
    assert "gflops" in (circ_run / "results.md").read_text()


def test_tensorboard_event_file_reads_back(circ_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = next(circ_run.glob("*/tensorboard"))
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/total", "loss/digit", "val/accuracy", "val/gated_iou", "weight/digit", "lr"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("val/accuracy")] == [1, 2]
    assert "prediction" in tags["images"]


def test_speed_script_fills_columns_without_training(tiny_mnist, tmp_path):
    script = load_script("speed")
    assert script.main(["--task", "foreground,circlization", "--encoder", "scratch", "--data-root", str(tiny_mnist),
                        "--out", str(tmp_path), "--repeats", "2"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["foreground", "circlization"]
    for r in rows:
        assert r["budget_mode"] == "untrained" and r["gflops"] > 0 and r["infer_img_s_b1"] > 0 and r["parameters"] > 0
        # a training step holds at least the weights, their gradients and AdamW's two moments (float32)
        assert r["train_peak_memory_mb"] > 4 * 4 * r["parameters"] / 2**20, r


def test_training_peak_memory_counts_the_batch(tiny_mnist):
    """Twice the batch, more activation memory; the weights and optimizer state do not change."""
    cfg = RunConfig(task="foreground", encoder="scratch", data_root=str(tiny_mnist),
                    encoder_settings={"input_skip": True, "width": 8})
    small = train_peak_memory_mb(dataclasses.replace(cfg, batch_size=8), setup(dataclasses.replace(cfg, batch_size=8)))
    big = train_peak_memory_mb(dataclasses.replace(cfg, batch_size=32), setup(dataclasses.replace(cfg, batch_size=32)))
    params = sum(p.numel() for p in setup(cfg).model.parameters()) * 4 / 2**20
    assert small > 4 * params and big > small + 0.5, (params, small, big)


@pytest.mark.parametrize("ink", [0, 255], ids=["black-ink", "white-ink"])
def test_transparent_png_keeps_its_strokes(tmp_path, ink):
    """Strokes on a transparent canvas (RGBA and LA) read as the same digit as strokes on an opaque
    background of the contrasting colour: the alpha is composited, not dropped."""
    from PIL import Image

    from zoo.data.inputs import prepare, read_any

    strokes = np.zeros((40, 30), bool)
    strokes[8:32, 12:18] = True
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = strokes * 255
    opaque = np.where(strokes, ink, 255 - ink).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    Image.fromarray(np.stack([rgba[..., 0], rgba[..., 3]], -1), "LA").save(tmp_path / "la.png")
    Image.fromarray(opaque, "L").save(tmp_path / "o.png")
    want, _ = prepare(read_any(tmp_path / "o.png"), "digit", 1)
    assert want.max() > 100  # the opaque digit has its stroke
    for name in ("t.png", "la.png"):
        got, _ = prepare(read_any(tmp_path / name), "digit", 1)
        assert np.array_equal(got, want), name


def test_predict_and_export_check_their_outputs_first(circ_run, tmp_path, capsys):
    """--out that is a file (predict) or a folder (export) is one line before any work."""
    ckpt = next(circ_run.glob("*/best.pt"))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    f = tmp_path / "afile"
    f.write_text("keep me")
    assert predict_main([str(ckpt), str(img), "--out", str(f)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"--out {f} is a file, not a folder" in err and "Traceback" not in err
    assert export_main([str(ckpt), "--format", "onnx", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"--out {tmp_path} is a folder; give a file path" in err and "Traceback" not in err
    assert export_main([str(ckpt), "--format", "onnx", "--out", str(f / "m.onnx")]) == 2
    assert "its folder" in capsys.readouterr().err and f.read_text() == "keep me"


def test_a_full_disk_leaves_earlier_files_whole(circ_run, tmp_path, capsys, monkeypatch):
    """ENOSPC while exporting or writing predictions: one line, and the file that was there is unchanged."""
    import errno

    import zoo.export as export_mod
    import zoo.predict as predict_mod

    ckpt = next(circ_run.glob("*/best.pt"))
    out = tmp_path / "m.pt"
    assert export_main([str(ckpt), "--format", "torchscript", "--out", str(out)]) == 0
    before = out.read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(a[1] if len(a) > 1 else out))

    monkeypatch.setattr(export_mod.torch.jit, "save", full)
    capsys.readouterr()
    assert export_main([str(ckpt), "--format", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "No space left on device" in err and "nothing was replaced" in err and "Traceback" not in err
    assert out.read_bytes() == before and not list(tmp_path.glob(".m.pt.*"))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    monkeypatch.setattr(predict_mod, "atomic_write_bytes", lambda path, data: full(None, path))
    assert predict_main([str(ckpt), str(img), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "No space left on device" in err and "Traceback" not in err


@pytest.mark.slow
def test_mtl_step_benchmark_times_every_configuration_against_hard_sharing_fixed(tiny_mnist, tmp_path):
    """benchmarks/mtl_step.py: each architecture x strategy trains real steps in one process, the
    reference row is 1 by construction and the others are measured beside it."""
    script = load_script("mtl_step")
    assert script.main(["--architecture", "mtan,hard_sharing", "--weighting", "fixed,upgrad", "--encoder-arg", "width=4",
                        "--steps", "2", "--chunk", "1", "--data-root", str(tiny_mnist), "--out", str(tmp_path)]) == 0
    info = json.loads((tmp_path / "cpu.json").read_text())
    rows = {(r["architecture"], r["weighting"]): r for r in info["rows"]}
    assert list(rows) == [("mtan", "fixed"), ("mtan", "upgrad"), ("hard_sharing", "fixed"), ("hard_sharing", "upgrad")]
    ref = rows["hard_sharing", "fixed"]
    assert ref["relative"] == 1.0 and ref["relative_memory"] == 1.0  # the reference, though measured third
    for r in rows.values():
        assert r["chunks"] == 2 and r["ms_per_step"] > 0 and r["peak_mb"] > 0, r
    # MTAN adds attention modules and their activations to the same encoder and heads
    assert rows["mtan", "fixed"]["peak_mb"] > ref["peak_mb"]
    assert "| hard_sharing | upgrad |" in (tmp_path / "cpu.md").read_text()


VALUES_HEAD = '''
from torch import nn
from zoo import Head


class TwoValues(Head):
    output_kind = "values"
    default_target, default_loss = "mask", "bce"

    def __init__(self, channels, reductions):
        super().__init__(channels, reductions)
        self.fc = nn.Linear(channels[-1], 2)

    def forward(self, features):
        return self.fc(features[-1].mean((2, 3))) * 10

    def predict(self, output, size=None):
        return output.round()
'''


@pytest.mark.parametrize("head,settings", HEAD_CASES + [("two_values", {})],
                         ids=[f"{h}{'-' + s['mode'] if s else ''}" for h, s in HEAD_CASES] + ["values"])
def test_every_output_kind_is_in_predicts_record_and_overlay(tmp_path, monkeypatch, head, settings):
    """Every registered head, and a regression (``values``) head, says something in each image's record:
    a class and probability, a circle, a mask's share or classes, or the values themselves."""
    from zoo.predict import predict_image

    (tmp_path / "valuesmod.py").write_text(VALUES_HEAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    user = write_registry(tmp_path, {"heads": {"two_values": {"target": "valuesmod:TwoValues"}}})
    registry = zoo.load_registry([user])
    torch.manual_seed(0)
    model = zoo.build_model("scratch", {"out": {"head": head, "settings": settings}}, registry=registry,
                            encoder_settings={"input_skip": True, "width": 8}).eval()
    model.record = hand_record(("resize", (28, 28)))
    image = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)
    record, masks, said = predict_image(model, image)
    keys = [k for k in record if k.startswith("out_")]
    assert keys, f"{head} ({model.heads['out'].output_kind}) is missing from the record {record}"
    kind = model.heads["out"].output_kind
    if kind == "values":
        from zoo.data.inputs import prepare

        x, _ = prepare(image, "resize", 1, (28, 28))  # what predict gives the model
        with torch.no_grad():
            out = model(torch.from_numpy(x.astype(np.float32) / 255)[None, None])["out"][0]
        assert record["out_value_0"] == pytest.approx(float(out[0]), abs=1e-4)
        assert record["out_pred_1"] == round(float(out[1]))
        assert said["out"].text  # written on the overlay
    elif head == "circle":  # either mode reports the circle itself
        assert {"out_cx", "out_cy", "out_r"} <= set(record)
    elif kind == "binary_mask":
        assert 0.0 <= record["out_foreground_pct"] <= 100.0 and "out" in masks
    elif kind == "dense_classes":
        assert set(map(int, record["out_classes"].split())) == set(np.unique(masks["out"]).tolist())


def test_figure_error_panels_colour_false_positives_and_negatives():
    """The errors panel, hand-computed: binary false positives red, false negatives blue, true positives grey;
    a class map's wrong pixels red."""
    from zoo.use.figures import error_image, with_errors

    truth = torch.tensor([[1, 1], [0, 0]])
    pred = torch.tensor([[1, 0], [1, 0]])
    img = error_image(truth, pred)
    assert img[0, 0].tolist() == pytest.approx([0.8, 0.8, 0.8])  # true positive
    assert img[0, 1].tolist() == pytest.approx([0.0, 0.4, 1.0])  # false negative: blue
    assert img[1, 0].tolist() == pytest.approx([1.0, 0.0, 0.0])  # false positive: red
    assert img[1, 1].tolist() == [0.0, 0.0, 0.0]  # true negative
    classes = error_image(torch.tensor([[3, 2]]), torch.tensor([[3, 5]]))
    assert classes[0, 0].tolist() == pytest.approx([0.25] * 3) and classes[0, 1].tolist() == [1.0, 0.0, 0.0]
    assert [label for _, label in with_errors([(truth, "true"), (pred, "pred")])] == ["true", "pred", "errors"]
    assert len(with_errors([(torch.zeros(3), "true"), (torch.zeros(3), "pred")])) == 2  # not masks: no panel


def test_decompression_bomb_png_in_predict(tmp_path, capsys, monkeypatch):
    """PIL's pixel cap (a decompression bomb) is one line naming the file, not PIL's traceback."""
    from PIL import Image

    from zoo.predict import main as predict_main

    big = tmp_path / "big.png"
    Image.new("L", (400, 400)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 // 2)  # 400x400 is then over twice the cap
    assert predict_main(["circlization/scratch", str(big), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"{big}: too large to read safely" in err and "Traceback" not in err
