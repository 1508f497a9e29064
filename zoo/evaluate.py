"""Evaluation: every metric accumulated over a whole split (all ranks), optionally with test-time
augmentation, and scoring a saved checkpoint."""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from zoo import distributed as dist
from zoo.checkpoint import load_checkpoint
from zoo.config import RunConfig
from zoo.data.partial import labelled
from zoo.metrics import Metric
from zoo.model import MultiTaskModel
from zoo.setup import HeadPlan, make_loaders, setup, streams, to_device


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def _tta_outputs(model: MultiTaskModel, x: torch.Tensor, heads: list[str]) -> dict[str, torch.Tensor]:
    """Average outputs over the input and its 1-pixel shifts; each head undoes the shift on its output."""
    shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    acc: dict[str, torch.Tensor] = {}
    for dy, dx in shifts:
        out = model(torch.roll(x, (dy, dx), (2, 3)), heads=heads)
        for k, v in out.items():
            acc[k] = acc.get(k, 0) + model.heads[k].shift_output(v.float(), dy, dx) / len(shifts)
    return acc


@torch.no_grad()
def evaluate(model: MultiTaskModel, loaders: dict[str, DataLoader], plans: list[HeadPlan], metrics: list[Metric],
             metric_streams: dict[str, str], device: torch.device, cfg: RunConfig) -> dict[str, float]:
    """Accumulate every metric over the whole split (all ranks), then compute."""
    model.eval()
    for m in metrics:
        m.reset()
    for stream, heads in streams(plans).items():
        names = [h.name for h in heads]
        for batch in loaders[stream]:
            batch = to_device(batch, device, cfg.channels_last)
            with autocast(device, cfg.amp):
                out = _tta_outputs(model, batch["image"], names) if cfg.tta else model(batch["image"], heads=names)
            preds = model.predict({k: v.float() for k, v in out.items()}, size=tuple(batch["image"].shape[-2:]))
            for m in metrics:
                if metric_streams[m.name] == stream:
                    _update(m, preds, batch)
    results: dict[str, float] = {}
    for m in metrics:
        m.state = dist.sum_tensor(m.state, device)
        results.update(m.compute())
    return results


def _update(m: Metric, preds: dict[str, torch.Tensor], batch: dict) -> None:
    """Score only the samples that carry every target the metric reads (partial labels)."""
    keep = labelled(batch, m.targets)
    if keep is None:
        m.update(preds, batch)
    elif bool(keep.any()):
        n = len(keep)
        m.update({k: v[keep] for k, v in preds.items()},
                 {k: v[keep] for k, v in batch.items() if torch.is_tensor(v) and len(v) == n})


def evaluate_checkpoint(path: str | Path, split: str = "test", **overrides: Any) -> dict[str, float]:
    """Score a checkpoint on a split with the config stored in it (``overrides`` replace fields)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    state = load_checkpoint(path)
    cfg = dataclasses.replace(RunConfig.from_dict(state["config"]), **overrides)
    s = setup(cfg)
    s.model.load_state_dict(state["model"])
    loaders = make_loaders(getattr(s.data, split), cfg, train=False)
    return evaluate(s.model, loaders, s.plans, s.metrics, s.metric_streams, s.device, cfg)
