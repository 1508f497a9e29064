"""Everything a run builds before its first step, in order: the task's spec, the encoder's files, the
device, the data, the resolved task, the model, losses, metrics and weighting. The checks between
these steps, and the preflight on one small batch that ends them, are in ``zoo.engine.checks``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zoo.engine.build import load_registry, task_spec, with_decoder_of_run
from zoo.engine.checks import check_cut_off, check_model_fits, check_run, preflight
from zoo.engine.config import RunConfig
from zoo.engine.record import ModelRecord, build_from_record
from zoo.core.metrics import Metric, build_metric
from zoo.core.model import MultiTaskModel
from zoo.core.registry import Registry
from zoo.encoders.base import Encoder, settings_for_state
from zoo.engine.loaders import make_loaders
from zoo.engine.step import HeadPlan
from zoo.tasks.base import ResolvedTask, TaskData, TaskSpec


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
    cfg: RunConfig
    # a cache, never passed in: a copy (``dataclasses.replace``) starts with its own
    _eval_loaders: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def train_fields(self, stream: str) -> set[str]:
        """What training reads of a stream's samples: the image and its heads' targets (so costly
        fields no head trains on, like an augmented digit's circle, are never computed)."""
        return {"image", "valid"} | {p.target for p in self.plans if p.stream == stream}

    def loaders(self, split: str) -> dict[str, Any]:
        """The split's loaders, one per stream: training shuffled and augmented, evaluation in order
        (built once and kept: a device-resident evaluation split is uploaded once per run)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        datasets = getattr(self.data, split)
        if split == "train":
            return make_loaders(datasets, self.cfg, True, self.device, {k: self.train_fields(k) for k in datasets})
        if split not in self._eval_loaders:
            self._eval_loaders[split] = make_loaders(datasets, self.cfg, False, self.device)
        return self._eval_loaders[split]


def setup(cfg: RunConfig, weights: dict[str, torch.Tensor] | None = None, registry: Registry | None = None,
          spec: TaskSpec | None = None) -> Setup:
    """Build a run from its config. Names are checked before any data is read; the model, losses and
    metrics are checked together on one small batch before the caller trains.

    ``weights``: the state the caller will load (a checkpoint to resume or score, once it has checked it).
    The encoder is then built without its ``pretrained`` source (nothing is fetched to be overwritten) and
    with the normalisation the state holds. ``registry`` and ``spec``: the caller's, when it has them (the
    registry of ``cfg.registry``, the task spec with ``cfg.task_settings``), so a job builds each once."""
    registry = registry or load_registry(cfg.registry)
    spec = spec or task_spec(cfg.task, registry, cfg.task_settings)
    spec = with_decoder_of_run(spec, registry, cfg.decoder, cfg.decoder_settings)  # --decoder, --decoder-arg
    check_run(cfg, registry, spec)  # names and settings: fail before loading data
    encoder = registry.entry("encoders", cfg.encoder)
    if isinstance(encoder.obj, type) and issubclass(encoder.obj, Encoder):
        settings = settings_for_state(cfg.encoder_settings, weights) if weights is not None else cfg.encoder_settings
        encoder.obj.prepare({**encoder.settings, **settings})  # e.g. pretrained weights fetched before any data
    device = select_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    data = spec.task.datasets(cfg.data_config())
    seed_everything(cfg.seed)
    task = spec.task.resolve(spec, data, registry)
    check_model_fits(cfg, task, data.in_channels, registry, device)
    # the same builder as a saved model's: what the run trains is what loading its checkpoint gives
    # the class count the heads were sized by (the data's) goes into the record: loading resolves the heads
    # from the record alone, with no data to ask (a task need not repeat it in its info)
    info = {**data.info, **({"num_classes": data.num_classes} if data.num_classes is not None else {})}
    record = ModelRecord(config=cfg, info=info, in_channels=data.in_channels)
    model = build_from_record(record, registry, weights, spec=spec, task=task, load=False).to(device)
    check_cut_off(registry, cfg, {n for n, h in model.heads.items() if not h.reads_encoder},
                  "a head setting makes them read only the input")
    if cfg.uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    plans = [HeadPlan(h, registry.build("losses", h.loss, **h.loss_settings)) for h in task.heads]
    metrics = [build_metric(registry, m.name, m.metric, m.settings) for m in task.metrics]
    metric_streams = {m.name: task.stream_of(m.settings.get("head")) for m in task.metrics}
    weights = {h.name: h.weight for h in task.heads}
    weighting = registry.build("weightings", cfg.weighting, names=list(weights), weights=weights,
                               **cfg.weighting_settings).to(device)
    s = Setup(registry, task, data, model, plans, metrics, metric_streams, weighting, device, cfg)
    preflight(s, cfg)
    if cfg.compile:  # after preflight, whose two-sample batches would be compiled for nothing
        s.model.compile()
    return s


