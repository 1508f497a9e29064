"""``python -m zoo.predict MODEL IMAGE_OR_FOLDER... --out DIR``: run a model on your own images.

MODEL is a shipped model (``circlization/scratch``, see ``zoo.list_pretrained()``), a zoo model
file / training checkpoint, a model folder (``zoo.save_pretrained``) or ``hf-hub:ORG/NAME``. Each image (any size, grayscale, RGB or RGBA) is brought to the model's
input the way its task defines (``zoo.data.inputs``); predictions are mapped back onto the image.
Writes ``<name>_overlay.png`` per image (masks, circles and classes drawn on it), a
``<name>_<head>.png`` mask per dense head, and ``predictions.csv`` + ``predictions.json``. A head of
per-pixel values (depth, normals) writes its values as ``<name>_<head>.npy`` (float32 ``[C, H, W]``, the
image's size) and a picture ``<name>_<head>.png`` (depth colour-mapped from the record's ``<head>_min`` to
``<head>_max``; normals as RGB = (n + 1) / 2).
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from zoo.engine.step import predictions, run_heads
from zoo.core.files import atomic_write_bytes, atomic_write_text, check_writable
from zoo.data.folder import IMAGE_EXT
from zoo.data.idx import DataError
from zoo.data.inputs import prepare, read_any
from zoo.core.model import MultiTaskModel
from zoo.heads.base import Description
from zoo.engine.record import ModelRecord, model_summary
from zoo.use.load import load_model
from zoo.core.cli import run_main


MIN_SIDE = 8  # pixels: the smallest image side predict reads


@dataclass(frozen=True)
class ArrayImage:
    """Image ``index`` of array ``key`` in an ``.npz`` file (``FILE.npz:KEY`` on the command line)."""

    file: Path
    key: str
    index: int

    @property
    def stem(self) -> str:
        return f"{self.file.stem}_{self.key}_{self.index:05d}"

    def __str__(self) -> str:
        return f"{self.file}:{self.key}[{self.index}]"


def find_images(inputs: Iterable[str | Path]) -> list[Path | ArrayImage]:
    """Files as given; folders expanded to their images (sorted); ``FILE.npz:KEY`` to every image of
    that array (e.g. the Mars file's unlabelled ``test_set``). A path that is none of these is an error."""
    found: list[Path | ArrayImage] = []
    for raw in inputs:
        name, sep, key = str(raw).rpartition(":")
        if sep and name.endswith(".npz") and key:
            found += [ArrayImage(Path(name), key, i) for i in range(len(_npz_images(Path(name), key)))]
            continue
        item = Path(raw)
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_EXT)
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, inputs))} ({', '.join(IMAGE_EXT)}, or FILE.npz:KEY)")
    return found


@functools.lru_cache(maxsize=4)
def _npz_images(file: Path, key: str) -> np.ndarray:
    """Array ``key`` of ``file`` as uint8 images ``[N, H, W]`` or ``[N, H, W, 3]``, scaled once for the
    whole array as the npz task scales it (``zoo.data.arrays.to_uint8``)."""
    from zoo.data.arrays import npz_array, to_uint8

    try:
        with np.load(file, allow_pickle=False) as z:
            a = npz_array(z, file, key)
    except FileNotFoundError:
        raise DataError(f"{file}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{file}: not a readable .npz: {str(exc) or type(exc).__name__}") from None
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3) or not len(a):
        raise DataError(f"{file}: array {key!r} must hold images (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {a.shape}")
    return to_uint8(a, f"{file}:{key}")[0]


def read_input(item: Path | ArrayImage) -> np.ndarray:
    """One input image as uint8, from a file or an array."""
    if isinstance(item, ArrayImage):
        return np.ascontiguousarray(_npz_images(item.file, item.key)[item.index])
    return read_any(item)


@torch.no_grad()
def predict_image(model: MultiTaskModel, image: np.ndarray
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Description]]:
    """One image's predictions: the record (per head a class and its probability, or a circle
    (cx, cy, r) in the original image's pixels), each head's mask at the original size, and what
    each head said (``Head.describe``), for the overlay."""
    mode, size = model.record.input_spec
    x, frame = prepare(image, mode, model.record.in_channels, size)
    t = torch.from_numpy(x.astype(np.float32) / 255.0)
    t = (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]
    out = run_heads(model, t, list(model.heads))
    bad = [name for name, v in out.items() if not bool(torch.isfinite(v).all())]
    if bad:  # a NaN probability or circle would be written as if it were an answer
        raise ValueError(f"the model's output for head(s) {', '.join(bad)} is NaN or inf (are its weights damaged? "
                         "check the model file); nothing was predicted")
    preds = predictions(model, out, t)
    record: dict[str, Any] = {}
    masks: dict[str, np.ndarray] = {}
    said = {name: head.describe(out[name].float(), preds[name], frame.to_original)  # each head says what it reports
            for name, head in model.heads.items()}
    for name, d in said.items():
        record.update({f"{name}_{k}": v for k, v in d.values.items()})
        if d.mask is not None:
            masks[name] = frame.mask_to_original(d.mask.cpu().numpy())
        if d.dense is not None:  # per-pixel values: onto the user's image, drawn as the head draws them
            d.dense = torch.from_numpy(frame.values_to_original(d.dense.float().cpu().numpy()))
    return record, masks, said


