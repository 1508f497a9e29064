"""Everything a run builds before its first step: device, data, resolved task, model, losses,
metrics, weighting; and a preflight step that checks them together on one small batch, so a
mismatch is a clear error before training starts, never a traceback in epoch 1."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from zoo.engine.build import build_model, check_decoders, load_registry, task_spec, with_decoder_of_run
from zoo.engine.config import RunConfig
from zoo.core.architectures import host_memory, valid_detach
from zoo.core.metrics import Metric, build_metric
from zoo.core.model import MultiTaskModel
from zoo.core.registry import Registry, RegistryError, check_settings
from zoo.encoders.base import Encoder, settings_for_state
from zoo.engine.evaluate import score_streams
from zoo.engine.loaders import make_loaders, to_device
from zoo.engine.step import HeadPlan, streams
from zoo.tasks.base import ResolvedTask, TaskData, TaskSpec

__all__ = ["HeadPlan", "Setup", "make_loaders", "preflight", "seed_everything", "select_device", "setup", "streams",
           "to_device"]


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
    _eval_loaders: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

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


def device_memory(device: torch.device) -> int:
    """Bytes of memory on ``device``: the GPU's own, else the machine's RAM (0 where the OS does not say)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return host_memory()


def check_architecture(registry: Registry, cfg: RunConfig, heads: list[str]) -> None:
    """The architecture's settings, checked before any data is read: the ones the model fills in are
    refused, unknown ones list the valid ones, ``detach`` names some of the task's ``heads``."""
    entry = registry.entry("architectures", cfg.architecture)
    filled = ("channels", "reductions", "heads", "raw_levels")
    given = sorted(set(filled) & set(cfg.architecture_settings))
    if given:
        raise RegistryError(f"--architecture-arg {given[0]}=...: {', '.join(filled)} come from the encoder and the "
                            "task's heads, not from the command line")
    check_settings(f"architecture {cfg.architecture!r}", entry.obj, {**entry.settings, **cfg.architecture_settings},
                   fixed=filled)
    detach = cfg.architecture_settings.get("detach")
    if detach is not None and not valid_detach(detach, heads):
        raise RegistryError(f"--architecture-arg detach={detach!r}: give a list of some, not all, of the heads "
                            f"of task {cfg.task!r}: {heads}, e.g. 'detach=[{heads[0]}]'")
    check_cut_off(registry, cfg, set(detach or ()), "detached by --architecture-arg detach")


def check_cut_off(registry: Registry, cfg: RunConfig, heads: set[str], why: str) -> None:
    """Heads whose encoder gradient is zero (detached, or reading only the input) are refused with the
    strategies that weigh the heads' encoder gradients, unless ``leave_out`` keeps them out: MGDA would
    take the zero gradient as its min-norm point and never move the encoder."""
    weighting = registry.entry("weightings", cfg.weighting).obj
    rest = sorted(heads - set(cfg.weighting_settings.get("leave_out") or []))
    if rest and getattr(weighting, "reads_shared_gradients", False):
        raise RegistryError(f"head(s) {rest} ({why}) have no gradient on the encoder, and weighting {cfg.weighting!r} "
                            "weighs the heads' gradients there; use a loss-based weighting (fixed, uncertainty, famo, "
                            f"...) or, for a Jacobian method, --weighting-arg 'leave_out=[{','.join(rest)}]'")


def check_model_fits(cfg: RunConfig, task: ResolvedTask, in_channels: int, registry: Registry,
                     device: torch.device) -> None:
    """The model is built first on the ``meta`` device (shapes, no memory) and refused when its weights,
    gradients and AdamW moments alone (16 bytes a float32 parameter) exceed the device's memory: e.g.
    ``--encoder-arg width=100000`` is a one-line error, not a 360 GB allocation."""
    try:
        with torch.device("meta"):
            shapes_only = settings_for_state(cfg.encoder_settings, None)  # no pretrained weights read
            probe = build_model(cfg.encoder, task.heads, in_channels, shapes_only, registry, cfg.architecture,
                                cfg.architecture_settings)
    except RegistryError:
        raise
    except Exception:  # a component that cannot be built without memory: the real build reports it
        return
    n = sum(p.numel() for p in probe.parameters())
    need, have = 16 * n, device_memory(device)
    if have and need > have:
        raise RegistryError(f"encoder {cfg.encoder!r} with settings {cfg.encoder_settings or '{}'} and these heads has "
                            f"{n:,} parameters: training needs at least {need / 2**30:,.1f} GiB (weights, gradients, "
                            f"AdamW state), more than the {have / 2**30:,.1f} GiB of {device}; use smaller settings")


