"""Metrics against hand-computed cases and against segmentation-models-pytorch's implementation."""
from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch

from zoo.core.metrics import Accuracy, BinaryIoU, Confusion, GatedIoU


def test_accuracy_hand():
    m = Accuracy("acc", head="c", target="y")
    m.update({"c": torch.tensor([1, 2, 3])}, {"y": torch.tensor([1, 0, 3])})
    m.update({"c": torch.tensor([4])}, {"y": torch.tensor([4])})
    assert m.compute()["acc"] == pytest.approx(75.0)


def test_binary_iou_is_over_all_pixels_not_per_image_mean():
    m = BinaryIoU("iou", head="m", target="t")
    # image 1: pred 2 px, true 2 px, overlap 1 -> inter 1, union 3
    p1 = torch.tensor([[1, 1, 0, 0]])
    t1 = torch.tensor([[0, 1, 1, 0]])
    # image 2: pred 1 px == true 1 px -> inter 1, union 1
    p2 = torch.tensor([[0, 0, 0, 1]])
    t2 = torch.tensor([[0, 0, 0, 1]])
    m.update({"m": p1}, {"t": t1})
    m.update({"m": p2}, {"t": t2})
    out = m.compute()
    assert out["iou"] == pytest.approx(100 * 2 / 4)  # (1 + 1) / (3 + 1), not mean(1/3, 1)
    assert out["iou_dice"] == pytest.approx(100 * 2 * 2 / (3 + 3))


def test_confusion_dice_hand():
    # 3 classes, background = 2
    t = torch.tensor([[0, 0, 1, 1, 2, 2]])
    p = torch.tensor([[0, 1, 1, 1, 2, 0]])
    m = Confusion("d", head="s", target="t", num_classes=3, exclude=[2])
    m.update({"s": p}, {"t": t})
    out = m.compute()
    # class 0: TP1 FP1 FN1 -> dice 2/4; class 1: TP2 FP1 FN0 -> 4/5; class 2: TP1 FP0 FN1 -> 2/3
    assert out["dice"] == pytest.approx(100 * (0.5 + 0.8) / 2)
    assert out["dice_all"] == pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)
    # IoU: 1/3, 2/3, 1/2
    assert out["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3) / 2)
    assert out["miou_all"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert out["pixel_acc"] == pytest.approx(100 * 4 / 6)


def test_confusion_absent_class_left_out():
    m = Confusion("d", head="s", target="t", num_classes=4, exclude=[3])
    m.update({"s": torch.tensor([0, 0, 1])}, {"t": torch.tensor([0, 0, 1])})
    assert m.compute()["dice"] == pytest.approx(100.0)  # class 2 never appears: not counted as 0
    with pytest.raises(ValueError, match="outside"):
        Confusion("d", head="s", target="t", num_classes=3, exclude=[5])


def test_confusion_matches_smp_micro_per_class():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 5, (4, 16, 16), generator=g)
    p = torch.where(torch.rand(4, 16, 16, generator=g) < 0.7, t, torch.randint(0, 5, (4, 16, 16), generator=g))
    ours = Confusion("d", head="s", target="t", num_classes=5, per_class=True)
    ours.update({"s": p[:2]}, {"t": t[:2]})
    ours.update({"s": p[2:]}, {"t": t[2:]})
    out = ours.compute()
    tp, fp, fn, tn = smp.metrics.get_stats(p, t, mode="multiclass", num_classes=5)
    # smp's per-class statistics summed over images = our confusion over the whole split
    iou_smp = smp.metrics.iou_score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), reduction="none")
    f1_smp = smp.metrics.f1_score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), reduction="none")
    for c in range(5):
        assert out[f"iou_{c}"] == pytest.approx(100 * float(iou_smp[c]), abs=1e-4)
    assert out["dice_all"] == pytest.approx(100 * float(f1_smp.mean()), abs=1e-4)
    assert out["miou_all"] == pytest.approx(100 * float(iou_smp.mean()), abs=1e-4)


def test_binary_iou_matches_smp_micro():
    g = torch.Generator().manual_seed(1)
    t = (torch.rand(3, 1, 10, 10, generator=g) > 0.5).long()
    p = (torch.rand(3, 1, 10, 10, generator=g) > 0.4).long()
    m = BinaryIoU("iou", head="m", target="t")
    m.update({"m": p[:, 0]}, {"t": t[:, 0]})
    tp, fp, fn, tn = smp.metrics.get_stats(p, t, mode="binary")
    assert m.compute()["iou"] == pytest.approx(100 * float(smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro")))


def test_gated_iou_hand():
    m = GatedIoU("g", head="circle", target="cm", gate="digit", gate_target="y")
    pred_c = torch.zeros(3, 2, 2, dtype=torch.bool)
    true_c = torch.zeros(3, 2, 2, dtype=torch.bool)
    pred_c[0, 0, :] = True               # sample 0: pred 2 px, true 1 px overlapping -> IoU 1/2, class right
    true_c[0, 0, 0] = True
    pred_c[1] = True                     # sample 1: perfect circle but wrong class -> 0
    true_c[1] = True
    pred_c[2, 1, 1] = True               # sample 2: perfect, right class -> 1
    true_c[2, 1, 1] = True
    m.update({"circle": pred_c, "digit": torch.tensor([3, 1, 7])}, {"cm": true_c, "y": torch.tensor([3, 2, 7])})
    assert m.compute()["g"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)


def test_state_sums_like_distributed_reduction():
    """Two shards' states summed give the single-pass numbers (what the distributed all-reduce does)."""
    t = torch.randint(0, 3, (6, 8, 8), generator=torch.Generator().manual_seed(2))
    p = torch.randint(0, 3, (6, 8, 8), generator=torch.Generator().manual_seed(3))
    whole, a, b = (Confusion("d", head="s", target="t", num_classes=3) for _ in range(3))
    whole.update({"s": p}, {"t": t})
    a.update({"s": p[::2]}, {"t": t[::2]})
    b.update({"s": p[1::2]}, {"t": t[1::2]})
    a.state += b.state
    assert a.compute() == whole.compute()
    assert not math.isnan(whole.compute()["dice"])