def overlay(image: np.ndarray, said: dict[str, Description], masks: dict[str, np.ndarray]) -> np.ndarray:
    """The image in RGB with masks tinted, circles drawn and classes written on it."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    rng = np.random.default_rng(0)
    for mask in masks.values():
        for c in np.unique(mask):
            if c == 0:
                continue
            colour = rng.integers(64, 256, 3)
            rgb[mask == c] = (0.5 * rgb[mask == c] + 0.5 * colour).astype(np.uint8)
    scale = max(1, round(max(rgb.shape[:2]) / 200))
    for d in said.values():
        if d.circle is not None:
            cx, cy, r = d.circle
            cv2.circle(rgb, (round(cx), round(cy)), max(1, round(r)), (255, 0, 0), scale)
    text = " ".join([f"{name}: {d.label[0]} ({d.label[1]:.2f})" for name, d in said.items() if d.label is not None]
                    + [f"{name}: {d.text}" for name, d in said.items() if d.text])
    if text:
        cv2.putText(rgb, text, (2, 10 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.3 * scale, (0, 255, 0), max(1, scale // 2))
    return rgb


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
        raise ValueError("cannot encode PNG")
    return buf.tobytes()


def predict(model: MultiTaskModel | str | Path, inputs: Iterable[str | Path], out: str | Path | None = None,
            progress: bool = False, registry_files: Iterable[str | Path] | None = None) -> list[dict[str, Any]]:
    """Predict every image of ``inputs`` (files or folders). With ``out``, write overlays, masks,
    ``predictions.csv`` and ``predictions.json`` there. Returns one record per image. A model of a task
    from a user's registry needs ``registry_files`` (a model never names its own: ``zoo.load_model``)."""
    model = load_model(model, registry_files) if not isinstance(model, MultiTaskModel) else model
    if out is not None:
        check_writable(out)  # a file, or a folder that cannot be written: before any image is read
    files = find_images(inputs)
    for f in files:  # every file is checked before any is predicted
        h, w = read_input(f).shape[:2]
        if min(h, w) < MIN_SIDE:  # a circle or mask from a few pixels would be a number with no meaning
            raise DataError(f"{f}: the image is {w}x{h} pixels; zoo predicts on images of at least "
                            f"{MIN_SIDE}x{MIN_SIDE}")
    out = Path(out) if out is not None else None
    records = []
    for i, path in enumerate(track(files, description="predict", console=Console(stderr=True)) if progress else files):
        image = read_input(path)
        record, masks, said = predict_image(model, image)
        stem = f"{i:04d}_{path.stem}"
        record = {"file": str(path), **record}
        if out is not None:
            for name, mask in masks.items():
                atomic_write_bytes(out / f"{stem}_{name}.png", _png(mask.astype(np.uint8)))
                record[f"{name}_png"] = f"{stem}_{name}.png"
            for name, d in said.items():
                if d.dense is not None:
                    buf = io.BytesIO()
                    np.save(buf, d.dense.numpy().astype(np.float32), allow_pickle=False)
                    atomic_write_bytes(out / f"{stem}_{name}.npy", buf.getvalue())
                    atomic_write_bytes(out / f"{stem}_{name}.png", _png(model.heads[name].picture(
                        d.dense, record.get(f"{name}_min"), record.get(f"{name}_max"))))
                    record[f"{name}_npy"], record[f"{name}_png"] = f"{stem}_{name}.npy", f"{stem}_{name}.png"
            atomic_write_bytes(out / f"{stem}_overlay.png", _png(overlay(image, said, masks)))
            record["overlay"] = f"{stem}_overlay.png"
        records.append(record)
    if out is not None:
        write_predictions(out, records, model.record)
    return records


def write_predictions(out: Path, records: list[dict[str, Any]], record: ModelRecord) -> None:
    cols = list(dict.fromkeys(k for r in records for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(records)
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    model = model_summary(record)
    atomic_write_text(out / "predictions.json", json.dumps({"model": model, "predictions": records}, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a shipped model (e.g. circlization/scratch), a zoo model file / checkpoint, a model "
                                 "folder or hf-hub:ORG/NAME")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, or FILE.npz:KEY (every image of that array)")
    p.add_argument("--out", default="predictions", help="output folder (default predictions/)")
    p.add_argument("--registry", action="append", default=None, metavar="FILE",
                   help="a registry file with the model's task, heads or encoder (a model never names its own)")
    args = p.parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)

    def run() -> int:
        records = predict(args.model, args.inputs, args.out, progress=True, registry_files=args.registry)
        for r in records:
            shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "file"}
            Console().print(f"{r['file']}: {shown}", soft_wrap=True, markup=False)
        err.print(f"{len(records)} image(s) -> {Path(args.out) / 'predictions.csv'}, predictions.json")
        return 0

    return run_main(run, err, args.out)  # files already written stay whole: each is written atomically


if __name__ == "__main__":
    sys.exit(main())
