"""Everything a run builds before its first step: device, data, resolved task, model, losses,
metrics, weighting; and a preflight step that checks them together on one small batch, so a
mismatch is a clear error before training starts, never a traceback in epoch 1."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, default_collate

from zoo import distributed as dist
from zoo.build import build_model, load_registry, task_spec
from zoo.config import RunConfig
from zoo.metrics import Metric, build_metric
from zoo.model import MultiTaskModel
from zoo.registry import Registry, RegistryError
from zoo.tasks.base import ResolvedTask, TaskData


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


def eval_batch_size(cfg: RunConfig) -> int:
    """Evaluation batches are larger than training ones (no gradients): at least 256."""
    return max(cfg.batch_size, 256)


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
        loaders[name] = DataLoader(ds, batch_size=cfg.batch_size if train else eval_batch_size(cfg),
                                   shuffle=train and sampler is None, sampler=sampler,
                                   drop_last=train and len(ds) // dist.world_size() > cfg.batch_size,
                                   num_workers=cfg.num_workers, generator=gen, persistent_workers=False,
                                   pin_memory=torch.cuda.is_available())
    return loaders


def set_epoch(loaders: dict[str, DataLoader], epoch: int, seed: int) -> None:
    """Reseed shuffling and augmentation per epoch, so a resumed run repeats the same batches."""
    for loader in loaders.values():
        loader.generator.manual_seed(seed * 1000 + epoch)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        ds = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    # nested dicts (``valid``: which targets each sample carries) move field by field
    out = {k: ({kk: vv.to(device, non_blocking=True) for kk, vv in v.items()} if isinstance(v, dict)
               else v.to(device, non_blocking=True)) for k, v in batch.items()}
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


def streams(plans: list[HeadPlan]) -> dict[str, list[HeadPlan]]:
    by: dict[str, list[HeadPlan]] = {}
    for p in plans:
        by.setdefault(p.stream, []).append(p)
    return by


@dataclass
class Setup:
    """Everything ``fit`` builds before the first step."""

    registry: Registry
    task: ResolvedTask
    data: TaskData
    model: MultiTaskModel
    plans: list[HeadPlan]
    metrics: list[Metric]
    metric_streams: dict[str, str]
    weighting: Any
    device: torch.device


def setup(cfg: RunConfig) -> Setup:
    """Build a run from its config. Names are checked before any data is read; the model, losses and
    metrics are checked together on one small batch before the caller trains."""
    registry = load_registry(cfg.registry)
    spec = task_spec(cfg.task, registry, cfg.task_settings)
    registry.entry("encoders", cfg.encoder)  # unknown encoder: fail before loading data
    registry.entry("weightings", cfg.weighting)
    device = select_device(cfg.device)
    data = spec.task.datasets(cfg.data_config())
    seed_everything(cfg.seed)
    task = spec.task.resolve(spec, data, registry)
    model = build_model(cfg.encoder, task.heads, data.in_channels, cfg.encoder_settings, registry).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    plans = [HeadPlan(h.name, h.stream, h.target, registry.build("losses", h.loss, **h.loss_settings))
             for h in task.heads]
    metrics = [build_metric(registry, m.name, m.metric, m.settings) for m in task.metrics]
    metric_streams = {m.name: task.stream_of(m.settings.get("head")) for m in task.metrics}
    weights = {h.name: h.weight for h in task.heads}
    weighting = registry.build("weightings", cfg.weighting, names=list(weights), weights=weights,
                               **cfg.weighting_settings).to(device)
    s = Setup(registry, task, data, model, plans, metrics, metric_streams, weighting, device)
    preflight(s, cfg)
    return s


def preflight(s: Setup, cfg: RunConfig) -> None:
    """Two samples of each stream through the model, every loss and metric: each head's output must fit
    its target and every monitor metric must exist, before the first training step."""
    was_training = s.model.training
    s.model.eval()
    found: set[str] = set()
    losses: dict[str, torch.Tensor] = {}
    try:
        for stream, plans in streams(s.plans).items():
            ds = s.data.val[stream]
            batch = [ds[i] for i in range(min(2, len(ds)))]
            batch = to_device(default_collate(batch), s.device, cfg.channels_last)
            out = s.model(batch["image"], heads=[p.name for p in plans])
            for p in plans:
                losses[p.name] = _check_head(s, p, out[p.name], batch)
            with torch.no_grad():  # (the forward keeps its graph: the weighting check differentiates it)
                preds = s.model.predict({k: v.detach().float() for k, v in out.items()},
                                        size=tuple(batch["image"].shape[-2:]))
            for m in s.metrics:
                if s.metric_streams[m.name] == stream:
                    m.reset()
                    m.update(preds, batch)
                    found.update(m.compute())
                    m.reset()
        _check_weighting(s, cfg, losses)
    finally:
        s.model.train(was_training)
        s.model.zero_grad(set_to_none=True)
    missing = [m for m in s.task.monitor if m not in found]
    if missing:
        raise RegistryError(f"task {s.task.name!r}: monitor metric(s) {missing} are not computed by its metrics; "
                            f"valid: {sorted(found)}")


def _check_weighting(s: Setup, cfg: RunConfig, losses: dict[str, torch.Tensor]) -> None:
    """One backward of (a copy of) the strategy on the preflight losses: a method that cannot
    work with this task's heads (e.g. one that needs 3 or more) fails here, not at step one."""
    try:
        copy.deepcopy(s.weighting).backward(losses, [p for p in s.model.encoder.parameters() if p.requires_grad],
                                            task_params=[p for p in s.model.heads.parameters() if p.requires_grad])
    except (ValueError, RuntimeError, TypeError) as exc:
        raise RegistryError(f"weighting {cfg.weighting!r} fails on task {s.task.name!r} ({len(losses)} heads): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def _check_head(s: Setup, p: HeadPlan, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's loss on the batch, after checking that its output fits its target."""
    head = s.model.heads[p.name]
    where = f"task {s.task.name!r}, head {p.name!r} ({type(head).__name__})"
    if p.target not in batch:
        raise RegistryError(f"{where}: target {p.target!r} is not a field of the {p.stream!r} samples; "
                            f"fields: {', '.join(sorted(batch))}")
    target = batch[p.target]
    problem = head.check_output(output, target)
    if problem is None:
        try:
            loss = p.loss(output.float(), target)
            if loss.dim() != 0:
                problem = f"the loss gives shape {tuple(loss.shape)}, not a scalar"
        except Exception as exc:  # the loss cannot take this pair: report it as a shape mismatch
            problem = f"the loss fails on it: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if problem:
        raise RegistryError(f"{where}: output shape {tuple(output.shape)} does not fit target {p.target!r} of "
                            f"shape {tuple(target.shape)}: {problem}")
    return loss
