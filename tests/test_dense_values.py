"""Per-pixel values (#38): the dense_values output kind's hooks, the depth / normals / dense_regression heads,
their masked losses, their metrics against hand-computed values and LibMTL's formulas, and delta_m with
metrics of both directions."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import zoo
from zoo.core.dense_metrics import ANGLE_BIN, DepthErrors, NormalErrors
from zoo.core.losses import Cosine, MaskedL1, ScaleInvariantLog
from zoo.core.metrics import Confusion
from zoo.engine.step import TTA_SHIFTS, run_heads
from zoo.runs.gain import NEGATED, add_gain, delta_m
from zoo.engine.record import hand_record

NAN = float("nan")


def tiny(**heads):
    torch.manual_seed(0)
    return zoo.build_model("scratch", heads or {"depth": "depth", "normals": "normals"}, in_channels=3,
                           encoder_settings={"width": 4, "depth": 2}).eval()


# ----------------------------------------------------------------------------- the kind's hooks
def test_heads_keep_their_contract_at_odd_sizes():
    """Padded to the encoder's stride, cropped back by the declared kind; depth >= 0, normals unit length."""
    model = tiny(depth="depth", normals="normals", r={"head": "dense_regression", "settings": {"out_channels": 2}})
    out = model(torch.rand(2, 3, 30, 38))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"depth": (2, 1, 30, 38), "normals": (2, 3, 30, 38),
                                                           "r": (2, 2, 30, 38)}
    assert bool((out["depth"] >= 0).all())
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(2, 30, 38), atol=1e-5)
    assert {h.output_kind for h in model.heads.values()} == {"dense_values"}


def test_a_mirror_negates_the_normals_x_and_nothing_else():
    """Hand-computed: a normal (0.6, 0, 0.8) at column 0 of a 4-wide map is (-0.6, 0, 0.8) at column 3 once the
    mirror is undone; a depth moves without a sign change."""
    model = tiny()
    n = torch.zeros(1, 3, 1, 4)
    n[0, :, 0, 0] = torch.tensor([0.6, 0.0, 0.8])
    back = model.heads["normals"].flip_output(n, 4)
    assert back[0, :, 0, 3].tolist() == pytest.approx([-0.6, 0.0, 0.8]) and float(back[0, :, 0, :3].abs().sum()) == 0
    d = torch.arange(4.0).view(1, 1, 1, 4)
    assert model.heads["depth"].flip_output(d, 4).flatten().tolist() == [3.0, 2.0, 1.0, 0.0]


def test_test_time_augmentation_averages_the_mirrored_pass_with_x_negated():
    model = tiny()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        got = run_heads(model, x, ["normals"], tta=True, mirror=True)["normals"]
        passes = [torch.roll(model(torch.roll(x, s, (2, 3)))["normals"], (-s[0], -s[1]), (2, 3)) for s in TTA_SHIFTS]
        mirrored = torch.flip(model(torch.flip(x, (3,)))["normals"], (3,)) * torch.tensor([-1.0, 1, 1]).view(1, 3, 1, 1)
        want = (sum(passes) + mirrored) / (len(TTA_SHIFTS) + 1)
        plain = run_heads(model, x, ["normals"], tta=True)["normals"]
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, plain)
    pred = model.predict({"normals": got}, size=(16, 16))["normals"]  # the average is shorter: renormalised
    assert torch.allclose(pred.norm(dim=1), torch.ones(1, 16, 16), atol=1e-5)


def test_predict_writes_a_depth_and_a_normal_picture_and_the_values(tmp_path):
    """zoo.predict: per image a colour-mapped depth PNG, an RGB normal PNG, the values as .npy at the image's
    size, and the depth's range in the record."""
    import cv2

    from zoo.predict import predict

    model = tiny()
    model.record = hand_record(("resize", (32, 48)), in_channels=3)
    img = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "room.png"), img)
    (rec,) = predict(model, [tmp_path / "room.png"], tmp_path / "out")
    depth = np.load(tmp_path / "out" / rec["depth_npy"])
    normals = np.load(tmp_path / "out" / rec["normals_npy"])
    assert depth.shape == (1, 40, 60) and normals.shape == (3, 40, 60) and depth.dtype == np.float32
    assert rec["depth_min"] <= float(np.nanmin(depth)) + 1e-4 and rec["depth_max"] >= float(np.nanmax(depth)) - 1e-4
    for key in ("depth_png", "normals_png"):
        pic = cv2.imread(str(tmp_path / "out" / rec[key]))
        assert pic.shape == (40, 60, 3)
    pic = cv2.imread(str(tmp_path / "out" / rec["normals_png"]))[..., ::-1].astype(float)
    finite = np.isfinite(normals).all(0)
    assert np.abs(pic[finite] - (normals.transpose(1, 2, 0)[finite] + 1) / 2 * 255).max() <= 1.0  # (n + 1) / 2
    assert np.isfinite(depth).all() and np.isfinite(normals).all()  # every pixel of the image has a value
    mean = normals.reshape(3, -1).mean(1)
    assert [rec[f"normals_mean_{a}"] for a in "xyz"] == pytest.approx(mean / np.linalg.norm(mean), abs=0.02)
    saved = json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"][0]
    assert saved["depth_mean"] == rec["depth_mean"]


