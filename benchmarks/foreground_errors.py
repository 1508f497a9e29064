"""Split a model's foreground-mask errors into false positives and false negatives.

    python benchmarks/foreground_errors.py MODEL [MODEL ...] [--split test|val] [--data-root DIR]

MODEL is a training checkpoint (``best.pt``) or a zoo ``.safetensors`` file with a ``mask`` head
(foreground, or a joint model). Only the mask head's stream is evaluated, through
``zoo.engine.evaluate`` (the one owner of scoring), and the counts are read from the IoU metric's
own state (intersection, union, predicted and true foreground pixels), so the IoU printed is the
row's. A joint model that loses foreground IoU to the single-task model does so either by
dropping faint pixels (false negatives: its learned threshold sits higher) or by adding them.
"""
from __future__ import annotations

import argparse
import dataclasses

from zoo.core.metrics import BinaryIoU
from zoo.engine.build_run import setup
from zoo.engine.checkpoint import read_weights
from zoo.engine.evaluate import evaluate, saved_config


def mask_errors(path: str, split: str = "test", data_root: str | None = None,
                device: str | None = None) -> dict[str, float]:
    """IoU (%) and pixel counts of the ``iou`` metric of the model in ``path`` on ``split``."""
    state, meta = read_weights(path)
    overrides = {k: v for k, v in (("data_root", data_root), ("device", device)) if v}
    cfg = saved_config(meta, **overrides)  # the file's own registry files are never read
    s = setup(cfg, state)
    s.model.load_state_dict(state)
    metric = next((m for m in s.metrics if m.name == "iou"), None)
    if not isinstance(metric, BinaryIoU):
        raise SystemExit(f"{path}: its task {cfg.task!r} has no binary iou metric (a foreground or joint model is "
                         "needed)")
    stream = s.metric_streams["iou"]
    # only this metric and its stream: a joint model's composites are not needed (nor scored)
    s = dataclasses.replace(s, plans=[p for p in s.plans if p.stream == stream], metrics=[metric])
    iou = evaluate(s, split)["iou"]
    inter, union, pred, true = metric.state.tolist()
    return {"iou": iou, "errors": union - inter, "false_pos": pred - inter, "false_neg": true - inter,
            "true_pixels": true}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default=None, help="e.g. cpu for a model trained with --device cuda")
    a = p.parse_args()
    print("| model | IoU (%) | pixel errors | false positives | false negatives | foreground pixels |")
    print("|---|---|---|---|---|---|")
    for path in a.models:
        r = mask_errors(path, a.split, a.data_root, a.device)
        print(f"| {path} | {r['iou']:.2f} | {r['errors']:,.0f} | {r['false_pos']:,.0f} | {r['false_neg']:,.0f} | "
              f"{r['true_pixels']:,.0f} |")


if __name__ == "__main__":
    main()
