"""Building models and task specs from the registry."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from zoo.heads.base import Head
from zoo.heads.dense import DEFAULT_DECODER, DenseHead, merge_unet_settings, resolve_decoder
from zoo.core.architectures import DEFAULT_ARCHITECTURE
from zoo.core.metrics import Metric
from zoo.core.model import MultiTaskModel
from zoo.core.registry import Registry, RegistryError
from zoo.tasks.base import HeadSpec, Task, TaskSpec


def load_registry(extra: Iterable[str | Path] | None = None) -> Registry:
    """The built-in registry with user registry files merged on, in order."""
    return Registry.load(extra=extra)


def _head_args(name: str, value: Any) -> tuple[str, dict[str, Any]]:
    """A head given as a registered name, ``{"head": NAME, "settings": {...}}`` or a task's HeadSpec."""
    if isinstance(value, HeadSpec):
        return value.head, dict(value.settings)
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and "head" in value:
        return value["head"], dict(value.get("settings") or {})
    raise RegistryError(f"head {name!r}: expected a head name or {{'head': NAME, 'settings': {{...}}}}, got {value!r}")


def build_model(encoder: str = "scratch", heads: Mapping[str, Any] | Iterable[HeadSpec] | None = None,
                in_channels: int = 1, encoder_settings: Mapping[str, Any] | None = None,
                registry: Registry | None = None, architecture: str = DEFAULT_ARCHITECTURE,
                architecture_settings: Mapping[str, Any] | None = None) -> MultiTaskModel:
    """One shared encoder and named heads, e.g. ``build_model("resnet18", {"mask": "binary_mask",
    "digit": {"head": "classification", "settings": {"num_classes": 10}}})``, or a task's resolved heads,
    joined by a registered multi-task ``architecture`` (``zoo.core.architectures``; default hard sharing)."""
    registry = registry or load_registry()
    if heads is not None and not isinstance(heads, Mapping):
        heads = {h.name: h for h in heads}
    if not heads:
        raise RegistryError("build_model needs at least one head, e.g. heads={'mask': 'binary_mask'}")
    enc = registry.build("encoders", encoder, in_channels=in_channels, **dict(encoder_settings or {}))
    built = {}
    for name, value in heads.items():
        head_name, settings = _head_args(name, value)
        cls = registry.entry("heads", head_name).obj
        if not (isinstance(cls, type) and issubclass(cls, Head)):
            raise RegistryError(f"head {head_name!r} ({registry.entry('heads', head_name).target}) is not a zoo Head: "
                                "subclass zoo.Head (it declares the contract the trainer reads)")
        if cls.needs_input_skip and not enc.input_skip:
            raise RegistryError(f"head {head_name!r} ({name!r}) reads the raw input image, so the encoder must pass it on: "
                                f"build {encoder!r} with input_skip: true (--encoder-arg input_skip=true)")
        if isinstance(cls, type) and issubclass(cls, DenseHead):
            settings = with_decoder(registry, encoder, name, settings, enc.out_channels, enc.reductions)
        built[name] = registry.build("heads", head_name, channels=enc.out_channels, reductions=enc.reductions, **settings)
    arch = registry.build("architectures", architecture, channels=enc.out_channels, reductions=enc.reductions,
                          heads=list(built), raw_levels=1 if enc.input_skip else 0, **dict(architecture_settings or {}))
    return MultiTaskModel(enc, built, arch)


def with_decoder(registry: Registry, encoder: str, head: str, settings: dict[str, Any], channels: list[int],
                 reductions: list[int]) -> dict[str, Any]:
    """A dense head's settings with its ``decoder`` name replaced by the caller's registry entry, after the
    checks: an unknown name or setting, or a decoder that cannot read the encoder's levels, is one line
    naming the decoder, the encoder and the reason."""
    name = settings.get("decoder", DEFAULT_DECODER)
    if not isinstance(name, str):
        raise RegistryError(f"head {head!r}: decoder must be a registered decoder's name, got {name!r}")
    entry = registry.entry("decoders", name)
    try:
        merged = merge_unet_settings(name, settings.get("decoder_settings"), decoder_channels=settings.get(
            "decoder_channels"), attention=settings.get("attention"))
        _, cls, merged = resolve_decoder(entry, merged)
    except ValueError as exc:
        raise RegistryError(f"head {head!r}: {exc}") from None
    reason = cls.refuse(list(channels), list(reductions), **merged)
    if reason:
        raise RegistryError(f"decoder {name!r} cannot serve encoder {encoder!r} (head {head!r}): {reason}")
    return {**settings, "decoder": entry}


