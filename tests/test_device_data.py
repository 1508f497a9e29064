"""The device-resident data path (``zoo.data.batched``, ``zoo.data.device``, ``zoo.engine.loaders``)
against the per-sample definitions it replaces: OpenCV's Otsu, warps and minimum enclosing circle,
the datasets' own samples, and the augmentation settings' distributions."""
from __future__ import annotations

import math
import sys

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from zoo.core.geometry import enclosing_circle, rasterize_circle_np
from zoo.data.augment import Augment
from zoo.data.batched import BatchAugment, blur, otsu_thresholds
from zoo.data.datasets import BACKGROUND, CompositeDataset, DigitDataset
from zoo.data.digits import Digits, otsu
from zoo.data.idx import BUNDLED, load_mnist
from zoo.core import distributed as dist
from zoo.engine.loaders import DeviceLoader

CPU = torch.device("cpu")
WARPS = Augment(shift=2, rotate=12, scale=0.1, elastic=1.5, interpolation="nearest")


@pytest.fixture(scope="module")
def digits() -> Digits:
    """400 real MNIST digits (the copy bundled with zoo), with OpenCV's thresholds, masks, circles."""
    m = load_mnist(BUNDLED)
    return Digits.from_arrays(m.train_images[:400], m.train_labels[:400])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_otsu_masks_equal_opencv(digits):
    """Batched Otsu cuts every image where OpenCV does: same mask, pixel for pixel, on real digits,
    on gamma-curved and warped ones, on noise, on flat and two-level images."""
    rng = np.random.default_rng(0)
    images = [digits.images,
              BatchAugment(Augment(gamma=0.5, **{k: getattr(WARPS, k) for k in ("shift", "rotate", "scale")}))(
                  torch.from_numpy(digits.images), _gen()).numpy(),
              rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
              np.full((3, 28, 28), 7, np.uint8),
              np.where(rng.random((20, 28, 28)) > 0.5, 200, 10).astype(np.uint8)]
    for batch in images:
        thr = otsu_thresholds(torch.from_numpy(batch)).numpy()
        for img, t in zip(batch, thr):
            assert np.array_equal((img > t).astype(np.uint8), otsu(img)[1])


def test_warp_follows_opencv_affine(digits):
    """With the same parameters, the nearest warp is cv2.warpAffine of cv2.getRotationMatrix2D (+ the
    shift): a whole-pixel shift exactly, a rotation/scale but for rounding ties at a few pixels."""
    aug = BatchAugment(Augment(shift=2, rotate=12, scale=0.1, interpolation="nearest"))
    imgs = torch.from_numpy(digits.images[:64])
    p = aug.params(64, _gen(1), CPU)
    shift_only = {**p, "angle": torch.zeros(64), "scale": torch.ones(64)}
    for params, tolerance in ((shift_only, 0), (p, 0.001)):
        out = aug.warp(imgs, params, None).numpy()
        wrong = 0
        for i in range(64):
            m = cv2.getRotationMatrix2D((13.5, 13.5), float(params["angle"][i]), float(params["scale"][i]))
            m[:, 2] += params["shift"][i].numpy()
            ref = cv2.warpAffine(digits.images[i], m, (28, 28), flags=cv2.INTER_NEAREST, borderValue=0)
            wrong += int((out[i] != ref).sum())
        assert wrong <= tolerance * out.size, wrong


def test_blur_equals_opencv_gaussian():
    field = np.random.default_rng(0).uniform(-1, 1, (2, 40, 40)).astype(np.float32)
    ours = blur(torch.from_numpy(field)[None], 4.0)[0].numpy()
    for c in range(2):
        ref = cv2.GaussianBlur(field[c], (0, 0), 4.0)
        assert np.abs(ours[c] - ref).max() < 1e-5


@pytest.mark.parametrize("augment", [WARPS, Augment(shift=2, rotate=12, scale=0.1, elastic=1.5),
                                     Augment(shift=1, rotate=10, gamma=0.4, interpolation="nearest"),
                                     Augment(rotate=10, rethreshold=True)], ids=["nearest", "linear", "gamma",
                                                                                  "rethreshold"])