def setup(cfg: RunConfig, weights: dict[str, torch.Tensor] | None = None, registry: Registry | None = None,
          spec: TaskSpec | None = None) -> Setup:
    """Build a run from its config. Names are checked before any data is read; the model, losses and
    metrics are checked together on one small batch before the caller trains.

    ``weights``: the state the caller will load (a checkpoint to resume or score). The encoder is then
    built without its ``pretrained`` source (nothing is fetched to be overwritten) and with the
    normalisation the state holds. ``registry`` and ``spec``: the caller's, when it has them (the
    registry of ``cfg.registry``, the task spec with ``cfg.task_settings``), so a job builds each once."""
    registry = registry or load_registry(cfg.registry)
    spec = spec or task_spec(cfg.task, registry, cfg.task_settings)
    spec = with_decoder_of_run(spec, registry, cfg.decoder, cfg.decoder_settings)  # --decoder, --decoder-arg
    if spec.name != cfg.task:
        raise ValueError(f"setup got the spec of task {spec.name!r} for a run of task {cfg.task!r}")
    encoder = registry.entry("encoders", cfg.encoder)  # unknown encoder: fail before loading data
    registry.entry("weightings", cfg.weighting)
    check_architecture(registry, cfg, [h.name for h in spec.heads])
    check_decoders(registry, cfg.encoder, cfg.encoder_settings, spec.heads)  # a decoder the encoder cannot feed
    settings = settings_for_state(cfg.encoder_settings, weights) if weights is not None else cfg.encoder_settings
    if isinstance(encoder.obj, type) and issubclass(encoder.obj, Encoder):
        encoder.obj.prepare({**encoder.settings, **settings})  # e.g. pretrained weights fetched before any data
    device = select_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    data = spec.task.datasets(cfg.data_config())
    seed_everything(cfg.seed)
    task = spec.task.resolve(spec, data, registry)
    check_model_fits(cfg, task, data.in_channels, registry, device)
    model = build_model(cfg.encoder, task.heads, data.in_channels, settings, registry, cfg.architecture,
                        cfg.architecture_settings).to(device)
    check_cut_off(registry, cfg, {n for n, h in model.heads.items() if not h.reads_encoder},
                  "a head setting makes them read only the input")
    if cfg.uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    plans = [HeadPlan(h, registry.build("losses", h.loss, **h.loss_settings)) for h in task.heads]
    metrics = [build_metric(registry, m.name, m.metric, m.settings) for m in task.metrics]
    metric_streams = {m.name: task.stream_of(m.settings.get("head")) for m in task.metrics}
    weights = {h.name: h.weight for h in task.heads}
    reserved = sorted({"names", "weights"} & set(cfg.weighting_settings))
    if reserved:  # the task's heads and YAML weights fill these in
        raise RegistryError(f"--weighting-arg {reserved[0]}=...: {', '.join(reserved)} come from the task's heads and "
                            f"their YAML weights, not from the command line; set a head's weight in the task entry")
    weighting = registry.build("weightings", cfg.weighting, names=list(weights), weights=weights,
                               **cfg.weighting_settings).to(device)
    s = Setup(registry, task, data, model, plans, metrics, metric_streams, weighting, device, cfg)
    preflight(s, cfg)
    if cfg.compile:  # after preflight, whose two-sample batches would be compiled for nothing
        s.model.compile()
    return s


def preflight(s: Setup, cfg: RunConfig) -> None:
    """Two samples of each stream through the model, every loss and metric: each head's output must fit
    its target and every monitor metric must exist, before the first training step."""
    was_training = s.model.training
    s.model.eval()
    losses: dict[str, torch.Tensor] = {}

    def check_heads(heads: list[HeadPlan], out: dict[str, torch.Tensor], batch: dict) -> None:
        for p in heads:
            losses[p.name] = _check_head(s, p, out[p.name], batch)

    try:
        batches = {}
        for stream in streams(s.plans):
            ds = s.data.val[stream]
            batches[stream] = [default_collate([ds[i] for i in range(min(2, len(ds)))])]
            _check_train_batch(s, cfg, stream, batches[stream][0]["image"])
        for m in s.metrics:
            m.reset()
        score_streams(s, batches, on_outputs=check_heads)
        found = {k for m in s.metrics if s.metric_streams[m.name] in batches for k in m.compute()}
        for m in s.metrics:
            m.reset()
        _check_weighting(s, cfg, losses)
    finally:
        s.model.train(was_training)
        s.model.zero_grad(set_to_none=True)
    missing = [m for m in s.task.monitor if m not in found]
    if missing:
        raise RegistryError(f"task {s.task.name!r}: monitor metric(s) {missing} are not computed by its metrics; "
                            f"valid: {sorted(found)}")


def _check_train_batch(s: Setup, cfg: RunConfig, stream: str, images: torch.Tensor) -> None:
    """The smallest training batch (a split smaller than the batch is one batch) must train, before the
    first step: ``--batch-size 1`` with a deep encoder on small images is refused here."""
    n = len(s.data.train[stream])
    fix = (f"give a batch size of 2 or more (--batch-size, now {cfg.batch_size})" if n > 1
           else "give 2 or more training images")
    s.model.check_train_batch(min(cfg.batch_size, n), *images.shape[-2:], fix=fix)


def _check_weighting(s: Setup, cfg: RunConfig, losses: dict[str, torch.Tensor]) -> None:
    """One backward of (a copy of) the strategy on the preflight losses: a method that cannot
    work with this task's heads (e.g. one that needs 3 or more) fails here, not at step one."""
    try:
        copy.deepcopy(s.weighting).backward(losses, [p for p in s.model.shared_parameters() if p.requires_grad],
                                            task_params=[p for p in s.model.task_parameters() if p.requires_grad])
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
