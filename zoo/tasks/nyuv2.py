"""NYUv2 (``--data-root`` holding MTAN's preprocessed ``train/`` and ``val/``, ``zoo.data.nyuv2``): 13-class
semantics, depth and surface normals, as MTAN, LibMTL, Auto-Lambda and Nash-MTL train and score them.

The test split is ``val/`` (654 scenes), as in those papers; the validation split that picks the best
checkpoint is a seeded slice of ``train/`` (``--val-fraction``, default 10%), and the row says so
(``validation``). Training scenes get LibMTL's augmentation (random scale-crop, depth divided by the scale;
left-right flip, normals' x negated); ``augment: false`` turns it off, as MTAN's paper trained.
"""
from __future__ import annotations

import sys
from pathlib import Path

from zoo.data.config import DataConfig
from zoo.data.idx import DataError
from zoo.data.nyuv2 import LAYOUT, NORM_TOLERANCE, NUM_CLASSES, SIZE, WHERE, DenseScenes, scan
from zoo.data.split import limit, split_indices
from zoo.tasks.base import Task, TaskData, sample_info


class NYUv2Task(Task):
    needs_root = (f"the nyuv2 task needs --data-root DIR holding train/ and val/, each with image/, label/, "
                  f"depth/ and normal/ of N.npy: {WHERE}")
    in_all = False
    labels_optional = True  # the depth and normals variants leave the labels unused
    mirrors = True  # indoor scenes: test-time augmentation may average the mirrored image too

    def __init__(self, augment: bool = True, size: list[int] | None = None, normalise_normals: bool = False) -> None:
        if not isinstance(augment, bool) or not isinstance(normalise_normals, bool):
            raise ValueError(f"nyuv2 task: augment and normalise_normals are true or false, got {augment!r}, "
                             f"{normalise_normals!r}")
        size = list(size) if size is not None else list(SIZE)
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 8 for v in size):
            raise ValueError(f"nyuv2 task: size is [H, W], two integers >= 8 (the files' size; {list(SIZE)} as "
                             f"shipped), got {size!r}")
        self.augment, self.normalise = augment, normalise_normals
        self.size = tuple(size)  # the files' size, and what zoo.predict resizes a user's image to

    def datasets(self, data: DataConfig) -> TaskData:
        self.check_data(data)
        root = Path(data.root)
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DataError(f"{root / split}: no such folder; the nyuv2 task reads {LAYOUT} (from {WHERE})")
        train_scenes, train_stats = scan(root / "train", self.size, self.normalise)
        test_scenes, test_stats = scan(root / "val", self.size, self.normalise)
        train_idx, val_idx, _ = split_indices(len(train_scenes), data.val_fraction, 0.0, data.seed, "train/ scenes")
        train_idx, test_idx = limit(train_idx, data.train_limit), limit(list(range(len(test_scenes))), data.test_limit)
        train = [train_scenes[i] for i in train_idx]
        val = [train_scenes[i] for i in val_idx]
        test = [test_scenes[i] for i in test_idx]

        def share(pick) -> str:
            return f"train/ {pick(train_stats)} %, val/ {pick(test_stats)} %"

        info = {"data_source": str(root), **sample_info(train, val, test), "num_classes": NUM_CLASSES,
                "validation": (f"a seeded {data.val_fraction:.0%} slice of train/ (seed {data.seed}, {len(val)} "
                               f"scenes); test = val/ ({len(test)} scenes)"),
                "invalid_pixels": (f"depth {share(lambda s: s.pct(s.depth_invalid))} "
                                   f"(NaN/inf: {train_stats.depth_non_finite + test_stats.depth_non_finite} px); "
                                   f"normals {share(lambda s: s.pct(s.normals_invalid))}; "
                                   f"labels -1 {share(lambda s: s.pct(s.ignored))}")}
        if self.normalise:
            lo = min(train_stats.norms[0], test_stats.norms[0])
            hi = max(train_stats.norms[1], test_stats.norms[1])
            if max(1 - lo, hi - 1) > NORM_TOLERANCE:
                info["input_conversion"] = f"normals divided by their length (norms were {lo:.4g} .. {hi:.4g})"
                print(f"nyuv2: {info['input_conversion']}", file=sys.stderr)
        return TaskData(train={"main": DenseScenes(train, self.augment, data.seed)},
                        val={"main": DenseScenes(val)}, test={"main": DenseScenes(test)},
                        info=info, in_channels=3, num_classes=NUM_CLASSES, exclude=[])

