"""Multi-class segmentation from one ``.npz`` (Mars-terrain style).

Arrays are named in the settings: ``images`` (N, H, W[, C]) and ``masks`` (N, H, W) of
integer classes, or one ``stacked`` array (N, 2, H, W) holding image and mask. An optional
``test_images``/``test_masks`` pair gives the test split, else a seeded split is made. The
Mars-terrain file as it ships has ``training_set`` (stacked) and an unlabelled ``test_set``:
``test_images`` without ``test_masks`` is such a set; the test split is then a seeded split of
the labelled images, and the unlabelled ones are predicted with ``python -m zoo.predict RUN/best.pt
FILE.npz:test_set``. Each image array is converted to uint8 once, for the whole array
(``zoo.data.arrays.to_uint8``), and the result row says how (``image_scaling``).
Class weights for the loss are computed from the training pixels' class frequencies
(median frequency balancing); ``oversample`` repeats training images that contain one of
the ``rare_classes`` that many extra times; ``exclude`` drops classes (e.g. background 0)
from the mean IoU.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from zoo.data.arrays import ArrayDataset, check_masks, class_weights, npz_array, to_uint8
from zoo.data.folder import check_class_count, check_size
from zoo.data.idx import DataError
from zoo.data.split import limit, split_indices
from zoo.data.config import DataConfig
from zoo.tasks.base import Task, TaskData, sample_info


class NpzTask(Task):
    in_all = False

    def __init__(self, file: str | None = None, images: str = "images", masks: str = "masks", stacked: str | None = None,
                 test_images: str | None = None, test_masks: str | None = None, num_classes: int | str = "auto",
                 size: list[int] | None = None, exclude: list[int] | None = None, oversample: int = 0,
                 rare_classes: list[int] | None = None, test_fraction: float = 0.2) -> None:
        self.file, self.keys = file, {"images": images, "masks": masks, "stacked": stacked,
                                      "test_images": test_images, "test_masks": test_masks}
        self.num_classes, self.size = num_classes, check_size(size)
        self.exclude, self.oversample, self.rare = list(exclude or []), int(oversample), list(rare_classes or [])
        self.test_fraction = test_fraction

    def _arrays(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        try:
            z = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"npz file {path} does not exist") from None
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz (empty, truncated or another format): "
                            f"{str(exc) or type(exc).__name__}") from None

        def get(key: str | None) -> np.ndarray | None:
            if key is None:
                return None
            a = npz_array(z, path, key)
            if a.ndim == 0:
                raise DataError(f"{path}: array {key!r} is a 0-d scalar ({a!r:.40}); it must hold one image or mask "
                                "per row, e.g. (N, H, W)")
            return a

        if self.keys["stacked"]:
            st = get(self.keys["stacked"])
            if st.ndim != 4 or st.shape[1] != 2:
                raise DataError(f"{path}: stacked array {self.keys['stacked']!r} must be (N, 2, H, W), got {st.shape}")
            x, y = st[:, 0], st[:, 1]
        else:
            x, y = get(self.keys["images"]), get(self.keys["masks"])
        tx, ty = get(self.keys["test_images"]), get(self.keys["test_masks"])
        if ty is not None and tx is None:
            raise DataError(f"{path}: test_masks {self.keys['test_masks']!r} given without test_images")
        if len(x) == 0:
            raise DataError(f"{path}: the images array is empty (shape {x.shape})")
        for a, what in ((x, "images"), (tx, "test images")):
            if a is not None and (a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] not in (1, 3))):
                raise DataError(f"{path}: {what} must be (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {a.shape}")
        for a, b, what in ((x, y, "images/masks"), (tx, ty, "test images/masks")):
            if a is None or b is None:
                continue
            if len(a) != len(b):
                raise DataError(f"{path}: {what} counts differ: {len(a)} vs {len(b)}")
            if a.shape[1:3] != b.shape[1:3]:
                raise DataError(f"{path}: {what} sizes differ: {a.shape[1:3]} vs {b.shape[1:3]}")
            if a.ndim not in (3, 4) or b.ndim != 3:
                raise DataError(f"{path}: {what} must be (N, H, W[, C]) and (N, H, W), got {a.shape} and {b.shape}")
        if tx is not None and ty is None and tx.shape[1:3] != x.shape[1:3] and self.size is None:
            raise DataError(f"{path}: test images are {tx.shape[1:3]} but the training images {x.shape[1:3]}; give "
                            "--task-arg 'size=[H, W]'")
        y = check_masks(y, f"{path} masks")
        ty = check_masks(ty, f"{path} test masks") if ty is not None else None
        return x, y, tx, ty

    def check_data(self, data: DataConfig) -> None:
        if not self.file and not data.root:
            raise DataError("the npz task needs --data-root FILE.npz (or a folder holding one .npz)")

    def datasets(self, data: DataConfig) -> TaskData:
        self.check_data(data)
        path = Path(self.file) if self.file else Path(data.root)
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if len(found) != 1:
                raise DataError(f"{path}: expected exactly one .npz file, found {len(found)}")
            path = found[0]
        x, y, tx, ty = self._arrays(path)
        if self.num_classes == "auto":
            n = int(max(y.max(), ty.max() if ty is not None else 0)) + 1
            check_class_count(n, f"{path}: its mask value {n - 1}, with num_classes: auto (the largest value + 1),")
            never = np.setdiff1d(np.arange(n), np.union1d(np.unique(y), np.unique(ty) if ty is not None else []))
            if never.size:
                warnings.warn(f"{path}: num_classes: auto found {n} classes because the masks hold the value {n - 1}, "
                              f"but class(es) {never.tolist()[:20]}{' ...' if never.size > 20 else ''} never occur; "
                              "check the masks or set num_classes", stacklevel=2)
        else:
            n = check_class_count(int(self.num_classes), f"num_classes={self.num_classes}")
        n = max(n, 2)
        for m, what in ((y, "masks"), (ty, "test masks")):
            if m is not None and (m.min() < 0 or m.max() >= n):
                raise DataError(f"{path}: {what} hold values {int(m.min())}..{int(m.max())}, outside 0..{n - 1} "
                                f"(num_classes={n})")
        unlabelled = tx is not None and ty is None
        if unlabelled:  # the Mars layout: scored on a split of the labelled images, predicted with zoo.predict
            unlabelled_count, tx = len(tx), None
        if tx is None:
            train_idx, val_idx, test_idx = split_indices(len(x), data.val_fraction, self.test_fraction, data.seed, "images")
            tx, ty = x, y
        else:
            train_idx, val_idx, _ = split_indices(len(x), data.val_fraction, 0.0, data.seed, "images")
            test_idx = np.arange(len(tx))
        train_idx, test_idx = limit(train_idx, data.train_limit), limit(test_idx, data.test_limit)
        if len(train_idx) == 0:
            raise DataError(f"{path}: no training images left after the validation/test split ({len(x)} images)")
        weights = class_weights(y[train_idx], n)
        extra = 0
        if self.oversample and self.rare:
            has_rare = np.array([np.isin(y[i], self.rare).any() for i in train_idx])
            repeat = train_idx[has_rare]
            extra = len(repeat) * self.oversample
            train_idx = np.concatenate([train_idx] + [repeat] * self.oversample)
        channels = 1 if x.ndim == 3 or x.shape[-1] == 1 else 3
        x, scaling = to_uint8(x[..., 0] if x.ndim == 4 and channels == 1 else x, f"{path} images")
        if tx is not x:  # a test array of its own: its own channel layout, its own scaling
            tch = 1 if tx.ndim == 3 or tx.shape[-1] == 1 else 3
            if tch != channels:
                raise DataError(f"{path}: test images have {tch} channel(s), the training images {channels}")
            tx, test_scaling = to_uint8(tx[..., 0] if tx.ndim == 4 else tx, f"{path} test images")
            scaling = f"{scaling}; test: {test_scaling}"
        else:
            tx = x
        excl = [c for c in self.exclude if c < n]
        return TaskData(
            train={"main": ArrayDataset(x, y, train_idx, self.size)},
            val={"main": ArrayDataset(x, y, val_idx, self.size)},
            test={"main": ArrayDataset(tx, ty, test_idx, self.size)},
            in_channels=channels,
            info={"data_source": str(path), **sample_info(train_idx, val_idx, test_idx), "num_classes": n,
                  "oversampled": extra, "class_weights": " ".join(f"{w:.3g}" for w in weights),
                  "image_scaling": scaling,
                  **({"unlabelled_test_images": unlabelled_count} if unlabelled else {})},
            num_classes=n, class_weights=weights, exclude=excl,
        )