def test_the_new_heads_export_to_onnx_and_torchscript_with_parity(tmp_path):
    import onnxruntime as ort

    from zoo.export import export

    model = tiny(depth="depth", normals="normals", r={"head": "dense_regression", "settings": {"out_channels": 2}})
    model.record = hand_record(("resize", (24, 32)), in_channels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export(model, "onnx", tmp_path / "m.onnx")
    info = json.loads((tmp_path / "m.onnx.json").read_text())
    assert [o["name"] for o in info["outputs"]] == ["depth", "normals", "r"]
    assert "unit normals" in info["outputs"][1]["postprocessing"]
    x = torch.rand(2, 3, 24, 32)
    got = ort.InferenceSession(str(path)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = model(x)
    for g, name in zip(got, ["depth", "normals", "r"]):
        assert np.abs(g - want[name].numpy()).max() <= 1e-4, name
    traced = torch.jit.load(str(export(model, "torchscript", tmp_path / "m.pt")))
    for g, name in zip(traced(x), ["depth", "normals", "r"]):
        assert torch.allclose(g, want[name], atol=1e-5), name


# ----------------------------------------------------------------------------- masked losses
def test_losses_on_hand_computed_pixels():
    pred = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 1, 2, 2)
    true = torch.tensor([2.0, NAN, 4.0, 4.0]).view(1, 1, 2, 2)
    assert float(MaskedL1()(pred, true)) == pytest.approx((1 + 0 + 4) / 3)
    # scale-invariant log (Eigen et al. 2014): d = log(p / t) over the valid pixels = (-ln2, 0, ln2)
    d = torch.tensor([-math.log(2), 0.0, math.log(2)])
    for lam in (0.0, 0.5, 1.0):
        want = float((d**2).mean() - lam * d.mean() ** 2)
        assert float(ScaleInvariantLog(lam=lam)(pred, true)) == pytest.approx(want, rel=1e-6)
    # a prediction twice the truth everywhere: fully scale-invariant (lam 1) is 0
    assert float(ScaleInvariantLog(lam=1.0)(2 * torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))) == pytest.approx(0, abs=1e-6)
    # cosine: a normal at 90 degrees costs 1, the same one 0, an opposite one 2; an invalid pixel nothing
    n_pred = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, -3], [1, 1, 1]]).T.reshape(1, 3, 2, 2)
    n_true = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 0, 1], [NAN, NAN, NAN]]).T.reshape(1, 3, 2, 2)
    assert float(Cosine()(n_pred, n_true)) == pytest.approx((1 + 0 + 2) / 3)


@pytest.mark.parametrize("loss", [MaskedL1(), Cosine(), ScaleInvariantLog()], ids=["l1", "cosine", "silog"])
def test_invalid_pixels_get_no_gradient_and_no_nan(loss):
    """NaN targets (invalid pixels) give exactly zero gradient to their predictions and never a NaN; an image
    with no valid pixel at all gives a zero loss."""
    c = 3 if isinstance(loss, Cosine) else 1
    torch.manual_seed(0)
    pred = (torch.rand(2, c, 4, 5) + 0.5).requires_grad_()
    true = torch.rand(2, c, 4, 5) + 0.5
    if c == 3:
        true = torch.nn.functional.normalize(true, dim=1)
    invalid = torch.zeros(2, 4, 5, dtype=torch.bool)
    invalid[0, :2] = True
    invalid[1] = True  # the second image has no valid pixel
    true[invalid.unsqueeze(1).expand_as(true)] = NAN
    value = loss(pred, true)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(pred.grad).all()
    assert float(pred.grad.permute(0, 2, 3, 1)[invalid].abs().sum()) == 0
    assert float(pred.grad.permute(0, 2, 3, 1)[~invalid].abs().sum()) > 0
    empty = loss(pred, torch.full_like(true, NAN))
    assert float(empty) == 0 and torch.isfinite(empty)


