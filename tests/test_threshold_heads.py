"""The threshold heads: exact histograms, log-probabilities, tile structure, and learning a
per-image threshold in a few steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.heads.grid_segmentation import GridSegmentationHead
from zoo.heads.levels import soft_histogram
from zoo.heads.threshold_mask import ThresholdMaskHead
from zoo.core.metrics import BinaryIoU
from zoo.core.registry import RegistryError


def test_soft_histogram_with_one_bin_per_level_is_the_exact_histogram():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(3, 7, 9))
    hist = soft_histogram(torch.from_numpy(img).float() / 255.0, 256)
    expected = np.stack([np.bincount(i.ravel(), minlength=256) / i.size for i in img])
    np.testing.assert_allclose(hist.numpy(), expected, atol=1e-6)


def test_soft_histogram_splits_between_neighbouring_bins():
    x = torch.tensor([[0.25, 0.25]])  # halfway between the centers 0 and 0.5 of a 3-bin histogram
    assert torch.allclose(soft_histogram(x, 3), torch.tensor([[0.5, 0.5, 0.0]]))


@pytest.mark.parametrize("bins", [2, 5, 64, 256])
def test_soft_histogram_is_the_triangular_kernel(bins):
    """The scatter-add histogram equals the kernel written out bin by bin, values and gradients."""
    x = torch.cat([torch.rand(4, 50), torch.tensor([[0.0, 1.0] * 25] * 4)], 1).requires_grad_()
    centers = torch.linspace(0, 1, bins)
    direct = (1 - (x[..., None] - centers).abs() * (bins - 1)).clamp_min(0).mean(1)
    fast = soft_histogram(x, bins)
    assert torch.allclose(fast, direct, atol=1e-6)
    w = torch.randn(bins)
    g_direct, = torch.autograd.grad((direct * w).sum(), x)
    g_fast, = torch.autograd.grad((fast * w).sum(), x)
    inside = ((x * (bins - 1)) - (x * (bins - 1)).round()).abs() > 1e-3  # the kernel has kinks at the centres
    assert torch.allclose(g_fast[inside], g_direct[inside], atol=1e-5)


def _encoder(input_skip=True):
    return zoo.load_registry().build("encoders", "scratch", in_channels=1, width=8, depth=3, input_skip=input_skip)


@pytest.mark.parametrize("head", ["threshold_mask", "grid_segmentation"])
def test_threshold_heads_need_the_raw_input(head):
    with pytest.raises(RegistryError, match="input_skip: true"):
        zoo.build_model("scratch", {"out": head})
    model = zoo.build_model("scratch", {"out": head}, encoder_settings={"input_skip": True})
    assert model(torch.rand(1, 1, 56, 56))["out"].shape[-2:] == (56, 56)


@pytest.mark.parametrize("kwargs,match", [
    ({"grid": [2]}, "grid must be"), ({"grid": [0, 2]}, "grid must be"), ({"background": 11}, "background"),
    ({"threshold": "regress", "histogram_bins": 1}, "histogram_bins"), ({"dropout": 1.0}, "dropout"),
    ({"threshold": "regress", "initial_threshold": 1.5}, "initial_threshold"), ({"threshold": "otsu"}, "regress, levels"),
])
def test_grid_head_bad_settings(kwargs, match):
    enc = _encoder()
    with pytest.raises(ValueError, match=match):
        GridSegmentationHead(enc.out_channels, enc.reductions, **kwargs)


def test_grid_head_outputs_log_probabilities_with_one_class_per_tile():
    torch.manual_seed(0)
    enc = _encoder()
    head = GridSegmentationHead(enc.out_channels, enc.reductions, num_classes=11, background=10, grid=[2, 2])
    model = zoo.MultiTaskModel(enc, {"seg": head}).eval()
    out = model(torch.rand(2, 1, 56, 56))["seg"]
    assert out.shape == (2, 11, 56, 56)
    assert torch.allclose(out.exp().sum(1), torch.ones(2, 56, 56), atol=1e-5)
    pred = head.predict(out)
    for b in range(2):
        for r in (0, 28):
            for c in (0, 28):
                tile = pred[b, r:r + 28, c:c + 28]
                assert len(set(tile[tile != 10].tolist())) <= 1, "every foreground pixel of a tile has the tile's class"
    for mode in ("regress", "levels"):
        h = GridSegmentationHead(enc.out_channels, enc.reductions, threshold=mode)
        assert torch.allclose(h(enc(torch.rand(1, 1, 56, 56))).exp().sum(1), torch.ones(1, 56, 56), atol=1e-5)
    with pytest.raises(ValueError, match="divide"):
        GridSegmentationHead(enc.out_channels, enc.reductions, grid=[3, 3])(enc(torch.rand(1, 1, 56, 56)))


def test_levels_mode_pixel_logits_follow_the_threshold_distribution(monkeypatch):
    """p(k) puts 0.7 on level 100 and 0.3 on level 150: a pixel at level L is foreground with
    probability P(k < L), so levels <= 100 get P = 0, 101..150 get 0.7, above 150 get 1."""
    enc = _encoder()
    head = ThresholdMaskHead(enc.out_channels, enc.reductions, mode="levels")
    logp = torch.full((1, 256), -1e4)
    logp[0, 100], logp[0, 150] = np.log(0.7), np.log(0.3)
    monkeypatch.setattr(head.threshold, "level_log_probs", lambda pixels, pooled: logp)
    levels = torch.tensor([0, 100, 101, 150, 151, 255]).float()
    x = (levels / 255.0).view(1, 1, 1, 6)
    deep = torch.zeros(1, enc.out_channels[-1], 1, 1)
    probs = torch.sigmoid(head([x, deep]))[0, 0, 0]
    assert torch.allclose(probs, torch.tensor([0.0, 0.0, 0.7, 0.7, 1.0, 1.0]), atol=1e-4)
    assert head.predict(head([x, deep]))[0, 0].tolist() == [0, 0, 1, 1, 1, 1]


def test_threshold_head_bad_mode():
    enc = _encoder()
    with pytest.raises(ValueError, match="regress, levels"):
        ThresholdMaskHead(enc.out_channels, enc.reductions, mode="otsu")


@pytest.mark.parametrize("encoder_features", [True, False])
@pytest.mark.parametrize("mode", ["regress", "levels"])
def test_threshold_head_learns_a_per_image_threshold(mode, encoder_features):
    """Masks are ``x > t`` with a different t per image, which a fixed threshold cannot match (with
    ``encoder_features: false`` from the histogram alone)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    n = 64
    t = torch.rand(n, generator=gen) * 0.4 + 0.3
    x = torch.rand(n, 1, 16, 16, generator=gen) * (t[:, None, None, None] * 2).clamp(max=1.0)
    x = (x * 255).round() / 255  # 8-bit images
    y = (x[:, 0] > t[:, None, None]).long()
    enc = _encoder()
    model = zoo.MultiTaskModel(enc, {"mask": ThresholdMaskHead(enc.out_channels, enc.reductions, mode=mode,
                                                                         histogram_bins=32,
                                                                         encoder_features=encoder_features)})

    def iou() -> float:
        model.eval()
        metric = BinaryIoU("iou", head="mask", target="mask")
        with torch.no_grad():
            metric.update(model.predict(model(x), size=(16, 16)), {"mask": y})
        return metric.compute()["iou"]

    before = iou()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)["mask"][:, 0], y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = iou()
    assert after > before + 5 and after > 90, (before, after)


