"""The training loop: plain functions read top to bottom (torchvision reference style).

``fit`` builds everything from a :class:`RunConfig`, then alternates ``train_one_epoch``
and ``evaluate``, keeps the best checkpoint on the validation ``monitor`` metric, stops
early when it stalls, and finally scores the best weights on the test split.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from zoo import distributed as dist
from zoo.build import build_task_model, load_registry, task_spec
from zoo.checkpoint import load_checkpoint, save_checkpoint
from zoo.metrics import Metric, build_metric
from zoo.model import MultiTaskModel
from zoo.registry import Registry
from zoo.tasks.base import DataConfig, TaskData, TaskSpec

SCHEDULES = ("onecycle", "cosine", "plateau", "none")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run; stored in every checkpoint."""

    task: str
    encoder: str
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    patience: int = 0  # early stopping: epochs without improvement; 0 = off
    weighting: str = "fixed"
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, CUDA only
    channels_last: bool = False
    num_workers: int = 0
    data_root: str | None = None
    val_fraction: float = 0.1
    train_limit: int | None = None
    test_limit: int | None = None
    tta: bool = False
    registry: tuple[str, ...] = ()
    encoder_settings: tuple[tuple[str, Any], ...] = ()
    task_settings: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch size must be an integer >= 1, got {self.batch_size!r}"),
            (isinstance(self.lr, (int, float)) and self.lr > 0, f"learning rate must be > 0, got {self.lr!r}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (isinstance(self.patience, int) and self.patience >= 0, f"patience must be an integer >= 0, got {self.patience!r}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def data_config(self) -> DataConfig:
        return DataConfig(self.data_root, self.val_fraction, self.seed, self.train_limit, self.test_limit)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["registry"] = list(self.registry)
        d["encoder_settings"] = dict(self.encoder_settings)
        d["task_settings"] = dict(self.task_settings)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        d = dict(d)
        d["registry"] = tuple(d.get("registry", ()))
        d["encoder_settings"] = tuple(sorted(dict(d.get("encoder_settings", {})).items()))
        d["task_settings"] = tuple(sorted(dict(d.get("task_settings", {})).items()))
        return cls(**d)


@dataclass
class RunResult:
    """What one run produced."""

    config: RunConfig
    test: dict[str, float]
    val: dict[str, float]
    info: dict[str, Any]
    epochs: int
    best_epoch: int
    train_seconds: float
    train_samples: int
    parameters: int
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)


def select_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for ``auto``; a named device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} asked for, but MPS is not available here; use --device cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------- data
def _shard(ds: Dataset) -> Dataset:
    """This rank's contiguous-stride shard, without padding (exact distributed metrics)."""
    if dist.world_size() == 1:
        return ds
    return Subset(ds, list(range(dist.rank(), len(ds), dist.world_size())))


def make_loaders(datasets: dict[str, Dataset], cfg: RunConfig, train: bool) -> dict[str, DataLoader]:
    """Training: shuffled (globally across ranks, equal shards, via DistributedSampler when
    distributed). Evaluation: in order, each rank a shard without padding."""
    loaders = {}
    for name, ds in datasets.items():
        sampler, gen = None, torch.Generator().manual_seed(cfg.seed)
        if train and dist.world_size() > 1:
            sampler = DistributedSampler(ds, shuffle=True, seed=cfg.seed, drop_last=True)
        elif not train:
            ds = _shard(ds)
        loaders[name] = DataLoader(ds, batch_size=cfg.batch_size if train else max(cfg.batch_size, 256),
                                   shuffle=train and sampler is None, sampler=sampler,
                                   drop_last=train and len(ds) // dist.world_size() > cfg.batch_size,
                                   num_workers=cfg.num_workers, generator=gen, persistent_workers=False,
                                   pin_memory=torch.cuda.is_available())
    return loaders


def _set_epoch(loaders: dict[str, DataLoader], epoch: int, seed: int) -> None:
    """Reseed shuffling and augmentation per epoch, so a resumed run repeats the same batches."""
    for loader in loaders.values():
        loader.generator.manual_seed(seed * 1000 + epoch)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        ds = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)


