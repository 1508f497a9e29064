"""Batches for the engine: device-resident loaders for datasets that fit on the device, a
``DataLoader`` (workers, pinned memory, prefetching) for those that do not.

Both kinds give the same thing: ``len(loader)`` batches of dicts of tensors, shuffled for
training (globally across ranks, equal shards, as ``DistributedSampler``), in order and sharded
without padding for evaluation (exact distributed metrics), reseeded by ``set_epoch`` so a
resumed run repeats the same batches. The device loaders draw augmentation from a generator of
the training device seeded by (seed, epoch, rank): a run is deterministic for a given seed on a
given device.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from zoo.data.device import device_view
from zoo.core import distributed as dist


def eval_batch_size(batch_size: int) -> int:
    """Evaluation batches are larger than training ones (no gradients): at least 256."""
    return max(batch_size, 256)


class DeviceLoader:
    """Batches of a device-resident view (``zoo.data.device``): an index gather per batch."""

    def __init__(self, view: Any, batch_size: int, train: bool, seed: int, device: torch.device) -> None:
        self.view, self.batch_size, self.train, self.seed, self.device = view, batch_size, train, seed, device
        self.epoch = self.passes = 0
        n, world = len(view), dist.world_size()
        # training: every rank takes an equal share (DistributedSampler's drop_last); evaluation:
        # rank r scores r, r + world, ... (no sample twice, none left out)
        self.per_rank = n // world if train else len(range(dist.rank(), n, world))
        self.drop_last = train and self.per_rank > batch_size
        self.gen = torch.Generator(device=device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.passes = int(epoch), 0

    def _seed(self) -> int:
        # a stream shorter than the epoch starts again within it: each pass its own order and augmentation
        return (self.seed * 1000 + self.epoch) * 1000 + self.passes

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def order(self) -> torch.Tensor:
        """This rank's sample indices for the epoch (on the host: the same permutation on every device)."""
        n, world, rank = len(self.view), dist.world_size(), dist.rank()
        if not self.train:
            return torch.arange(rank, n, world)
        g = torch.Generator().manual_seed(self._seed())
        perm = torch.randperm(n, generator=g)
        return perm[: self.per_rank * world][rank::world]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.order().to(self.device)
        self.gen.manual_seed(self._seed() * 1024 + dist.rank())
        self.passes += 1
        for k in range(len(self)):
            yield self.view.batch(order[k * self.batch_size:(k + 1) * self.batch_size], self.gen)


def _shard(ds: Dataset) -> Dataset:
    """This rank's contiguous-stride shard, without padding (exact distributed metrics)."""
    if dist.world_size() == 1:
        return ds
    return Subset(ds, list(range(dist.rank(), len(ds), dist.world_size())))


def make_loaders(datasets: dict[str, Dataset], cfg: Any, train: bool, device: torch.device | None = None,
                 fields: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """One loader per stream. With ``device`` (and ``cfg.device_data``) a dataset that offers
    a device view and fits becomes a :class:`DeviceLoader`; ``fields[stream]`` names the sample fields
    read from it (``None``: all). Anything else is a ``DataLoader``."""
    loaders: dict[str, Any] = {}
    batch_size = cfg.batch_size if train else eval_batch_size(cfg.batch_size)
    for name, ds in datasets.items():
        if device is not None and cfg.device_data:
            view = device_view(ds, device, (fields or {}).get(name))
            if view is not None:
                loaders[name] = DeviceLoader(view, batch_size, train, cfg.seed, device)
                continue
        sampler, gen = None, torch.Generator().manual_seed(cfg.seed)
        if train and dist.world_size() > 1:
            sampler = DistributedSampler(ds, shuffle=True, seed=cfg.seed, drop_last=True)
        elif not train:
            ds = _shard(ds)
        workers = cfg.num_workers
        loaders[name] = DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                                   drop_last=train and len(ds) // dist.world_size() > batch_size,
                                   num_workers=workers, generator=gen, persistent_workers=False,
                                   prefetch_factor=4 if workers else None, pin_memory=torch.cuda.is_available())
    return loaders


def set_epoch(loaders: dict[str, Any], epoch: int, seed: int) -> None:
    """Reseed shuffling and augmentation per epoch, so a resumed run repeats the same batches."""
    for loader in loaders.values():
        if isinstance(loader, DeviceLoader):
            loader.set_epoch(epoch)
            continue
        loader.generator.manual_seed(seed * 1000 + epoch)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        ds = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """A batch on ``device`` (a no-op for device loaders' batches); nested dicts (``valid``) field by field."""
    out = {k: ({kk: vv.to(device, non_blocking=True) for kk, vv in v.items()} if isinstance(v, dict)
               else v.to(device, non_blocking=True)) for k, v in batch.items()}
    if channels_last and out["image"].dim() == 4:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out
