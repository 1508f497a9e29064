"""The task contract and the parsed form of a task's ``registry.yaml`` entry.

A task entry names its class (``target``), class settings, and:

* ``heads``: ``name -> {head, settings, loss, loss_settings, weight, target, stream}``;
* ``metrics``: ``name -> {metric, head, target, settings...}``;
* ``monitor``: the validation metric that picks the best checkpoint (higher is better);
* ``budget`` and ``quick``: training settings for the real benchmark and for smoke runs
  (``quick`` overrides only what it lists; the rest comes from ``budget``);
* ``encoder_budgets``: ``encoder name -> settings`` laid over ``budget`` for that encoder only,
  where the task's budget is clearly wrong for it (chosen on validation; say why in a comment).

The YAML entry is unpacked once, into a :class:`TaskSpec`; :meth:`Task.resolve` joins it
with what only the data can tell (class counts, class weights) and what each head class declares
(its output kind, default loss and target). A head is one :class:`HeadSpec` from YAML to the
trainer: the resolved one is the same type with nothing left open.

A task's data comes in named *streams* (single tasks have one, ``main``); each head and
metric reads one stream, so a joint task can feed single digits to some heads and
composites to others.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from zoo.core.metrics import Metric
from zoo.data.config import DataConfig, split_counts
from zoo.data.idx import DataError
from zoo.core.registry import RegistryError
from zoo.core.kinds import LOSS_MODES, OUTPUT_KINDS
from zoo.heads.base import Head

if TYPE_CHECKING:
    from zoo.core.registry import Registry

HEAD_FIELDS = {"head", "settings", "loss", "loss_settings", "weight", "target", "stream"}
TASK_FIELDS = {"target", "settings", "heads", "metrics", "monitor", "budget", "quick", "override", "description",
               "baselines", "encoder_budgets"}


@dataclass
class TaskData:
    """Datasets per stream for each split, plus facts every result records."""

    train: dict[str, Dataset]
    val: dict[str, Dataset]
    test: dict[str, Dataset]
    info: dict[str, Any]
    in_channels: int = 1
    # What only the data can tell, keyed by no head name: Task.resolve gives it to the heads
    # whose output kind is dense_classes, their losses and their metrics.
    num_classes: int | None = None
    class_weights: list[float] | None = None
    exclude: list[int] | None = None


def sample_info(train: Any, val: Any, test: Any) -> dict[str, int]:
    """The sample counts every non-MNIST result row records (MNIST rows count digits)."""
    return split_counts({"train": len(train), "val": len(val), "test": len(test)}, "samples")


class Task:
    """Subclasses build their datasets; everything else comes from the YAML entry."""

    streams: tuple[str, ...] = ("main",)
    # the stream whose images/s stand for a several-stream task's in result tables (zoo.use.speed)
    speed_stream: str | None = None
    # Part of `--task all`: the MNIST reference tasks are; tasks that need a dataset of
    # their own (folder, coco, ...) are run by name.
    in_all: bool = True
    # Its images may be mirrored left-right (indoor and street scenes; not digits): test-time
    # augmentation then averages the mirrored input too (``zoo.engine.step.run_heads``).
    mirrors: bool = False
    # Its samples carry class labels beside other targets (NYUv2: labels, depth, normals): a variant without
    # a class head (nyuv2_depth) leaves them unused instead of being refused as a misconfigured task.
    labels_optional: bool = False

    #: for a task that has no offline default: what its ``--data-root`` must be, said when none is given
    needs_root: str | None = None

    def datasets(self, data: DataConfig) -> TaskData:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_data(self, data: DataConfig) -> None:
        """What can be told about the data without reading it, checked for every planned run before the first
        one trains (a grid of a task's baselines would otherwise fail each run in turn): a task with no offline
        default needs ``--data-root``."""
        if self.needs_root and not data.root:
            raise DataError(self.needs_root)

    def input_spec(self) -> tuple[str, tuple[int, int] | None]:
        """How a user's image becomes this task's model input (``zoo.data.inputs``): resized to the
        task's ``size`` when it has one, else kept at its size."""
        size = getattr(self, "size", None)
        return ("resize", tuple(size)) if size else ("keep", None)

    def describe_data(self, task: "ResolvedTask", info: dict[str, Any]) -> tuple[str | None, str | None]:
        """What a trained model's test metrics were measured on, and what it was trained on, for its record
        and model card, from its run's data ``info`` (sizes); None where the task has no more to say."""
        return None, None

    def resolve(self, spec: "TaskSpec", data: TaskData, registry: "Registry") -> "ResolvedTask":
        """The task's heads and metrics with every setting the data decides filled in.

        Data-derived class counts and class weights go to the heads whose declared output kind is
        ``dense_classes`` (never to a hard-coded head name), and to the metrics that declare they take
        a class count; a YAML setting that contradicts the data, or data with classes but no head to
        predict them, is an error. Each loss gets the mode of its head's output kind.
        """
        heads, class_heads = [], []
        for h in spec.heads:
            where = f"task {spec.name!r}, head {h.name!r} ({h.head})"
            entry = registry.entry("heads", h.head)
            cls = entry.obj
            if not (isinstance(cls, type) and issubclass(cls, Head)):
                raise RegistryError(f"{where}: {entry.target} must subclass zoo.Head")
            settings, loss_settings = dict(h.settings), dict(h.loss_settings)
            try:
                kind = cls.output_for({**entry.settings, **settings})
            except ValueError as exc:
                raise RegistryError(f"{where}: {exc}") from None
            if kind == "dense_classes" and data.num_classes is not None:
                _agree(where, settings, "num_classes", data.num_classes)
                class_heads.append(h.name)
                if data.class_weights is not None:
                    loss_settings.setdefault("class_weights", list(data.class_weights))
            default_loss, default_target = cls.defaults({**entry.settings, **settings})
            loss, target = h.loss or default_loss, h.target or default_target
            if loss is None or target is None:
                raise RegistryError(f"{where}: give 'loss' and 'target' in its task entry (the head has no defaults)")
            _loss_mode(where, loss, loss_settings, kind, registry)
            heads.append(replace(h, settings=settings, loss=loss, loss_settings=loss_settings, target=target,
                                 output=kind))
        if data.num_classes is not None and data.num_classes > 2 and not class_heads and not self.labels_optional:
            raise RegistryError(f"task {spec.name!r}: the data has {data.num_classes} classes, but none of its heads "
                                f"({', '.join(f'{h.name}: {h.head}' for h in spec.heads)}) predicts a class per pixel "
                                "(e.g. segmentation)")
        metrics = []
        for m in spec.metrics:
            settings = dict(m.settings)
            mcls = registry.entry("metrics", m.metric).obj
            takes = isinstance(mcls, type) and issubclass(mcls, Metric) and mcls.takes_class_count
            if takes and m.settings.get("head") in class_heads:
                _agree(f"task {spec.name!r}, metric {m.name!r}", settings, "num_classes", data.num_classes)
                if data.exclude is not None:
                    settings["exclude"] = [c for c in data.exclude if c < data.num_classes]
            metrics.append(MetricSpec(m.name, m.metric, settings))
        return ResolvedTask(spec, heads, metrics)


def _agree(where: str, settings: dict[str, Any], key: str, value: Any) -> None:
    """Fill ``key`` from the data; a YAML value that says otherwise is an error, never overridden silently."""
    if key in settings and settings[key] != value:
        raise RegistryError(f"{where}: {key} is {settings[key]!r} in its settings but the data has {value!r}; "
                            f"remove it from the settings or fix the data")
    settings[key] = value


def _loss_mode(where: str, loss: str, loss_settings: dict[str, Any], kind: str, registry: "Registry") -> None:
    """Give a loss that declares its ``modes`` (zoo's own) the mode of the head's output kind, in
    ``loss_settings``. A mode fixed by the loss's registered name or by the YAML that differs is an
    error naming the losses that fit; a loss that declares no modes (a user's) is left as it is."""
    entry = registry.entry("losses", loss)
    modes = getattr(entry.obj, "modes", None)  # a loss is any nn.Module: the declaration is optional
    if modes is None:
        return
    mode = LOSS_MODES[kind]
    fixed = loss_settings.get("mode", entry.settings.get("mode", mode))
    if fixed != mode or mode not in modes:
        fitting = [n for n in registry.names("losses") if _takes(registry, n, mode)]
        raise RegistryError(f"{where}: loss {loss!r} trains in {fixed if fixed != mode else ' or '.join(modes)} mode, "
                            f"but the head outputs {kind} ({OUTPUT_KINDS[kind]}), trained in {mode} mode; "
                            f"losses for it: {', '.join(fitting) or 'none registered'}")
    loss_settings["mode"] = mode


def _takes(registry: "Registry", loss: str, mode: str) -> bool:
    entry = registry.entry("losses", loss)
    return mode in (getattr(entry.obj, "modes", None) or ()) and entry.settings.get("mode", mode) == mode


@dataclass(frozen=True)
class HeadSpec:
    """One head of a task, the one form it takes from its YAML entry to the trainer: as written, then
    (``Task.resolve``) with its settings, loss (and the loss's mode), target and declared output kind
    all known."""

    name: str
    head: str
    settings: dict[str, Any]
    loss: str | None
    loss_settings: dict[str, Any]
    weight: float
    target: str | None
    stream: str
    output: str | None = None  # the head's declared output kind (zoo.core.kinds.OUTPUT_KINDS), once resolved

    def record(self) -> dict[str, Any]:
        """What a saved model's record says of this head."""
        return {"head": self.head, "target": self.target, "output": self.output}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    metric: str
    settings: dict[str, Any]


@dataclass
class TaskSpec:
    """A task's YAML entry, validated."""

    name: str
    task: Task
    heads: list[HeadSpec]
    metrics: list[MetricSpec]
    monitor: list[str]  # validation metric(s); several are averaged
    budget: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    # metric -> "task.metric" of the single-task model it is compared with (multi-task gain)
    baselines: dict[str, str] = field(default_factory=dict)
    # encoder -> budget settings laid over ``budget`` for that encoder
    encoder_budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the metric results that are better lower (each metric's declaration; delta_m negates them)
    lower_is_better: frozenset[str] = frozenset()

    def budget_for(self, encoder: str | None) -> dict[str, Any]:
        """The default budget of this task with ``encoder``: ``budget``, then its ``encoder_budgets`` entry."""
        return {**self.budget, **self.encoder_budgets.get(encoder or "", {})}

    @classmethod
    def from_entry(cls, name: str, spec: dict[str, Any], task: Task, where: str) -> "TaskSpec":
        unknown = set(spec) - TASK_FIELDS
        if unknown:
            raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}; valid: {sorted(TASK_FIELDS)}")
        heads_raw = spec.get("heads")
        if not isinstance(heads_raw, dict) or not heads_raw:
            raise RegistryError(f"{where}: field 'heads' must be a non-empty mapping of head name -> head entry")
        heads = []
        for hname, h in heads_raw.items():
            hw = f"{where}.heads.{hname}"
            if not isinstance(h, dict) or "head" not in h:
                raise RegistryError(f"{hw}: must be a mapping with at least 'head: <registered head name>'")
            bad = set(h) - HEAD_FIELDS
            if bad:
                raise RegistryError(f"{hw}: unknown field(s) {sorted(bad)}; valid: {sorted(HEAD_FIELDS)}")
            weight = h.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise RegistryError(f"{hw}: weight must be a number >= 0, got {weight!r}")
            stream = h.get("stream", task.streams[0])
            if stream not in task.streams:
                raise RegistryError(f"{hw}: stream {stream!r} is not one of this task's streams {list(task.streams)}")
            heads.append(HeadSpec(str(hname), h["head"], dict(h.get("settings") or {}), h.get("loss"),
                                  dict(h.get("loss_settings") or {}), float(weight), h.get("target"), stream))
        metrics_raw = spec.get("metrics")
        if not isinstance(metrics_raw, dict) or not metrics_raw:
            raise RegistryError(f"{where}: field 'metrics' must be a non-empty mapping of name -> metric entry")
        metrics = []
        head_names = {h.name for h in heads}
        for mname, m in metrics_raw.items():
            mw = f"{where}.metrics.{mname}"
            if not isinstance(m, dict) or "metric" not in m:
                raise RegistryError(f"{mw}: must be a mapping with at least 'metric: <registered metric name>'")
            for key in ("head", "gate"):
                if key in m and m[key] not in head_names:
                    raise RegistryError(f"{mw}: {key} {m[key]!r} is not one of this task's heads {sorted(head_names)}")
            metrics.append(MetricSpec(str(mname), m["metric"], {k: v for k, v in m.items() if k != "metric"}))
        monitor = spec.get("monitor", metrics[0].name)
        monitor = [str(m) for m in monitor] if isinstance(monitor, list) else [str(monitor)]
        for key in ("budget", "quick", "baselines", "encoder_budgets"):
            if not isinstance(spec.get(key, {}) or {}, dict):
                raise RegistryError(f"{where}: field {key!r} must be a mapping")
        encoder_budgets = {}
        for enc, b in (spec.get("encoder_budgets") or {}).items():
            if not isinstance(b, dict) or not b:
                raise RegistryError(f"{where}.encoder_budgets.{enc}: must be a non-empty mapping of budget settings, "
                                    f"got {b!r}")
            encoder_budgets[str(enc)] = dict(b)
        baselines = {str(k): str(v) for k, v in (spec.get("baselines") or {}).items()}
        for k, v in baselines.items():
            if "." not in v:
                raise RegistryError(f"{where}.baselines.{k}: expected 'task.metric', got {v!r}")
        return cls(name, task, heads, metrics, monitor, dict(spec.get("budget") or {}), dict(spec.get("quick") or {}),
                   baselines, encoder_budgets)


@dataclass
class ResolvedTask:
    """A task spec joined with its data: what the builder and the trainer consume."""

    spec: TaskSpec
    heads: list[HeadSpec]  # resolved
    metrics: list[MetricSpec]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def monitor(self) -> list[str]:
        return self.spec.monitor

    def stream_of(self, head: str) -> str:
        return next(h.stream for h in self.heads if h.name == head)
