"""NYUv2 as MTAN, LibMTL, Auto-Lambda and Nash-MTL ship it (MTAN's preprocessed copy).

Layout (``ROOT`` is ``--data-root``), one scene ``N`` per index, ``0 .. n-1`` with none missing::

    ROOT/train/ (795 scenes)  ROOT/val/ (654 scenes)
        image/N.npy   288 x 384 x 3 float   RGB in [0, 1]
        label/N.npy   288 x 384 float/int   13 classes 0..12, -1 = ignore
        depth/N.npy   288 x 384 x 1 float   metres, 0 = missing   (288 x 384 also read)
        normal/N.npy  288 x 384 x 3 float   unit normals (x right, y down, z forward), (0, 0, 0) = missing

(LibMTL's ``examples/nyu/create_dataset.py`` reads exactly these, moving the last axis first.) As batch
fields: ``image`` [3, H, W], ``mask`` int64 [H, W] (-1 ignore), ``depth`` [1, H, W] and ``normals``
[3, H, W] float32 with NaN where invalid: a depth of 0 or NaN/inf (counted), a zero or non-finite normal.

Every file is checked before training (its header first: shape and dtype, so a file claiming a huge array
allocates nothing): a wrong shape or dtype, a missing or extra index, NaN/inf in an image, a negative depth,
a label that is neither a class nor -1, and normals off unit length (refused with the measured range of
norms unless ``normalise_normals``) are one line naming the file. A split without one valid depth pixel is
refused too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.dense_augment import scale_crop_flip
from zoo.data.idx import DataError

FOLDERS = ("image", "label", "depth", "normal")
NUM_CLASSES = 13
IGNORE = -1
SIZE = (288, 384)
#: how far a normal's length may be from 1 before the files are refused (float16/32 rounding is far below)
NORM_TOLERANCE = 0.01
WHERE = ("MTAN's preprocessed NYUv2 (https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa, linked "
         "from LibMTL's examples/nyu/README.md)")
LAYOUT = ("ROOT/train/ and ROOT/val/, each with image/N.npy (HxWx3 float), label/N.npy (HxW, 13 classes, -1 ignore), "
          "depth/N.npy (HxWx1 float, 0 missing) and normal/N.npy (HxWx3 unit normals), N = 0, 1, ...")
_INDEX = re.compile(r"^(0|[1-9][0-9]*)\.npy$")


@dataclass
class SplitStats:
    """What a split's files hold, counted once before training."""

    pixels: int = 0
    depth_invalid: int = 0
    depth_non_finite: int = 0
    normals_invalid: int = 0
    ignored: int = 0
    norms: list[float] = field(default_factory=lambda: [np.inf, -np.inf])  # over valid normals

    def pct(self, n: int) -> float:
        return round(100.0 * n / self.pixels, 3) if self.pixels else 0.0


def scene_indices(split: Path, folders: tuple[str, ...] = FOLDERS, layout: str = LAYOUT) -> int:
    """The number of scenes in ``split`` (``train`` or ``val``): every folder holds ``0.npy .. (n-1).npy`` and
    nothing else that ends in ``.npy``; a gap, an extra index or a stray name is one line naming the file."""
    found: dict[str, set[int]] = {}
    for name in folders:
        folder = split / name
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder; the task reads {layout}")
        idx = set()
        for p in folder.iterdir():
            if p.suffix != ".npy":
                continue
            m = _INDEX.match(p.name)
            if not m:
                raise DataError(f"{p}: not a scene index; files are N.npy with N = 0, 1, 2, ...")
            idx.add(int(m.group(1)))
        found[name] = idx
    n = len(found["image"])
    if not n:
        raise DataError(f"{split / 'image'}: no N.npy files; the task reads {layout}")
    want = set(range(n))
    for name in folders:
        missing, extra = sorted(want - found[name]), sorted(found[name] - want)
        if missing:
            raise DataError(f"{split / name / f'{missing[0]}.npy'}: missing ({split.name}/image holds {n} scenes, so "
                            f"every folder needs 0.npy .. {n - 1}.npy; {len(missing)} missing in {name}/)")
        if extra:
            raise DataError(f"{split / name / f'{extra[0]}.npy'}: an extra index ({split.name}/ has scenes 0 .. "
                            f"{n - 1} in {'image/' if name != 'image' else 'every other folder'}; "
                            f"{len(extra)} extra in {name}/)")
    return n


