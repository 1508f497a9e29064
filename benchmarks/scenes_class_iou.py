"""Per-class IoU of scenes segmentation checkpoints on the default test split (the rows hold only the mean).

    python benchmarks/scenes_class_iou.py RUN/best.pt [RUN/best.pt ...]

Renders the 654 default test scenes (64x64, scene seed 0), runs each model and prints, per class, the IoU over
every test pixel, and each class's share of the pixels: which classes a run learned at all.
"""
from __future__ import annotations

import argparse

import torch

from zoo.core.metrics import Confusion
from zoo.data.scenes import CLASSES, SceneSettings, render_scenes
from zoo.use.load import load_model


def class_iou(pred: torch.Tensor, true: torch.Tensor) -> list[float]:
    """IoU (%) of each class over all pixels, by zoo's own confusion metric; a class absent from both is 0."""
    metric = Confusion("seg", "seg", "mask", len(CLASSES), per_class=True)
    metric.update({"seg": pred}, {"mask": true})
    out = metric.compute()
    return [out.get(f"iou_{c}", 0.0) for c in range(len(CLASSES))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    a = p.parse_args(argv)
    data = render_scenes(SceneSettings(), 0, "test", torch.arange(654))
    share = [100.0 * (data["mask"] == c).float().mean().item() for c in range(len(CLASSES))]
    print("| checkpoint | " + " | ".join(CLASSES) + " | mean |")
    print("|---|" + "---|" * (len(CLASSES) + 1))
    print("| share of test pixels (%) | " + " | ".join(f"{s:.1f}" for s in share) + " | |")
    for ckpt in a.checkpoints:
        model = load_model(ckpt)
        with torch.no_grad():
            pred = torch.cat([model(data["image"][i:i + 64])["seg"].argmax(1) for i in range(0, 654, 64)])
        iou = class_iou(pred, data["mask"])
        print(f"| {ckpt} | " + " | ".join(f"{v:.1f}" for v in iou) + f" | {sum(iou) / len(iou):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