def test_augmented_labels_follow_the_task_rule(digits, augment):
    """Masks are the digit's own threshold of the augmented image (nearest, linear), or Otsu of it
    (gamma, rethreshold); circles are OpenCV's minimum enclosing circle of that mask."""
    view = DigitDataset(digits, augment).device_view(CPU, {"image", "mask", "circle", "circle_mask"})
    idx = torch.arange(len(digits))
    b = view.batch(idx, _gen(2))
    images = torch.round(b["image"][:, 0] * 255).to(torch.uint8).numpy()
    assert not np.array_equal(images, digits.images)  # it did augment
    for i in range(len(digits)):
        if augment.gamma or augment.rethreshold:
            expected = otsu(images[i])[1]
        else:
            expected = (images[i] > digits.thresholds[i]).astype(np.uint8)
        assert np.array_equal(b["mask"][i].numpy(), expected)
        circle = enclosing_circle(expected)
        assert np.allclose(b["circle"][i].numpy(), circle, atol=1e-6)
        assert np.array_equal(b["circle_mask"][i].numpy(), rasterize_circle_np(circle, 28, 28))
    if augment.interpolation == "nearest" and not augment.gamma:  # copies pixels: no new intensity
        for i in range(len(digits)):
            assert set(np.unique(images[i])) <= set(np.unique(digits.images[i])) | {0}


def test_circles_only_where_asked(digits):
    view = DigitDataset(digits, WARPS).device_view(CPU, {"image", "mask"})
    assert set(view.batch(torch.arange(8), _gen()).keys()) == {"image", "label", "mask"}


def test_parameters_follow_the_settings():
    """Per-sample parameters are uniform on the documented ranges (shift whole pixels in [-s, s],
    rotation in [-r, r] degrees, scale in [1 - s, 1 + s], log gamma in [-g, g])."""
    a = Augment(shift=2, rotate=12, scale=0.1, gamma=0.3)
    p = BatchAugment(a).params(40000, _gen(3), CPU)
    shifts = p["shift"].long()
    assert set(shifts.unique().tolist()) == {-2, -1, 0, 1, 2}
    counts = torch.bincount(shifts.flatten() + 2).float() / shifts.numel()
    assert (counts - 0.2).abs().max() < 0.01
    for key, lo, hi in (("angle", -12, 12), ("scale", 0.9, 1.1), ("log_gamma", -0.3, 0.3)):
        v = p[key]
        assert lo <= float(v.min()) < lo + 0.01 * (hi - lo) and hi - 0.01 * (hi - lo) < float(v.max()) <= hi
        assert abs(float(v.mean()) - (lo + hi) / 2) < 0.01 * (hi - lo)
        assert abs(float(v.std()) - (hi - lo) / math.sqrt(12)) < 0.01 * (hi - lo)


def test_elastic_displacement_has_the_set_amplitude(digits):
    """Elastic only: each image's displacement field peaks at exactly ``elastic`` pixels; a one-pixel
    wide vertical line therefore moves by at most that much."""
    aug = BatchAugment(Augment(elastic=1.5, interpolation="nearest"))
    line = torch.zeros(16, 28, 28, dtype=torch.uint8)
    line[:, 4:24, 14] = 255
    out = aug(line, _gen(4))
    cols = torch.nonzero(out)[:, 2]
    assert int(cols.min()) >= 14 - 2 and int(cols.max()) <= 14 + 2
    assert not torch.equal(out, line)


def test_unaugmented_views_equal_the_datasets(digits):
    """Without augmentation a device batch is the stacked per-sample samples, field for field."""
    for ds in (DigitDataset(digits), CompositeDataset(digits, 50, seed=3),
               CompositeDataset(digits, 50, seed=3, labelling="region")):
        idx = torch.tensor([0, 7, 3, 49])
        got = ds.device_view(CPU).batch(idx, None)
        want = default_collate([ds[int(i)] for i in idx])
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