@pytest.mark.parametrize("mode", ["regress", "levels"])
def test_a_histogram_only_threshold_head_does_not_depend_on_the_encoder(mode):
    """``encoder_features: false``: the output is the same whatever the encoder's weights, no encoder
    parameter gets a gradient from it, and the head declares it (``reads_encoder``)."""
    torch.manual_seed(0)
    enc = _encoder()
    head = ThresholdMaskHead(enc.out_channels, enc.reductions, mode=mode, encoder_features=False)
    model = zoo.MultiTaskModel(enc, {"mask": head})
    x = torch.rand(3, 1, 16, 16)
    before = model(x)["mask"]
    before.square().mean().backward()
    assert not head.reads_encoder and all(p.grad is None for p in enc.parameters())
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p))
    assert torch.equal(model(x)["mask"], before)
    assert ThresholdMaskHead(enc.out_channels, enc.reductions, mode=mode).reads_encoder


@pytest.mark.parametrize("kwargs,match", [
    ({"encoder_features": "no"}, "encoder_features must be true or false"),
    ({"encoder_features": False, "mode": "regress", "histogram_bins": 0}, "give histogram_bins >= 2"),
])
def test_threshold_head_bad_encoder_features(kwargs, match):
    enc = _encoder()
    with pytest.raises(ValueError, match=match):
        ThresholdMaskHead(enc.out_channels, enc.reductions, **kwargs)


def test_level_features_can_express_otsus_criterion():
    """Otsu's between-class variance w0 * w1 * (m1 - m0)^2 is linear in the log features, so the
    ``levels`` score can represent it exactly: its argmax gives OpenCV's Otsu masks."""
    import cv2

    from zoo.heads.levels import LEVEL_FEATURES, level_features

    rng = np.random.default_rng(0)
    imgs = np.concatenate([rng.normal(60, 20, (20, 200)), rng.normal(180, 25, (20, 100))], 1)
    imgs = np.clip(imgs + rng.integers(-30, 30, (20, 1)), 0, 255).astype(np.uint8)
    f = level_features(torch.from_numpy(imgs).float() / 255.0).double()
    idx = {name: i for i, name in enumerate(LEVEL_FEATURES)}
    criterion = f[..., idx["log fraction below"]] + f[..., idx["log fraction above"]] + 2 * f[..., idx["log mean gap"]]
    k = criterion.argmax(1).numpy()
    for img, level in zip(imgs, k):
        _, otsu = cv2.threshold(img.reshape(10, 30), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        np.testing.assert_array_equal(img.reshape(10, 30) > level, otsu.astype(bool))