# ----------------------------------------------------------------------------- metrics
def _depth(pred, true):
    m = DepthErrors("depth", "d", "depth")
    m.update({"d": torch.tensor(pred).view(1, 1, 1, -1)}, {"depth": torch.tensor(true).view(1, 1, 1, -1)})
    return m


def test_depth_metrics_by_hand_and_summed_like_ranks():
    """abs/rel error and delta accuracies over valid pixels only (NaN and 0 depths are invalid)."""
    m = _depth([1.0, 3.0, 2.0, 5.0, 9.0], [1.0, 2.0, 3.8, NAN, 0.0])
    r = m.compute()
    # valid: (1, 1), (3, 2), (2, 3.8): errors 0, 1, 1.8; relative 0, 1/2, 1.8/3.8; ratios 1, 1.5, 1.9
    # against 1.25, 1.5625 and 1.953125
    assert r["depth_abs_err"] == pytest.approx(2.8 / 3) and r["depth_rel_err"] == pytest.approx((0.5 + 1.8 / 3.8) / 3)
    assert (r["depth_delta1"], r["depth_delta2"], r["depth_delta3"]) == pytest.approx((100 / 3, 200 / 3, 100.0))
    # two "ranks" each with part of the split: their summed states give the one-process numbers
    a, b = _depth([1.0, 3.0], [1.0, 2.0]), _depth([2.0], [3.8])
    a.state += b.state
    assert a.compute() == pytest.approx(r)
    assert DepthErrors.lower_keys("depth") == {"depth_abs_err", "depth_rel_err"}


def test_normal_metrics_by_hand_with_the_median_within_half_a_bin():
    angles = np.array([0.0, 10.0, 20.0, 25.0, 40.0, 90.0, 135.0])
    rad = np.deg2rad(angles)
    true = torch.tensor([[0.0, 0.0, 1.0]] * len(angles) + [[NAN] * 3]).T.reshape(1, 3, 1, -1)
    pred = torch.tensor(np.stack([np.sin(rad), np.zeros_like(rad), np.cos(rad)], 1).tolist() + [[1.0, 0, 0]],
                        dtype=torch.float32).T.reshape(1, 3, 1, -1) * 2  # not unit: the metric normalises
    m = NormalErrors("normals", "n", "normals")
    m.update({"n": pred}, {"normals": true})
    r = m.compute()
    assert r["normals_mean"] == pytest.approx(angles.mean(), abs=1e-3)
    assert abs(r["normals_median"] - np.median(angles)) <= ANGLE_BIN / 2 + 1e-6
    assert r["normals_within_11_25"] == pytest.approx(200 / 7)
    assert r["normals_within_22_5"] == pytest.approx(300 / 7) and r["normals_within_30"] == pytest.approx(400 / 7)
    assert NormalErrors.lower_keys("normals") == {"normals_mean", "normals_median"}
    # an even count: numpy's median is the mean of the two middle angles (10 and 50 -> 30)
    two = NormalErrors("n", "n", "t")
    rad = np.deg2rad([10.0, 50.0])
    two.update({"n": torch.tensor([np.sin(rad), [0, 0], np.cos(rad)], dtype=torch.float32).view(1, 3, 1, 2)},
               {"t": torch.tensor([[0.0, 0], [0, 0], [1, 1]]).view(1, 3, 1, 2)})
    assert abs(two.compute()["n_median"] - 30.0) <= ANGLE_BIN / 2 + 1e-6


def test_normal_metrics_agree_with_libmtls_formula_on_random_maps():
    """LibMTL's NormalMetric (examples/nyu/utils.py): acos of the clamped dot product of the normalised
    prediction with the truth, in degrees, over pixels whose truth is non-zero; mean, median, < 11.25/22.5/30."""
    g = torch.Generator().manual_seed(1)
    pred, true = torch.randn(2, 3, 9, 11, generator=g), torch.nn.functional.normalize(torch.randn(2, 3, 9, 11, generator=g), dim=1)
    true[0, :, :3] = 0  # LibMTL's invalid marker: a zero normal (zoo's loaders make it NaN)
    m = NormalErrors("n", "n", "t")
    m.update({"n": pred}, {"t": true.where(true.abs().sum(1, keepdim=True) != 0, torch.tensor(NAN))})
    ours = m.compute()
    p = pred / pred.norm(dim=1, keepdim=True)
    mask = true.sum(1) != 0
    err = np.degrees(torch.acos(torch.clamp((p * true).sum(1)[mask], -1, 1)).double().numpy())
    assert ours["n_mean"] == pytest.approx(err.mean(), abs=1e-4)
    assert abs(ours["n_median"] - np.median(err)) <= ANGLE_BIN
    assert ours["n_within_11_25"] == pytest.approx(100 * (err < 11.25).mean())
    assert ours["n_within_30"] == pytest.approx(100 * (err < 30).mean())