def test_augmented_composites_have_each_quadrants_labels(digits):
    ds = CompositeDataset(digits, 64, seed=1, augment=WARPS)
    b = ds.device_view(CPU).batch(torch.arange(64), _gen(5))
    assert b["image"].shape == (64, 1, 56, 56) and b["mask"].shape == (64, 56, 56)
    for i in range(64):
        ids = [int(d) for d in b["labels"][i]]
        assert ids == [int(digits.labels[d]) for d in ds.device_view(CPU).ids[i]]
        for q in range(4):
            r, c = (q // 2) * 28, (q % 2) * 28
            tile = b["mask"][i, r:r + 28, c:c + 28]
            img = torch.round(b["image"][i, 0, r:r + 28, c:c + 28] * 255)
            assert set(tile.unique().tolist()) <= {ids[q], BACKGROUND}
            thr = int(digits.thresholds[int(ds.device_view(CPU).ids[i, q])])
            assert torch.equal(tile == ids[q], img > thr)  # the digit's own threshold of its warped tile


def test_device_loader_epochs_and_shards(digits, monkeypatch):
    """Every sample once per epoch; the same seed and epoch give the same batches, another epoch others;
    evaluation is in order; ranks split training equally and evaluation without overlap."""
    view = DigitDataset(digits, WARPS).device_view(CPU, {"image", "mask"})

    def epoch(loader, e):
        loader.set_epoch(e)
        return list(loader)

    a, b = DeviceLoader(view, 64, True, 0, CPU), DeviceLoader(view, 64, True, 0, CPU)
    ea, eb = epoch(a, 1), epoch(b, 1)
    assert len(ea) == len(a) == 400 // 64
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(ea, eb))
    assert not torch.equal(epoch(a, 2)[0]["image"], ea[0]["image"])
    labels = torch.cat([x["label"] for x in DeviceLoader(view, 64, False, 0, CPU)])
    assert torch.equal(labels, torch.from_numpy(digits.labels))
    seen_train, seen_eval = [], []
    for rank in range(3):
        monkeypatch.setattr(dist, "world_size", lambda: 3)
        monkeypatch.setattr(dist, "rank", lambda r=rank: r)
        t, e = DeviceLoader(view, 16, True, 0, CPU), DeviceLoader(view, 16, False, 0, CPU)
        t.set_epoch(1)
        seen_train.append(t.order())
        seen_eval.append(e.order())
    assert all(len(o) == 400 // 3 for o in seen_train)
    assert len(torch.cat(seen_train).unique()) == 3 * (400 // 3)
    assert sorted(torch.cat(seen_eval).tolist()) == list(range(400))


# ----------------------------------------------------------------------------- the step loop
class _Steps:
    """The first ``n`` batches of a loader, as a loader."""

    def __init__(self, loader, n: int) -> None:
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        it = iter(self.loader)
        return (next(it) for _ in range(self.n))


HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def _counting_host_reads(monkeypatch, count: list[int]) -> None:
    """Count host reads of tensors, except torch.optim's reads of its step counters (CPU scalars by
    design when not capturable: no device sync) -- AdamW's, and FAMO's own Adam."""
    for name in HOST_READS:
        orig = getattr(torch.Tensor, name)

        def read(self, *a, _orig=orig, **k):
            if "torch/optim/" not in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                count[0] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)


@pytest.mark.parametrize("task,weighting", [("foreground", "fixed"), ("circlization", "uncertainty"),
                                            ("joint", "gradnorm"), ("joint", "famo")])
def test_step_loop_reads_nothing_back_per_step(tiny_mnist, monkeypatch, task, weighting):
    """Host reads of tensors (item, tolist, float(), bool(), ...) in an epoch do not grow with its
    steps: the loop reads its sums and its non-finite flag once, at the end."""
    from zoo.engine.build_run import setup
    from zoo.engine.config import RunConfig
    from zoo.engine.train import Trainer, train_one_epoch

    cfg = RunConfig(task=task, encoder="scratch", weighting=weighting, epochs=1, batch_size=8, lr=1e-3,
                    data_root=str(tiny_mnist), encoder_settings={"width": 4, "input_skip": True})
    t = Trainer(cfg, setup(cfg), None)
    s = t.s
    counts = {}
    for steps in (2, 5):
        n = [0]
        with monkeypatch.context() as m:
            _counting_host_reads(m, n)
            losses, _ = train_one_epoch(s.model, s.plans, s.weighting, t.optimizer,
                                        {k: _Steps(v, steps) for k, v in t.train_loaders.items()}, s.device, cfg,
                                        scheduler=t.scheduler, scaler=t.scaler)
        counts[steps] = n[0]
        assert all(math.isfinite(v) for v in losses.values())
    assert counts[2] == counts[5] <= 3, counts


def test_a_non_finite_loss_names_its_step(tiny_mnist, monkeypatch):
    """A loss that turns NaN at step 3 stops the epoch with a one-line error naming step 3."""
    import zoo.engine.train as train_mod
    from zoo.engine.build_run import setup
    from zoo.engine.config import RunConfig

    cfg = RunConfig(task="foreground", encoder="scratch", epochs=1, batch_size=8, data_root=str(tiny_mnist),
                    encoder_settings={"width": 4, "input_skip": True})
    s = setup(cfg)
    optimizer = train_mod.build_optimizer(s.model, s.weighting, cfg, s.device)
    real, calls = train_mod.step_losses, [0]

    def poisoned(*a, **k):
        calls[0] += 1
        out = real(*a, **k)
        return {n: l * float("nan") for n, l in out.items()} if calls[0] == 3 else out

    monkeypatch.setattr(train_mod, "step_losses", poisoned)
    with pytest.raises(FloatingPointError, match=r"NaN or inf at step 3 of epoch 7; try a lower --lr"):
        train_mod.train_one_epoch(s.model, s.plans, s.weighting, optimizer,
                                  {k: _Steps(v, 6) for k, v in s.loaders("train").items()}, s.device, cfg, epoch=7)
