"""Split a semantic checkpoint's errors into wrong digit classes and foreground boundary errors.

    python benchmarks/semantic_errors.py CHECKPOINT [--split val|test] [--data-root DIR]

Prints the per-quadrant class accuracy (the class with the most probability mass over the
quadrant's pixels, against the digit's label) and the foreground IoU (any digit class vs
background). Dice over the digit classes is roughly 1 - (wrong-class share) - (foreground
error), so this says which of the two a change moved.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from zoo.engine.checkpoint import load_checkpoint
from zoo.data.datasets import BACKGROUND
from zoo.engine.build_run import setup
from zoo.engine.evaluate import saved_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    state = load_checkpoint(a.checkpoint)
    cfg = saved_config(state)  # the checkpoint's own registry files are never read (a registry names code)
    if cfg.task != "semantic":
        raise SystemExit(f"{a.checkpoint} is a {cfg.task!r} checkpoint; this script reads semantic ones")
    if a.data_root:
        cfg = dataclasses.replace(cfg, data_root=a.data_root)
    s = setup(cfg)
    s.model.load_state_dict(state["model"])
    s.model.eval()
    head = s.task.heads[0].name
    right = total = inter = union = 0
    with torch.no_grad():
        for batch in s.loaders(a.split)["main"]:
            prob = s.model(batch["image"])[head].float().softmax(1)  # log-probabilities or logits alike
            digits = torch.cat([prob[:, :BACKGROUND], prob[:, BACKGROUND + 1:]], 1)
            for q in range(4):
                r, c = (q // 2) * 28, (q % 2) * 28
                pred = digits[:, :, r:r + 28, c:c + 28].sum((2, 3)).argmax(1)
                right += int((pred == batch["labels"][:, q]).sum())
                total += len(pred)
            fg_pred, fg_true = prob.argmax(1) != BACKGROUND, batch["mask"] != BACKGROUND
            inter += int((fg_pred & fg_true).sum())
            union += int((fg_pred | fg_true).sum())
    print(f"{a.split}: quadrant class accuracy {100 * right / total:.3f}% ({total - right} wrong of {total}), "
          f"foreground IoU {100 * inter / union:.3f}%")


if __name__ == "__main__":
    main()
