"""The checks of a run, so that a mismatch is a one-line error before training starts, never a
traceback in epoch 1: names and settings before any data is read (``check_run``), the model's size
against the device's memory, heads the strategy cannot weigh, and the preflight on one small batch
(every head's output against its target and loss, every metric, the strategy's backward).
``zoo.engine.build_run.setup`` calls them between its build steps.

The ``s`` they take is a ``zoo.engine.build_run.Setup`` (not imported: ``build_run`` imports this module)."""
from __future__ import annotations

import copy

import torch
from torch.utils.data import default_collate

from zoo.core.architectures import host_memory, valid_detach
from zoo.core.registry import Registry, RegistryError, check_settings
from zoo.encoders.base import settings_for_state
from zoo.engine.build import build_model, check_decoders
from zoo.engine.config import RunConfig
from zoo.engine.evaluate import score_streams
from zoo.engine.step import HeadPlan, streams
from zoo.tasks.base import ResolvedTask, TaskSpec

__all__ = ["check_architecture", "check_cut_off", "check_model_fits", "check_run", "device_memory", "preflight"]

#: weighting settings the task fills in from its heads (their names, their YAML weights)
RESERVED_WEIGHTING_SETTINGS = ("names", "weights")


def check_run(cfg: RunConfig, registry: Registry, spec: TaskSpec) -> None:
    """What the config names, checked before any data is read: the spec is the run's task, the encoder
    and the weighting exist, the architecture's settings fit it and the task's heads, every decoder
    can be fed by the encoder, and no ``--weighting-arg`` sets what the task's heads fill in."""
    if spec.name != cfg.task:
        raise ValueError(f"setup got the spec of task {spec.name!r} for a run of task {cfg.task!r}")
    registry.entry("encoders", cfg.encoder)
    registry.entry("weightings", cfg.weighting)
    check_architecture(registry, cfg, [h.name for h in spec.heads])
    check_decoders(registry, cfg.encoder, cfg.encoder_settings, spec.heads)  # a decoder the encoder cannot feed
    reserved = sorted(set(RESERVED_WEIGHTING_SETTINGS) & set(cfg.weighting_settings))
    if reserved:
        raise RegistryError(f"--weighting-arg {reserved[0]}=...: {', '.join(reserved)} come from the task's heads and "
                            f"their YAML weights, not from the command line; set a head's weight in the task entry")


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
            probe = build_model(cfg.encoder, task.heads, in_channels=in_channels, encoder_settings=shapes_only,
                                registry=registry, architecture=cfg.architecture,
                                architecture_settings=cfg.architecture_settings)
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


def preflight(s, cfg: RunConfig) -> None:
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


def _check_train_batch(s, cfg: RunConfig, stream: str, images: torch.Tensor) -> None:
    """The smallest training batch (a split smaller than the batch is one batch) must train, before the
    first step: ``--batch-size 1`` with a deep encoder on small images is refused here."""
    n = len(s.data.train[stream])
    fix = (f"give a batch size of 2 or more (--batch-size, now {cfg.batch_size})" if n > 1
           else "give 2 or more training images")
    s.model.check_train_batch(min(cfg.batch_size, n), *images.shape[-2:], fix=fix)


def _check_weighting(s, cfg: RunConfig, losses: dict[str, torch.Tensor]) -> None:
    """One backward of (a copy of) the strategy on the preflight losses: a method that cannot
    work with this task's heads (e.g. one that needs 3 or more) fails here, not at step one."""
    try:
        copy.deepcopy(s.weighting).backward(losses, [p for p in s.model.shared_parameters() if p.requires_grad],
                                            task_params=[p for p in s.model.task_parameters() if p.requires_grad])
    except (ValueError, RuntimeError, TypeError) as exc:
        raise RegistryError(f"weighting {cfg.weighting!r} fails on task {s.task.name!r} ({len(losses)} heads): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def _check_head(s, p: HeadPlan, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
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
