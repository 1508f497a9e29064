"""The task contract and the parsed form of a task's ``registry.yaml`` entry.

A task entry names its class (``target``), class settings, and:

* ``heads``: ``name -> {head, settings, loss, loss_settings, weight, target, stream}``;
* ``metrics``: ``name -> {metric, head, target, settings...}``;
* ``monitor``: the validation metric that picks the best checkpoint (higher is better);
* ``budget`` and ``quick``: training settings for the real benchmark and for smoke runs.

A task's data comes in named *streams* (single tasks have one, ``main``); each head and
metric reads one stream, so a joint task can feed single digits to some heads and
composites to others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from zoo.registry import RegistryError

HEAD_FIELDS = {"head", "settings", "loss", "loss_settings", "weight", "target", "stream"}
TASK_FIELDS = {"target", "settings", "heads", "metrics", "monitor", "budget", "quick", "override", "description",
               "baselines"}


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how much of it to use."""

    root: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    train_limit: int | None = None  # digits/images, for quick runs
    test_limit: int | None = None


@dataclass
class TaskData:
    """Datasets per stream for each split, plus facts every result records."""

    train: dict[str, Dataset]
    val: dict[str, Dataset]
    test: dict[str, Dataset]
    info: dict[str, Any]
    in_channels: int = 1
    # Settings only the data can tell (e.g. the number of classes found in a folder),
    # merged into the named heads' and metrics' YAML settings.
    head_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    loss_settings: dict[str, dict[str, Any]] = field(default_factory=dict)


class Task:
    """Subclasses build their datasets; everything else comes from the YAML entry."""

    streams: tuple[str, ...] = ("main",)
    # Part of `--task all`: the MNIST reference tasks are; tasks that need a dataset of
    # their own (folder, coco, ...) are run by name.
    in_all: bool = True

    def datasets(self, data: DataConfig) -> TaskData:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class HeadSpec:
    name: str
    head: str
    settings: dict[str, Any]
    loss: str | None
    loss_settings: dict[str, Any]
    weight: float
    target: str | None
    stream: str


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
        for key in ("budget", "quick", "baselines"):
            if not isinstance(spec.get(key, {}) or {}, dict):
                raise RegistryError(f"{where}: field {key!r} must be a mapping")
        baselines = {str(k): str(v) for k, v in (spec.get("baselines") or {}).items()}
        for k, v in baselines.items():
            if "." not in v:
                raise RegistryError(f"{where}.baselines.{k}: expected 'task.metric', got {v!r}")
        return cls(name, task, heads, metrics, monitor, dict(spec.get("budget") or {}), dict(spec.get("quick") or {}),
                   baselines)