def check_decoders(registry: Registry, encoder: str, encoder_settings: Mapping[str, Any] | None,
                   heads: Iterable[HeadSpec]) -> None:
    """The dense heads' decoders against the encoder's levels, before any data is read: the encoder is
    built on the ``meta`` device (its strides and widths, no memory, no weights read)."""
    dense = []
    for h in heads:
        cls = registry.entry("heads", h.head).obj
        if isinstance(cls, type) and issubclass(cls, DenseHead):
            dense.append(h)
    if not dense:
        return
    settings = {k: v for k, v in dict(encoder_settings or {}).items() if k != "pretrained"}
    try:
        with torch.device("meta"):
            enc = registry.build("encoders", encoder, **settings)
    except RegistryError:
        raise
    except Exception:  # an encoder that cannot be built on meta: the real build checks the decoders
        return
    for h in dense:
        with_decoder(registry, encoder, h.name, dict(h.settings), enc.out_channels, enc.reductions)


def _dense(registry: Registry, head: str) -> bool:
    cls = registry.entry("heads", head).obj
    return isinstance(cls, type) and issubclass(cls, DenseHead)


def decodes(spec: TaskSpec, registry: Registry) -> bool:
    """The task has a dense head, one that takes a ``decoder`` (``--decoder`` can change it)."""
    return any(_dense(registry, h.head) for h in spec.heads)


def own_decoder(spec: TaskSpec, registry: Registry) -> str | None:
    """The one decoder every dense head of ``spec`` has in its task entry (unet where a head names none), or
    None when the heads differ or there is no dense head. A run asking for it runs the task as it is."""
    names = {h.settings.get("decoder", DEFAULT_DECODER) for h in spec.heads if _dense(registry, h.head)}
    return names.pop() if len(names) == 1 else None


def with_decoder_of_run(spec: TaskSpec, registry: Registry, decoder: str | None,
                        decoder_settings: Mapping[str, Any] | None) -> TaskSpec:
    """The task spec with ``decoder`` (``--decoder``; None: each head's own) and ``decoder_settings``
    (``--decoder-arg``) given to every dense head. A task without a dense head is refused: the flag would
    change nothing, and its rows would be keyed by a decoder they never had."""
    if decoder is None and not decoder_settings:
        return spec
    dense = [h.name for h in spec.heads if _dense(registry, h.head)]
    if not dense:
        kinds = ", ".join(n for n in registry.names("heads") if _dense(registry, n))
        have = ", ".join(f"{h.name} ({h.head})" for h in spec.heads)
        raise RegistryError(f"--decoder/--decoder-arg: task {spec.name!r} has no dense head ({kinds}) to decode; its "
                            f"heads: {have}")
    if decoder is not None:
        registry.entry("decoders", decoder)  # an unknown name lists the registered ones
    heads = []
    for h in spec.heads:
        if h.name in dense:
            settings = dict(h.settings)
            if decoder is not None and decoder != settings.get("decoder", DEFAULT_DECODER):
                # the entry's decoder settings were its own decoder's
                for key in ("decoder_settings", "decoder_channels", "attention"):
                    settings.pop(key, None)
                settings["decoder"] = decoder
            if decoder_settings:
                settings["decoder_settings"] = {**dict(settings.get("decoder_settings") or {}), **decoder_settings}
            h = dataclasses.replace(h, settings=settings)
        heads.append(h)
    return dataclasses.replace(spec, heads=heads)


def task_spec(name: str, registry: Registry, settings: Mapping[str, Any] | None = None) -> TaskSpec:
    """The validated YAML entry of task ``name`` with its task object built (``settings`` override the YAML's).
    Every head, loss and metric it names must be registered: checked here, before any data is read."""
    entry = registry.entry("tasks", name)
    where = f"task {name!r} ({entry.source})"
    task = registry.build("tasks", name, **dict(settings or {}))
    if not isinstance(task, Task):
        raise RegistryError(f"{where}: target must build a zoo.tasks.Task, got {type(task).__name__}")
    spec = TaskSpec.from_entry(name, entry.spec, task, where)
    for h in spec.heads:
        registry.entry("heads", h.head)
        if h.loss is not None:
            registry.entry("losses", h.loss)
    lower: set[str] = set()
    for m in spec.metrics:
        cls = registry.entry("metrics", m.metric).obj
        if isinstance(cls, type) and issubclass(cls, Metric):  # each metric declares its direction
            lower |= cls.lower_keys(m.name)
    spec.lower_is_better = frozenset(lower)
    wrong = [m for m in spec.monitor if m in lower]
    if wrong:  # the best checkpoint is the one whose monitor is highest
        raise RegistryError(f"{where}: monitor {wrong[0]!r} is better lower (an error); monitor metrics that are "
                            "better higher (e.g. depth_delta1, normals_within_11_25, miou)")
    for enc in spec.encoder_budgets:  # a misspelt encoder would silently get the task's budget
        try:
            registry.entry("encoders", enc)
        except RegistryError as e:
            raise RegistryError(f"{where}.encoder_budgets: {e}") from None
    return spec
