"""Speed columns for every result row, as timm's and MMSegmentation's tables have: GFLOPs per image
(``torch.utils.flop_counter``), inference images/s at batch 1 and at the evaluation batch size
(warm-up, synchronize, repeats; mean and std), and peak memory (CUDA max allocated, or the process's
peak RSS on CPU)."""
from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo.model import MultiTaskModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def gflops_per_image(model: MultiTaskModel, image: torch.Tensor, heads: list[str]) -> float:
    """Forward FLOPs of one image through the encoder and ``heads`` (a multiply-add counts 2), in GFLOPs."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(image[None], heads=heads)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def images_per_second(model: MultiTaskModel, image: torch.Tensor, heads: list[str], batch: int,
                      device: torch.device, warmup: int = 3, repeats: int = 10) -> tuple[float, float]:
    """Mean and std of images/s over ``repeats`` timed forward passes of ``batch`` copies of ``image``."""
    model.eval()
    x = image[None].expand(batch, *image.shape).contiguous().to(device)
    for _ in range(warmup):
        model(x, heads=heads)
    rates = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        model(x, heads=heads)
        _sync(device)
        rates.append(batch / (time.perf_counter() - t0))
    return statistics.fmean(rates), statistics.stdev(rates) if len(rates) > 1 else 0.0


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors held (max allocated); CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def speed_columns(model: MultiTaskModel, datasets: dict[str, Any], plans, device: torch.device, eval_batch: int,
                  repeats: int = 10) -> dict[str, float]:
    """The speed columns of a row. Each stream's image size is measured with the heads that read it;
    a task with several streams gets one set of columns per stream (``..._<stream>``)."""
    by_stream: dict[str, list[str]] = {}
    for p in plans:
        by_stream.setdefault(p.stream, []).append(p.name)
    row: dict[str, float] = {}
    for stream, heads in by_stream.items():
        ds = datasets[stream]
        image = ds[0]["image"]
        batch = max(1, min(eval_batch, len(ds)))
        sfx = "" if len(by_stream) == 1 else f"_{stream}"
        row[f"gflops{sfx}"] = round(gflops_per_image(model, image.to(device), heads), 4)
        for b, name in ((1, "b1"), (batch, "beval")):
            mean, std = images_per_second(model, image, heads, b, device, repeats=repeats)
            row[f"infer_img_s_{name}{sfx}"], row[f"infer_img_s_{name}_std{sfx}"] = round(mean, 1), round(std, 1)
        row[f"eval_batch{sfx}"] = batch
    row["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    return row
