"""A model's record, typed (as timm's ``PretrainedCfg``), and the one builder of a model from it.

Every producer writes a :class:`ModelRecord` and every reader reads one: a run (``zoo.engine.build_run``),
a training checkpoint, a shipped model's index entry and safetensors header (``zoo.use.pretrained``), a
model folder's ``config.json`` (``zoo.use.hub``), predict, export and the model card. On disk it is a JSON
mapping (:meth:`ModelRecord.to_dict`), so files written before it existed read unchanged.

A record read from a file is untrusted: :meth:`ModelRecord.from_dict` checks each field's type, and what
a model *is* (its input, heads, parameter count) is never taken from the file but from the model built
(:func:`build_from_record`), so a record cannot lie about the model it describes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from zoo.core.errors import one_line
from zoo.core.model import MultiTaskModel
from zoo.core.registry import Registry
from zoo.encoders.base import settings_for_state
from zoo.engine.build import build_model, task_spec, with_decoder_of_run
from zoo.engine.config import RunConfig
from zoo.tasks.base import ResolvedTask, TaskData, TaskSpec

# What a file says that is derived from the built model instead (and rewritten from it on save): the
# task and encoder (the run config's), the heads' classes, the parameter count, the input description.
_BUILT = ("task", "encoder", "heads", "num_params", "input", "head_specs")
# The record's fields filled from the built model (build_from_record), never read from a file.
_FROM_MODEL = ("input_spec", "head_specs", "head_classes", "num_params")


@dataclass(frozen=True, kw_only=True)
class ModelRecord:
    """What a saved model is, how it was trained and how it did. ``config`` says what to build;
    ``input_spec``, ``head_specs``, ``head_classes`` and ``num_params`` are filled from the built model."""

    config: RunConfig
    info: dict[str, Any] = field(default_factory=dict)  # what the data told the run (sizes, class counts)
    in_channels: int = 1
    # the built model's: how a user's image becomes its input (zoo.data.inputs), each head's spec and class
    input_spec: tuple[str, tuple[int, int] | None] | None = None
    head_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    head_classes: dict[str, str] = field(default_factory=dict)
    num_params: int | None = None
    # how it did and how it was trained: from its results row (zoo.use.pretrained.record_of_row)
    name: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # test split, percent or the metric's unit
    val_metrics: dict[str, float] = field(default_factory=dict)
    metrics_data: str | None = None  # what the test metrics were measured on
    train_data: str | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    machine: str | None = None
    torch: str | None = None
    recipe: str | None = None  # the command that trained it
    gflops: float | None = None
    # where it came from: a shipped file (its name, size and hash) or the name it was loaded by
    file: str | None = None
    file_size_mb: float | None = None
    sha256: str | None = None
    source: str | None = None
    # keys this version does not know (a newer zoo's): kept, so saving the model again loses nothing
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def encoder(self) -> str:
        return self.config.encoder

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "ModelRecord":
        """The record of a file's JSON mapping (``where`` names the file in errors). Every field is checked;
        a wrong one is a one-line ValueError, never a traceback from deep inside a later step."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: its model record is a {type(d).__name__}, not a mapping; is it a zoo model?")
        raw = d.get("config")
        if not isinstance(raw, dict) or not isinstance(raw.get("task"), str) or not isinstance(raw.get("encoder"), str):
            raise ValueError(f"{where}: its model record has no run config with a task and an encoder; "
                             "is it a zoo model?")
        try:
            config = RunConfig.from_dict(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: its run config is not valid: {one_line(exc)}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {"config": config}
        for f in dataclasses.fields(cls):
            if f.name in ("config", "extra", *_FROM_MODEL) or d.get(f.name) is None:
                continue
            values[f.name] = _checked(f.name, d[f.name], where)
        values["extra"] = {k: v for k, v in d.items() if k not in known and k not in _BUILT}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping files hold: the fields that are set, the run config as a mapping, and the built
        model's task, encoder, heads, parameter count and input description (as shipped records have them)."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # the built model's fields in the form shipped records have them (below); num_params as it is
            if f.name == "extra" or (f.name in _FROM_MODEL and f.name != "num_params") or value in (None, {}):
                continue
            out[f.name] = value.to_dict() if f.name == "config" else value
        out.update(task=self.task, encoder=self.encoder)
        if self.head_classes:
            out["heads"] = dict(self.head_classes)
        if self.input_spec is not None:
            mode, size = self.input_spec
            out["input"] = {"mode": mode, "size": list(size) if size else None, "channels": self.in_channels}
        return out

    def replace(self, **changes: Any) -> "ModelRecord":
        return dataclasses.replace(self, **changes)


_TYPES: dict[str, tuple[type, ...]] = {
    "info": (dict,), "in_channels": (int,), "metrics": (dict,), "val_metrics": (dict,), "best_epoch": (int,),
    "epochs": (int,), "train_seconds": (int, float), "gflops": (int, float), "file_size_mb": (int, float)}


def _checked(name: str, value: Any, where: str) -> Any:
    want = _TYPES.get(name, (str,))
    if isinstance(value, bool) or not isinstance(value, want):
        raise ValueError(f"{where}: its model record's {name} is {type(value).__name__} {str(value)[:60]!r}; "
                         f"expected {' or '.join(t.__name__ for t in want)}")
    if name in ("metrics", "val_metrics") and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        raise ValueError(f"{where}: its model record's {name} must map names to numbers")
    return value


def run_spec(config: RunConfig, registry: Registry) -> TaskSpec:
    """The task spec a run config describes: the task with its settings, and ``--decoder`` on its heads."""
    spec = task_spec(config.task, registry, config.task_settings)
    return with_decoder_of_run(spec, registry, config.decoder, config.decoder_settings)


def resolve_record(record: ModelRecord, registry: Registry, spec: TaskSpec | None = None) -> ResolvedTask:
    """The task's heads and metrics as the record's data info settles them (no data is read)."""
    spec = spec or run_spec(record.config, registry)
    data = TaskData({}, {}, {}, record.info, in_channels=record.in_channels,
                    num_classes=record.info.get("num_classes"))
    return spec.task.resolve(spec, data, registry)


def build_from_record(record: ModelRecord, registry: Registry, state: dict[str, torch.Tensor] | None = None, *,
                      spec: TaskSpec | None = None, task: ResolvedTask | None = None,
                      load: bool = True) -> MultiTaskModel:
    """The model ``record`` describes, with ``state`` loaded when given, carrying its record (completed from
    the built model) as ``model.record``. A run passes the ``spec`` and ``task`` it resolved from its data;
    loading resolves them from the record. ``registry`` is the caller's, never one a file names (a registry
    names code to import). ``load=False``: built for ``state`` (its normalisation, nothing fetched) but not
    loaded, for a caller that checks the state first (a resumed run: the checkpoint's settings)."""
    cfg = record.config
    spec = spec or run_spec(cfg, registry)
    task = task or resolve_record(record, registry, spec)
    # the weights come from ``state``: nothing is fetched again, and the normalisation is the state's
    settings = settings_for_state(cfg.encoder_settings, state) if state is not None else cfg.encoder_settings

    def build() -> MultiTaskModel:
        return build_model(cfg.encoder, task.heads, in_channels=record.in_channels, encoder_settings=settings,
                           registry=registry, architecture=cfg.architecture,
                           architecture_settings=cfg.architecture_settings)

    if state is not None and load:
        # first on the meta device (no memory): a record asking for sizes its weights do not have (a width of
        # 10^5 in an edited config) is refused before anything that size is allocated. A run (load=False)
        # checks its checkpoint's settings first, and its model's size against the device (engine.checks).
        try:
            with torch.device("meta"):
                probe = build()
        except Exception:  # a component that cannot be built on meta: load_state_dict checks the real one
            probe = None
        if probe is not None:
            check_fits(probe, state)
    model = build()
    if state is not None and load:
        model.load_state_dict(state)
    model.record = record.replace(input_spec=spec.task.input_spec(),
                                  head_specs={h.name: h.record() for h in task.heads},
                                  head_classes={n: type(h).__name__ for n, h in model.heads.items()},
                                  num_params=sum(p.numel() for p in model.parameters()))
    return model


def hand_record(input_spec: tuple[str, tuple[int, int] | None], in_channels: int = 1, task: str = "custom",
                encoder: str = "custom") -> ModelRecord:
    """A record for a model put together by hand (``zoo.build_model``), so ``zoo.predict`` and
    ``zoo.export`` know how an image becomes its input: ``("resize", (H, W))``, or ``("keep", None)``."""
    return ModelRecord(config=RunConfig(task=task, encoder=encoder), input_spec=input_spec, in_channels=in_channels)


class StateMismatch(ValueError):
    """Weights that do not fit the model their record describes."""


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``state`` has exactly ``model``'s tensors, each of its shape (``model`` may live on the meta device)."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} in the weights, {tuple(v.shape)} in the model" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        said = [f"{len(missing)} missing ({', '.join(missing[:2])})" if missing else "",
                f"{len(extra)} unexpected ({', '.join(extra[:2])})" if extra else "",
                f"{len(shapes)} of another shape ({shapes[0]})" if shapes else ""]
        raise StateMismatch("; ".join(s for s in said if s))


def model_summary(record: ModelRecord) -> dict[str, Any]:
    """Which model made an output (predictions.json, an export's JSON): its name, task, encoder and recipe."""
    return {k: v for k, v in (("name", record.name), ("task", record.task), ("encoder", record.encoder),
                              ("recipe", record.recipe)) if v}


def in_channels_of(state: dict[str, torch.Tensor]) -> int:
    """The input channels of saved weights: the first convolution of the encoder."""
    first = next((v for k, v in state.items() if k.startswith("encoder.") and v.dim() == 4), None)
    return int(first.shape[1]) if first is not None else 1
