"""``scenes``: procedural indoor scenes (``zoo.data.scenes``) with exact semantics, depth and normals,
rendered on the training device: an offline dense-geometry task in NYUv2's shape (795 training scenes,
654 test scenes, LibMTL's augmentation), whose single-task variants are its delta_m baselines."""
from __future__ import annotations

from typing import Any

import torch

from zoo.data.arrays import class_weights
from zoo.data.config import DataConfig, split_counts
from zoo.data.scene_sets import SceneDataset, render_chunked
from zoo.data.scenes import CLASSES, SceneSettings
from zoo.tasks.base import Task, TaskData


class ScenesTask(Task):
    """Scenes of ``scene_seed`` (one fixed set, whatever the run's seed, as a real dataset): ``train_size``,
    ``val_size`` and ``test_size`` per split, every other setting a :class:`SceneSettings` field
    (``size``, ``objects``, ``fov``, ``holes``, ...). ``augment``: LibMTL's NYUv2 scale-crop and flip on
    training batches. ``class_weights``: the segmentation loss weighted by median-frequency balancing of the
    training split's first :attr:`WEIGHT_SCENES` scenes' pixels."""

    in_all = False  # not one of the MNIST reference tasks of --task all
    mirrors = True  # a mirrored room is a room (test-time augmentation may flip; normals' x negated)
    labels_optional = True  # scenes_depth / scenes_normals: the same scenes, their labels unused

    #: scenes whose pixels are counted for ``class_weights`` (the first of the training split): enough to see the
    #: rare ceiling, cheap at any size
    WEIGHT_SCENES = 128

    def __init__(self, train_size: int = 795, val_size: int = 200, test_size: int = 654, scene_seed: int = 0,
                 augment: bool = True, class_weights: bool = False, **scene: Any) -> None:
        unknown = sorted(set(scene) - set(SceneSettings.names()))
        if unknown:
            raise ValueError(f"scenes task: unknown setting(s) {', '.join(map(repr, unknown))}; valid: train_size, "
                             f"val_size, test_size, scene_seed, augment, class_weights, "
                             f"{', '.join(SceneSettings.names())}")
        if not isinstance(class_weights, bool):
            raise ValueError(f"scenes setting class_weights must be true or false, got {class_weights!r}")
        self.class_weights = class_weights
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        for split, n in self.sizes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"scenes setting {split}_size must be an integer >= 1 (scenes in the {split} "
                                 f"split), got {n!r}")
        if isinstance(scene_seed, bool) or not isinstance(scene_seed, int) or scene_seed < 0:
            raise ValueError(f"scenes setting scene_seed must be an integer >= 0, got {scene_seed!r}")
        if not isinstance(augment, bool):
            raise ValueError(f"scenes setting augment must be true or false, got {augment!r}")
        self.settings = SceneSettings(**scene)
        self.scene_seed, self.augment = scene_seed, augment
        self.size = self.settings.size

    def describe_data(self, task, info: dict[str, Any]) -> tuple[str | None, str | None]:
        if not {"train_samples", "val_samples", "test_samples"} <= set(info):
            return None, None
        h, w = self.settings.size
        what = f"{h}x{w}, scene_seed {self.scene_seed}, rendered by zoo.data.scenes"
        return (f"the {info['test_samples']:,} test scenes ({what})",
                f"train: {info['train_samples']:,} scenes + {info['val_samples']:,} validation ({what})")

    def split_sizes(self, data: DataConfig) -> dict[str, int]:
        """Scenes per split; quick runs (limits) cap them as they cap the MNIST tasks' samples."""
        cap = {"train": data.train_limit, "val": data.train_limit, "test": data.test_limit}
        return {k: min(n, cap[k]) if cap[k] else n for k, n in self.sizes.items()}

    def datasets(self, data: DataConfig) -> TaskData:
        sizes = self.split_sizes(data)

        def split(name: str) -> dict[str, SceneDataset]:
            return {"main": SceneDataset(self.settings, name, sizes[name], self.scene_seed,
                                         augment=self.augment and name == "train")}

        h, w = self.settings.size
        info = {"data_source": f"scenes {h}x{w}, rendered (scene_seed {self.scene_seed})",
                **split_counts(sizes, "samples")}
        weights = None
        if self.class_weights:
            # median-frequency balancing (Eigen & Fergus 2015, as the npz task does) from the training split's own
            # pixels: the ceiling is about 1 % of them, and whether an unweighted loss learns it at all is left
            # to the seed
            masks = render_chunked(self.settings, self.scene_seed, "train",
                                   torch.arange(min(sizes["train"], self.WEIGHT_SCENES)))["mask"]
            weights = class_weights(masks.numpy(), len(CLASSES))
            info["class_weights"] = " ".join(f"{w:.3g}" for w in weights)
        return TaskData(train=split("train"), val=split("val"), test=split("test"), info=info, in_channels=3,
                        num_classes=len(CLASSES), class_weights=weights)