def test_semantic_miou_and_pixel_accuracy_leave_the_ignore_label_out():
    """NYUv2's -1 (and Cityscapes' 255 once mapped to -1) is in no class's counts."""
    m = Confusion("seg", "s", "mask", num_classes=3, prefix="seg_")
    pred = torch.tensor([[0, 1, 2, 2, 0]])
    true = torch.tensor([[0, 1, 1, -1, -1]])
    m.update({"s": pred}, {"mask": true})
    r = m.compute()
    # class 0: TP 1; class 1: TP 1, FN 1; class 2: FP 1 -> IoU 1, 1/2, 0
    assert r["seg_pixel_acc"] == pytest.approx(200 / 3) and r["seg_miou_all"] == pytest.approx(100 * 1.5 / 3)


# ----------------------------------------------------------------------------- delta_m with directions
def test_delta_m_with_mixed_directions_matches_libmtls_count_improvement():
    """LibMTL's count_improvement(base, new, weight) = mean over tasks of the mean over metrics of
    (-1)^w (B - N) / B, where its trainers give w = 1 to higher-is-better metrics (NYUv2: mIoU [1, 1], depth
    errors [0, 0]). Its docstring's numbers: base A = [96, 98], B = [0.2]; new A = [93, 99], B = [0.5]; here
    A's first metric and B are better lower."""
    base = {"a1": 96.0, "a2": 98.0, "b": 0.2}
    new = {"a1": 93.0, "a2": 99.0, "b": 0.5}
    tasks = {"a1": "A", "a2": "A", "b": "B"}
    w = {"a1": 0, "a2": 1, "b": 0}  # LibMTL's weights: 1 = higher is better
    term = {k: (-1) ** w[k] * (base[k] - new[k]) / base[k] for k in base}
    libmtl = (np.mean([term["a1"], term["a2"]]) + term["b"]) / 2
    ours = delta_m(new, base, tasks, lower_is_better={"a1", "b"})
    by_hand = 100 * ((3 / 96 + 1 / 98) / 2 - 0.3 / 0.2) / 2  # a1 fell (better), a2 rose (better), b rose (worse)
    assert ours == pytest.approx(by_hand) and ours == pytest.approx(100 * libmtl)


def test_a_rows_delta_m_negates_the_tasks_lower_is_better_metrics(tmp_path):
    """add_gain reads the directions the task spec collected from its metrics' declarations, and the row says
    which metrics were counted with a minus sign."""
    base = {"encoder": "scratch", "weighting": "fixed", "seed": 0, "budget_mode": "default", "parameters": 10,
            "train_seconds": 1.0}
    rows = [{**base, "task": "seg", "seg_miou": 50.0}, {**base, "task": "dep", "depth_abs_err": 0.5}]
    joint = {**base, "task": "both", "seg_miou": 55.0, "depth_abs_err": 0.6}
    baselines = {"seg_miou": "seg.seg_miou", "depth_abs_err": "dep.depth_abs_err"}
    assert add_gain(joint, baselines, rows, {"depth_abs_err"}) == []
    assert joint["delta_m"] == pytest.approx(100 * (0.1 - 0.2) / 2, abs=1e-3)
    assert joint[NEGATED] == "depth_abs_err"
    plain = dict(joint)
    add_gain(plain, baselines, rows)
    assert plain["delta_m"] == pytest.approx(100 * (0.1 + 0.2) / 2, abs=1e-3) and NEGATED not in plain


def test_a_figures_error_panel_leaves_ignored_labels_black():
    from zoo.use.figures import error_image

    img = error_image(torch.tensor([[3, -1, 2]]), torch.tensor([[3, 5, 5]]))
    assert img[0].tolist() == [[0.25] * 3, [0.0] * 3, [1.0, 0.0, 0.0]]