def _to(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last and out["image"].dim() == 4:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


# ----------------------------------------------------------------------------- heads
@dataclass
class HeadPlan:
    """How one head learns: which stream and batch field, which loss."""

    name: str
    stream: str
    target: str
    loss: torch.nn.Module


def plan_heads(spec: TaskSpec, model: MultiTaskModel, registry: Registry) -> list[HeadPlan]:
    plans = []
    for h in spec.heads:
        head = model.heads[h.name]
        loss_name = h.loss or getattr(head, "default_loss", None)
        target = h.target or getattr(head, "default_target", None)
        if loss_name is None or target is None:
            raise ValueError(f"task {spec.name!r}, head {h.name!r}: give 'loss' and 'target' in its registry entry")
        plans.append(HeadPlan(h.name, h.stream, target, registry.build("losses", loss_name, **h.loss_settings)))
    return plans


def _streams(plans: list[HeadPlan]) -> dict[str, list[HeadPlan]]:
    by: dict[str, list[HeadPlan]] = {}
    for p in plans:
        by.setdefault(p.stream, []).append(p)
    return by


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


# ----------------------------------------------------------------------------- loops
def train_one_epoch(model: MultiTaskModel, weighting, loaders: dict[str, DataLoader], plans: list[HeadPlan],
                    optimizer: torch.optim.Optimizer, scheduler, scaler, device: torch.device, cfg: RunConfig,
                    progress: Progress | None = None) -> tuple[dict[str, float], int]:
    """One pass over the longest stream (shorter streams cycle). Returns mean losses and samples seen."""
    model.train()
    streams = _streams(plans)
    steps = max(len(loaders[s]) for s in streams)
    iters = {s: (iter(loaders[s]) if len(loaders[s]) == steps else itertools.cycle(loaders[s])) for s in streams}
    shared = [p for p in model.encoder.parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    sums = {p.name: 0.0 for p in plans}
    sums["total"] = 0.0
    seen = 0
    bar = progress.add_task("train", total=steps, loss=float("nan")) if progress else None
    scale = scaler.scale if scaler is not None else (lambda t: t)
    for _ in range(steps):
        losses = {}
        with _autocast(device, cfg.amp):
            for stream, heads in streams.items():
                batch = _to(next(iters[stream]), device, cfg.channels_last)
                out = model(batch["image"], heads=[h.name for h in heads])
                for h in heads:
                    losses[h.name] = h.loss(out[h.name], batch[h.target])
                seen += len(batch["image"])
        optimizer.zero_grad(set_to_none=True)
        total = weighting.backward(losses, shared, scale)
        dist.all_reduce_grads(params)
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {float(total)}; try a lower --lr (now {cfg.lr})")
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None and cfg.schedule in ("onecycle", "cosine"):
            scheduler.step()
        for name, l in losses.items():
            sums[name] += float(l.detach())
        sums["total"] += float(total)
        if progress is not None:
            progress.update(bar, advance=1, loss=float(total))
    if progress is not None:
        progress.remove_task(bar)
    return {k: v / steps for k, v in sums.items()}, seen * dist.world_size()


def _tta_outputs(model: MultiTaskModel, x: torch.Tensor, heads: list[str]) -> dict[str, torch.Tensor]:
    """Average outputs over the input and its 1-pixel shifts (dense outputs shifted back)."""
    shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    acc: dict[str, torch.Tensor] = {}
    for dy, dx in shifts:
        out = model(torch.roll(x, (dy, dx), (2, 3)), heads=heads)
        for k, v in out.items():
            v = v.float()
            if v.dim() == 4:
                v = torch.roll(v, (-dy, -dx), (2, 3))
            elif v.dim() == 2 and v.shape[1] == 3 and getattr(model.heads[k], "mode", None) == "regress":
                v = v - v.new_tensor([dx, dy, 0])
            acc[k] = acc.get(k, 0) + v / len(shifts)
    return acc


@torch.no_grad()
def evaluate(model: MultiTaskModel, loaders: dict[str, DataLoader], plans: list[HeadPlan], metrics: list[Metric],
             metric_streams: dict[str, str], device: torch.device, cfg: RunConfig) -> dict[str, float]:
    """Accumulate every metric over the whole split (all ranks), then compute."""
    model.eval()
    for m in metrics:
        m.reset()
    for stream, heads in _streams(plans).items():
        names = [h.name for h in heads]
        for batch in loaders[stream]:
            batch = _to(batch, device, cfg.channels_last)
            with _autocast(device, cfg.amp):
                out = _tta_outputs(model, batch["image"], names) if cfg.tta else model(batch["image"], heads=names)
            preds = model.predict({k: v.float() for k, v in out.items()}, size=tuple(batch["image"].shape[-2:]))
            for m in metrics:
                if metric_streams[m.name] == stream:
                    m.update(preds, batch)
    results: dict[str, float] = {}
    for m in metrics:
        m.state = dist.sum_tensor(m.state, device)
        results.update(m.compute())
    return results


# ----------------------------------------------------------------------------- fit
@dataclass
class Setup:
    """Everything ``fit`` builds before the first step."""

    registry: Registry
    spec: TaskSpec
    data: TaskData
    model: MultiTaskModel
    plans: list[HeadPlan]
    metrics: list[Metric]
    metric_streams: dict[str, str]
    weighting: Any
    device: torch.device


def setup(cfg: RunConfig) -> Setup:
    registry = load_registry(cfg.registry)
    spec = task_spec(cfg.task, registry, dict(cfg.task_settings))
    registry.entry("encoders", cfg.encoder)  # unknown encoder: fail before loading data
    registry.entry("weightings", cfg.weighting)
    data = spec.task.datasets(cfg.data_config())
    device = select_device(cfg.device)
    seed_everything(cfg.seed)
    spec = apply_data_settings(spec, data)
    model = build_task_model(spec, cfg.encoder, registry, data.in_channels, dict(cfg.encoder_settings)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    plans = plan_heads(spec, model, registry)
    head_stream = {h.name: h.stream for h in spec.heads}
    metrics = [build_metric(registry, m.name, m.metric, m.settings) for m in spec.metrics]
    metric_streams = {m.name: head_stream[m.settings.get("head")] for m in spec.metrics}
    weights = {h.name: h.weight for h in spec.heads}
    weighting = registry.build("weightings", cfg.weighting, names=list(weights), weights=weights).to(device)
    return Setup(registry, spec, data, model, plans, metrics, metric_streams, weighting, device)


def apply_data_settings(spec: TaskSpec, data: TaskData) -> TaskSpec:
    """Merge what the data determined (class counts...) into the heads' and metrics' settings."""
    heads = [dataclasses.replace(h, settings={**h.settings, **data.head_settings.get(h.name, {})},
                                 loss_settings={**h.loss_settings, **data.loss_settings.get(h.name, {})})
             for h in spec.heads]
    metrics = [dataclasses.replace(m, settings={**m.settings, **data.metric_settings.get(m.name, {})}) for m in spec.metrics]
    return dataclasses.replace(spec, heads=heads, metrics=metrics)


def _scheduler(optimizer, cfg: RunConfig, steps_per_epoch: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.3, patience=2)
    return None


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fit(cfg: RunConfig, out_dir: str | Path | None = None, resume: str | Path | None = None,
        console: Console | None = None, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
        show_progress: bool = True) -> RunResult:
    """Train ``cfg``; checkpoints (``last.pt``, ``best.pt``) go to ``out_dir`` when given."""
    console = console or Console(stderr=True)
    s = setup(cfg)
    model, device = s.model, s.device
    train_loaders = make_loaders(s.data.train, cfg, train=True)
    val_loaders = make_loaders(s.data.val, cfg, train=False)
    steps = max(len(train_loaders[h.stream]) for h in s.plans)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(s.weighting.parameters()), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = _scheduler(optimizer, cfg, steps)
    use_scaler = cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    start, best, best_epoch, stale, history, train_seconds, samples = 1, -math.inf, 0, 0, [], 0.0, 0
    ckpt_dir = Path(out_dir) if out_dir is not None else None
    best_state: dict[str, torch.Tensor] | None = None

    if resume is not None:
        state = load_checkpoint(resume)
        saved = RunConfig.from_dict(state["config"])
        if (saved.task, saved.encoder) != (cfg.task, cfg.encoder):
            raise ValueError(f"checkpoint {resume} is for task {saved.task!r} / encoder {saved.encoder!r}, "
                             f"not {cfg.task!r} / {cfg.encoder!r}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        s.weighting.load_state_dict(state["weighting"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start = state["epoch"] + 1
        best, best_epoch, stale = state["best"], state["best_epoch"], state["stale"]
        history, train_seconds, samples = list(state["history"]), state["train_seconds"], state["samples"]
        console.print(f"resumed from {resume} at epoch {state['epoch']}")

    def checkpoint(epoch: int, name: str) -> None:
        if ckpt_dir is None or not dist.is_main():
            return
        save_checkpoint(ckpt_dir / name, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "weighting": s.weighting.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None, "epoch": epoch,
            "best": best, "best_epoch": best_epoch, "stale": stale, "history": history,
            "train_seconds": train_seconds, "samples": samples, "config": cfg.to_dict(), "info": s.data.info,
        })

    progress = None
    if show_progress and dist.is_main():
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=console,
                            transient=True)
    epoch = start - 1
    with progress or nullcontext():
        for epoch in range(start, cfg.epochs + 1):
            seed_everything(cfg.seed * 1000 + epoch)
            _set_epoch(train_loaders, epoch, cfg.seed)
            t0 = time.perf_counter()
            losses, n = train_one_epoch(model, s.weighting, train_loaders, s.plans, optimizer, scheduler, scaler,
                                        device, cfg, progress)
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - t0
            samples += n
            s.weighting.epoch_end({k: v for k, v in losses.items() if k != "total"})
            dist.sync_buffers(model)
            val = evaluate(model, val_loaders, s.plans, s.metrics, s.metric_streams, device, cfg)
            missing = [m for m in s.spec.monitor if m not in val]
            if missing:
                raise ValueError(f"task {cfg.task!r}: monitor metric(s) {missing} not among {sorted(val)}")
            score = sum(val[m] for m in s.spec.monitor) / len(s.spec.monitor)
            if scheduler is not None and cfg.schedule == "plateau":
                scheduler.step(score)
            # NaN (e.g. no foreground class in a tiny validation split) never beats a number, but
            # the first epoch always gives a best checkpoint.
            improved = best_epoch == 0 or score > best or (math.isnan(best) and not math.isnan(score))
            if improved:
                best, best_epoch, stale = score, epoch, 0
            else:
                stale += 1
            weights = s.weighting.weights()
            row = {"epoch": epoch, "train_loss": losses["total"], "losses": losses, "val": val, "weights": weights,
                   "lr": optimizer.param_groups[0]["lr"], "seconds": train_seconds}
            history.append(row)
            if improved:
                checkpoint(epoch, "best.pt")
                if ckpt_dir is None:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            checkpoint(epoch, "last.pt")
            if dist.is_main():
                vals = " ".join(f"{k}={v:.2f}" for k, v in val.items())
                ws = " ".join(f"{k}={v:.3g}" for k, v in weights.items())
                console.print(f"epoch {epoch}/{cfg.epochs}  train_loss={losses['total']:.4f}  val: {vals}  "
                              f"weights: {ws}  lr={row['lr']:.2e}  {'*' if improved else ''}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            if cfg.patience and stale >= cfg.patience:
                if dist.is_main():
                    console.print(f"early stop: {'+'.join(s.spec.monitor)} did not improve for {cfg.patience} epochs")
                break

    # The best weights on validation (never the test set) are the ones scored on test.
    dist.barrier()
    if ckpt_dir is not None and (ckpt_dir / "best.pt").is_file():
        model.load_state_dict(load_checkpoint(ckpt_dir / "best.pt")["model"])
    elif best_state is not None:
        model.load_state_dict(best_state)
    test_loaders = make_loaders(s.data.test, cfg, train=False)
    test = evaluate(model, test_loaders, s.plans, s.metrics, s.metric_streams, device, cfg)
    val_best = history[best_epoch - 1]["val"] if best_epoch and best_epoch <= len(history) else {}
    return RunResult(cfg, test, val_best, dict(s.data.info), epoch, best_epoch, train_seconds, samples,
                     count_parameters(model), str(device), history, s.weighting.weights())


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
