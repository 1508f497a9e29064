"""Speed columns for every result row, as timm's and MMSegmentation's tables have: GFLOPs per image
(``torch.utils.flop_counter``), inference images/s at batch 1 and at the evaluation batch size
(warm-up, synchronize, repeats; mean and std), peak memory (CUDA max allocated, or the process's
peak RSS on CPU), and the tensor memory a training step holds at most (``train_peak_memory_mb``)."""
from __future__ import annotations

import itertools
import resource
import statistics
import sys
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from zoo.core.model import MultiTaskModel
from zoo.engine.step import run_heads, streams


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a timer around CUDA kernels measures their launch otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def gflops_per_image(model: MultiTaskModel, image: torch.Tensor, heads: list) -> float:
    """Forward FLOPs of one image through the encoder and ``heads`` (a multiply-add counts 2), in GFLOPs."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        run_heads(model, image[None], heads)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def images_per_second(model: MultiTaskModel, image: torch.Tensor, heads: list, batch: int,
                      device: torch.device, warmup: int = 3, repeats: int = 10) -> tuple[float, float]:
    """Mean and std of images/s over ``repeats`` timed forward passes of ``batch`` copies of ``image``."""
    model.eval()
    x = image[None].expand(batch, *image.shape).contiguous().to(device)
    for _ in range(warmup):
        run_heads(model, x, heads)
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        run_heads(model, x, heads)
        sync(device)
        rates.append(batch / (time.perf_counter() - t0))
    return statistics.fmean(rates), statistics.stdev(rates) if len(rates) > 1 else 0.0


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors held (max allocated); CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


#: the images/s columns a task with several streams takes from its declared speed stream
RATE_COLUMNS = ("infer_img_s_b1", "infer_img_s_b1_std", "infer_img_s_beval", "infer_img_s_beval_std", "eval_batch")


def task_columns(row: dict[str, Any], streams: list[str], speed_stream: str) -> dict[str, Any]:
    """A several-stream task's own speed columns from its per-stream ones (``..._<stream>``): ``gflops``
    of one sample of every stream, the images/s of ``speed_stream`` (the task's declared
    ``Task.speed_stream``), and ``speed_stream`` naming it."""
    if speed_stream not in streams:
        raise ValueError(f"speed stream {speed_stream!r} is not one of the task's streams {streams}")
    out: dict[str, Any] = {"gflops": round(sum(row[f"gflops_{s}"] for s in streams), 4), "speed_stream": speed_stream}
    out.update({k: row[f"{k}_{speed_stream}"] for k in RATE_COLUMNS if f"{k}_{speed_stream}" in row})
    return out


def speed_columns(model: MultiTaskModel, datasets: dict[str, Any], plans, device: torch.device, eval_batch: int,
                  repeats: int = 10, timing: bool = True, speed_stream: str | None = None) -> dict[str, float]:
    """The speed columns of a row. Each stream's image size is measured with the heads that read it;
    a task with several streams gets one set of columns per stream (``..._<stream>``) and its own
    (``task_columns``, the rates of ``speed_stream``: the task's declaration, else its last stream).
    Without ``timing``, GFLOPs and peak memory only."""
    by_stream = streams(plans)
    row: dict[str, float] = {}
    for stream, heads in by_stream.items():
        ds = datasets[stream]
        image = ds[0]["image"]
        batch = max(1, min(eval_batch, len(ds)))
        sfx = "" if len(by_stream) == 1 else f"_{stream}"
        row[f"gflops{sfx}"] = round(gflops_per_image(model, image.to(device), heads), 4)
        if not timing:
            continue
        for b, name in ((1, "b1"), (batch, "beval")):
            mean, std = images_per_second(model, image, heads, b, device, repeats=repeats)
            row[f"infer_img_s_{name}{sfx}"], row[f"infer_img_s_{name}_std{sfx}"] = round(mean, 1), round(std, 1)
        row[f"eval_batch{sfx}"] = batch
    if len(by_stream) > 1:
        row.update(task_columns(row, list(by_stream), speed_stream or list(by_stream)[-1]))
    row["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    return row


def train_peak_memory_mb(cfg, s, steps: int = 2) -> float:
    """The most tensor memory ``steps`` training steps at the run's batch size hold at once: model,
    gradients, optimizer state (created in the first step) and activations, in MB.

    CUDA: max allocated. CPU has no allocator statistics, so the torch profiler's allocation events
    are summed in time order, on top of what is alive before (weights, buffers, the batches), which
    is what CUDA's max allocated would count for the same step in float32. The model is trained by
    these steps: measure its speed first."""
    from zoo.engine.train import build_optimizer, build_scaler, train_one_epoch

    loaders = s.loaders("train")
    optimizer = build_optimizer(s.model, s.weighting, cfg, s.device)
    scaler = build_scaler(cfg, s.device)
    batches = {k: list(itertools.islice(loader, steps)) for k, loader in loaders.items()}

    def train() -> None:  # no learning-rate schedule: a measurement, not a run
        train_one_epoch(s.model, s.plans, s.weighting, optimizer, batches, s.device, cfg, scaler=scaler)

    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
        torch.cuda.reset_peak_memory_stats(s.device)
        train()
        return torch.cuda.max_memory_allocated(s.device) / 2**20
    alive = itertools.chain(s.model.parameters(), s.model.buffers(), s.weighting.parameters(),
                            (v for b in batches.values() for batch in b for v in batch.values() if torch.is_tensor(v)))
    base = sum(x.numel() * x.element_size() for x in alive)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return (base + peak) / 2**20