def load_npy(path: Path, shapes: tuple[tuple[int, ...], ...], kinds: str, what: str) -> np.ndarray:
    """A ``.npy`` whose header is checked (shape one of ``shapes``, dtype kind in ``kinds``) before its data
    is read; never unpickled."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:  # a pickle, a truncated file, not .npy at all
        raise DataError(f"{path}: not a readable .npy array ({str(exc) or type(exc).__name__})") from None
    if a.shape not in shapes or a.dtype.kind not in kinds:
        want = " or ".join("x".join(map(str, s)) for s in shapes)
        kind = {"f": "float", "fiu": "float or integer"}.get(kinds, kinds)
        raise DataError(f"{path}: {what} is {'x'.join(map(str, a.shape))} {a.dtype}; expected {want} {kind}")
    return np.array(a)


def read_image(path: Path, h: int, w: int) -> np.ndarray:
    """An ``HxWx3`` float image file; NaN or inf in it is an error (only depth has a missing-value marker)."""
    image = load_npy(path, ((h, w, 3),), "f", "the image")
    if not np.isfinite(image).all():
        raise DataError(f"{path}: the image holds {int((~np.isfinite(image)).sum())} NaN/inf values; images must be "
                        "finite")
    return image


def check_labels(label: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
    """Whole-number labels ``0 .. num_classes - 1`` or :data:`IGNORE`, as int64; anything else is one line."""
    if label.dtype.kind == "f" and not (np.isfinite(label).all() and (label == np.round(label)).all()):
        raise DataError(f"{path}: labels must be whole numbers (classes 0..{num_classes - 1}, {IGNORE} ignore); it "
                        "holds NaN/inf or fractions")
    label = label.astype(np.int64)
    bad = (label != IGNORE) & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise DataError(f"{path}: label {int(label[bad][0])} is neither one of the {num_classes} classes "
                        f"0..{num_classes - 1} nor the ignore value {IGNORE} ({int(bad.sum())} pixels)")
    return label


def missing_depth(depth: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(depth float32 with NaN where missing, missing, finite)``: 0 and NaN/inf are missing; a negative
    depth is one line."""
    depth = depth.astype(np.float32)
    finite = np.isfinite(depth)
    if (depth[finite] < 0).any():
        raise DataError(f"{path}: negative depth {float(depth[finite].min()):.4g}; depths are >= 0 (0 marks a "
                        "missing one)")
    invalid = ~finite | (depth == 0)
    depth[invalid] = np.nan
    return depth, invalid, finite


class Scene:
    """One scene's four files, read and converted to batch fields (NaN where invalid)."""

    def __init__(self, split: Path, index: int, size: tuple[int, int], normalise: bool) -> None:
        self.split, self.index, self.size, self.normalise = split, index, tuple(size), normalise

    def path(self, folder: str) -> Path:
        return self.split / folder / f"{self.index}.npy"

    def read(self, stats: SplitStats | None = None) -> dict[str, np.ndarray]:
        h, w = self.size
        image = read_image(self.path("image"), h, w)
        label = check_labels(load_npy(self.path("label"), ((h, w),), "fiu", "the label map"), self.path("label"),
                             NUM_CLASSES)
        depth = load_npy(self.path("depth"), ((h, w, 1), (h, w)), "f", "the depth map").reshape(h, w)
        depth, invalid, finite = missing_depth(depth, self.path("depth"))
        normal = load_npy(self.path("normal"), ((h, w, 3),), "f", "the normal map").astype(np.float32)
        norm = np.linalg.norm(normal, axis=-1)
        n_invalid = ~np.isfinite(norm) | (norm == 0)
        valid_norms = norm[~n_invalid]
        if valid_norms.size:
            lo, hi = float(valid_norms.min()), float(valid_norms.max())
            if max(1 - lo, hi - 1) > NORM_TOLERANCE:
                if not self.normalise:
                    raise DataError(f"{self.path('normal')}: normals are not unit length (norms {lo:.4g} .. {hi:.4g}); "
                                    "give unit normals, or --task-arg normalise_normals=true to divide them by "
                                    "their length (the row then says so)")
            normal[~n_invalid] /= valid_norms[:, None]
        else:
            lo, hi = np.inf, -np.inf
        normal[n_invalid] = np.nan
        if stats is not None:
            stats.pixels += h * w
            stats.depth_invalid += int(invalid.sum())
            stats.depth_non_finite += int((~finite).sum())
            stats.normals_invalid += int(n_invalid.sum())
            stats.ignored += int((label == IGNORE).sum())
            stats.norms = [min(stats.norms[0], lo), max(stats.norms[1], hi)]
        return {"image": image, "mask": label, "depth": depth, "normals": normal}


def scan(split: Path, size: tuple[int, int], normalise: bool) -> tuple[list[Scene], SplitStats]:
    """Every scene of a split, each file checked once; a split without one valid depth pixel is refused."""
    scenes = [Scene(split, i, size, normalise) for i in range(scene_indices(split, layout=f"{LAYOUT}, as in {WHERE}"))]
    stats = SplitStats()
    for s in scenes:
        s.read(stats)
    if stats.depth_invalid == stats.pixels:
        raise DataError(f"{split / 'depth'}: no valid depth pixel in the whole split ({len(scenes)} scenes; 0 and "
                        "NaN/inf mark missing depth)")
    return scenes, stats


class DenseScenes(Dataset):
    """Scenes (anything whose ``read()`` gives ``image`` HxWx3, ``mask``, ``depth`` HxW and optionally
    ``normals`` HxWx3) as batch fields; with ``augment``, LibMTL's random scale-crop and flip
    (``zoo.data.dense_augment``), drawn per (seed, epoch, index) so workers and resumed runs agree."""

    def __init__(self, scenes: list[Scene], augment: bool = False, seed: int = 0) -> None:
        self.scenes, self.augment, self.seed, self.epoch = list(scenes), augment, int(seed), 0
        self.epoch_invariant = not augment  # an evaluation split may be kept on the device (zoo.data.device)

    def __len__(self) -> int:
        return len(self.scenes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a = self.scenes[i].read()
        sample = {"image": torch.from_numpy(np.ascontiguousarray(a["image"].transpose(2, 0, 1), dtype=np.float32)),
                  "mask": torch.from_numpy(a["mask"]), "depth": torch.from_numpy(a["depth"])[None]}
        if "normals" in a:
            sample["normals"] = torch.from_numpy(np.ascontiguousarray(a["normals"].transpose(2, 0, 1)))
        if not self.augment:
            return sample
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + int(i))
        out = scale_crop_flip({k: v[None] for k, v in sample.items()}, gen)
        return {k: v[0] for k, v in out.items()}
