"""The run configuration, and the command-line flags derived from it.

A run option is one field of :class:`RunConfig`: its metadata says its help text and whether
it belongs to a task's training budget (``budget: true``, settable in ``registry.yaml`` budgets
and marking a run as "custom" when given on the command line), and whether a resumed run may
change it (``resumable: true``). The CLI flags, the valid budget keys, the budget mode and the
resume check are all derived from ``dataclasses.fields(RunConfig)``, so a new option is one
edit here.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from zoo.core.architectures import DEFAULT_ARCHITECTURE
from zoo.core.errors import one_line
from zoo.core.registry import load_yaml
from zoo.data.config import DataConfig


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: how to build it, and when it steps (after every step, or once per
    epoch on the validation score)."""

    build: Callable[[torch.optim.Optimizer, "RunConfig", int], Any]
    per_step: bool


# the one table of schedules: RunConfig's choices are its keys
SCHEDULE_KINDS: dict[str, Schedule | None] = {
    # every parameter group peaks at its own rate (the encoder's is --lr x --encoder-lr-scale)
    "onecycle": Schedule(lambda opt, cfg, n: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=cfg.epochs * n, pct_start=0.15), per_step=True),
    "cosine": Schedule(lambda opt, cfg, n: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * n),
                       per_step=True),
    "plateau": Schedule(lambda opt, cfg, n: torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.3, patience=2), per_step=False),
    "none": None,
}
SCHEDULES = tuple(SCHEDULE_KINDS)


def _opt(default: Any, help: str, budget: bool = False, flag: str | None = None, **extra: Any) -> Any:
    meta = {"help": help, "budget": budget, "flag": flag, **extra}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run; stored in every checkpoint."""

    task: str = field(metadata={"cli": False})
    encoder: str = field(metadata={"cli": False})
    weighting: str = field(default="fixed", metadata={"cli": False})
    architecture: str = field(default=DEFAULT_ARCHITECTURE, metadata={"cli": False})
    # every dense head's decoder (None: each head's own, from its task entry; absent from older checkpoints)
    decoder: str | None = field(default=None, metadata={"cli": False})
    epochs: int = _opt(10, "override the task's default number of epochs", budget=True)
    batch_size: int = _opt(64, "override the task's default batch size", budget=True)
    lr: float = _opt(3e-3, "override the task's default peak learning rate", budget=True)
    weight_decay: float = _opt(1e-4, "AdamW weight decay", budget=True)
    schedule: str = _opt("onecycle", "learning-rate schedule", budget=True, choices=SCHEDULES)
    patience: int = _opt(0, "early stopping: epochs without validation improvement (0 = off)", budget=True)
    encoder_lr_scale: float = _opt(1.0, "the encoder's learning rate as a share of --lr (e.g. 0.1 for a pretrained "
                                        "encoder; the heads keep --lr)", budget=True)
    freeze_encoder_epochs: int = _opt(0, "train only the heads for the first N epochs (the encoder's weights and "
                                         "BatchNorm statistics stay as they are)", budget=True)
    train_limit: int | None = _opt(None, "use only this many training digits/images (>= 1)", budget=True)
    test_limit: int | None = _opt(None, "use only this many test digits/images (>= 1)", budget=True)
    val_fraction: float = _opt(0.1, "share of the training data held out for validation", budget=True)
    tta: bool = _opt(False, "test-time augmentation: average over 1-pixel shifts", budget=True)
    encoder_settings: dict[str, Any] = _opt({}, "encoder setting (YAML value), e.g. width=32 or input_skip=true "
                                            "(repeatable)", budget=True, flag="--encoder-arg")
    task_settings: dict[str, Any] = _opt({}, "task setting (YAML value), e.g. 'augment={shift: 2}' or "
                                         "train_size=50000 (repeatable)", budget=True, flag="--task-arg")
    weighting_settings: dict[str, Any] = _opt({}, "weighting strategy setting (YAML value), e.g. mu=0.5 for stch or "
                                              "c=0.2 for cagrad (repeatable)", budget=True, flag="--weighting-arg")
    architecture_settings: dict[str, Any] = _opt({}, "architecture setting (YAML value), e.g. ratio=8 for mtan or "
                                                 "shared_experts=4 for cgc (repeatable)", budget=True,
                                                 flag="--architecture-arg")
    decoder_settings: dict[str, Any] = _opt({}, "setting (YAML value) of every dense head's decoder, e.g. "
                                            "pyramid_channels=128 for fpn (repeatable)", budget=True,
                                            flag="--decoder-arg")
    seed: int = _opt(0, "random seed (>= 0): data split, initialisation, shuffling, augmentation")
    device: str = _opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps", resumable=True)
    amp: bool = _opt(True, "disable mixed precision on CUDA", flag="--no-amp")
    channels_last: bool | None = _opt(None, "channels_last memory format (default: on CUDA, where it is faster; off "
                                            "elsewhere: slower on a CPU, measured)", resumable=True)
    compile: bool = _opt(False, "torch.compile the model (benchmarks/README.md measures when it pays)", resumable=True)
    device_data: bool = _opt(True, "use a DataLoader instead of keeping array-sized datasets (MNIST, npz, small "
                                   "folders) on the training device with batched augmentation there",
                             flag="--no-device-data", resumable=True)
    num_workers: int = _opt(0, "data loader worker processes (datasets that are not kept on the device)",
                            flag="--workers", resumable=True)
    data_root: str | None = _opt(None, "dataset folder (default: $ZOO_DATA, the cache, the bundled subset)",
                                 resumable=True)
    registry: tuple[str, ...] = _opt((), "a registry file merged onto the built-in one (repeatable)", metavar="YAML",
                                     resumable=True)
    tensorboard: bool = _opt(False, "log losses, metrics, strategy weights, learning rate and the prediction "
                                    "figure to TensorBoard in the run's folder (RUN_DIR/tensorboard)", resumable=True)

    def __post_init__(self) -> None:
        def is_int(v: Any, lo: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= lo

        checks = [
            (is_int(self.epochs, 1), f"epochs must be an integer >= 1, got {self.epochs!r}"),
            (is_int(self.batch_size, 1), f"batch size must be an integer >= 1, got {self.batch_size!r}"),
            (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and 0 < self.lr < math.inf,
             f"learning rate must be a finite number > 0, got {self.lr!r}"),
            (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf,
             f"weight decay must be a finite number >= 0, got {self.weight_decay!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (is_int(self.patience, 0), f"patience must be an integer >= 0, got {self.patience!r}"),
            (isinstance(self.encoder_lr_scale, (int, float)) and not isinstance(self.encoder_lr_scale, bool)
             and 0 <= self.encoder_lr_scale < math.inf,
             f"encoder lr scale must be a finite number >= 0, got {self.encoder_lr_scale!r}"),
            (is_int(self.freeze_encoder_epochs, 0),
             f"freeze encoder epochs must be an integer >= 0, got {self.freeze_encoder_epochs!r}"),
            (is_int(self.num_workers, 0), f"workers must be an integer >= 0, got {self.num_workers!r}"),
            (is_int(self.seed, 0) and self.seed < 2**32,  # what numpy and every generator here take
             f"seed must be an integer from 0 to {2**32 - 1}, got {self.seed!r}"),
            (isinstance(self.encoder_settings, dict), f"encoder_settings must be a mapping, got {self.encoder_settings!r}"),
            (isinstance(self.task_settings, dict), f"task_settings must be a mapping, got {self.task_settings!r}"),
            (isinstance(self.weighting_settings, dict),
             f"weighting_settings must be a mapping, got {self.weighting_settings!r}"),
            (isinstance(self.architecture_settings, dict),
             f"architecture_settings must be a mapping, got {self.architecture_settings!r}"),
            (isinstance(self.decoder_settings, dict), f"decoder_settings must be a mapping, got {self.decoder_settings!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        self.data_config()  # limits and val_fraction are checked where they are used

    def uses_channels_last(self, device: torch.device) -> bool:
        """``channels_last`` as asked, else on for CUDA only."""
        return self.channels_last if self.channels_last is not None else device.type == "cuda"

    def data_config(self) -> DataConfig:
        return DataConfig(self.data_root, self.val_fraction, self.seed, self.train_limit, self.test_limit)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["registry"] = list(self.registry)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        d = dict(d)
        d["registry"] = tuple(d.get("registry", ()))
        for key in ("encoder_settings", "task_settings", "weighting_settings", "architecture_settings",
                    "decoder_settings"):
            # older checkpoints stored sorted pairs (and have no architecture settings)
            d[key] = dict(d.get(key) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


BUDGET_KEYS = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("budget"))
# Fields that may differ between a run and its resumption (where and how it runs, not what it learns).
RESUMABLE = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("resumable"))


def check_resumable(saved: RunConfig, cfg: RunConfig, path: str | Path) -> None:
    """A checkpoint continues only the run it came from: every setting that changes what is learned
    must be the same (device, workers, data folder and registry files may differ)."""
    now = cfg.to_dict()
    diff = [f"{k}: {v!r} in the checkpoint, {now[k]!r} now" for k, v in saved.to_dict().items()
            if k not in RESUMABLE and now[k] != v]
    if diff:
        raise ValueError(f"checkpoint {path} is from another run and cannot be resumed with these settings; "
                         f"differences: {'; '.join(diff)}. Rerun without --resume, or with the checkpoint's settings")


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _kind(annotation: Any) -> Any:
    """The value type of a field's annotation: ``int | None`` -> int, ``tuple[str, ...]`` -> tuple."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return origin or annotation


def add_run_options(p: argparse.ArgumentParser) -> None:
    """One flag per CLI field of RunConfig, its type from the annotation. Budget flags default to None
    (= the task's budget); mappings and tuples are repeatable flags."""
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.metadata.get("cli") is False:
            continue
        flag, help_, kind = _flag(f), f.metadata["help"], _kind(hints[f.name])
        default = None if f.metadata.get("budget") else f.default
        if kind in (dict, tuple):
            p.add_argument(flag, dest=f.name, action="append", default=[],
                           metavar=f.metadata.get("metavar", "KEY=VALUE" if kind is dict else "VALUE"), help=help_)
        elif kind is bool and f.default is None:  # unset = decided per device; --x / --no-x decide
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif kind is bool:
            p.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                           default=default, help=help_)
        else:
            p.add_argument(flag, dest=f.name, type=kind, default=default, choices=f.metadata.get("choices"),
                           help=help_)


def run_flags(args: argparse.Namespace, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The flags that give ``args``' run options again (the inverse of :func:`add_run_options`): only those given
    (a budget setting) or set away from their default, so the command they make keeps its budget mode. A grid
    row's command is built from them. ``leave_out``: fields not to give (a baseline's strategy settings)."""
    out: list[str] = []
    for f in dataclasses.fields(RunConfig):
        if f.metadata.get("cli") is False or f.name in leave_out:
            continue
        flag, value = _flag(f), getattr(args, f.name, None)
        if isinstance(value, list):  # repeatable: each as given
            for item in value:
                out += [flag, str(item)]
        elif value is None or value == (None if f.metadata.get("budget") else f.default):
            continue
        elif isinstance(value, bool):  # --x / --no-x where unset decides per device, else the flag that flips it
            out.append(flag if f.default is not None or value else "--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


def parse_kv(items: list[str], what: str) -> dict[str, Any]:
    """``["width=32", "input_skip=true"]`` -> ``{"width": 32, "input_skip": True}`` (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = load_yaml(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what} {item!r}: cannot parse the value as YAML: {one_line(exc, None)}") from None
    return out


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The budget settings given on the command line (what makes a run "custom")."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        if not f.metadata.get("budget"):
            continue
        v = getattr(args, f.name, None)
        if isinstance(v, list):
            if v:
                out[f.name] = parse_kv(v, _flag(f))
        elif v is not None:
            out[f.name] = v
    return out


#: the strategy's and the architecture's own settings: the single-task baselines of a joint run (fixed
#: weighting, hard sharing) are trained without them, under the rest of the command's budget
STRATEGY_FIELDS = ("weighting_settings", "architecture_settings")


def budget_mode(args: argparse.Namespace, strategy: bool = True) -> str:
    """``default``, ``quick``, or ``custom-<hash>`` when any budget setting is given on the command line:
    the hash keys the row, so two custom budgets never replace each other's rows. ``strategy=False``:
    the mode of the command's single-task baselines, which leave out :data:`STRATEGY_FIELDS`."""
    over = cli_overrides(args)
    if not strategy:
        over = {k: v for k, v in over.items() if k not in STRATEGY_FIELDS}
    if not over:
        return "quick" if args.quick else "default"
    base = "quick" if args.quick else "default"
    return f"custom-{base}-{_digest(over)}"


def is_smoke(mode: str) -> bool:
    """Whether a budget mode (``budget_mode``) is a quick run's: its numbers check the pipeline, not the model."""
    return mode == "quick" or mode.startswith("custom-quick-")


def budget_fingerprint(cfg: RunConfig) -> str:
    """A short hash of ``cfg``'s training settings (its budget fields): a finished row whose fingerprint
    differs from a job's was trained under another budget (``registry.yaml`` changed since)."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig) if f.metadata.get("budget")}
    for key in ("architecture_settings", "decoder_settings"):  # added after rows were fingerprinted: unused,
        if not values[key]:                                     # old fingerprints hold
            del values[key]
    return _digest(values)


def _digest(values: dict[str, Any]) -> str:
    """8 hex digits of settings, the same for the same settings in any order."""
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_config(args: argparse.Namespace, task: str, encoder: str, weighting: str, budget: dict[str, Any],
               architecture: str = DEFAULT_ARCHITECTURE, decoder: str | None = None) -> RunConfig:
    """The task's budget, then the command line's overrides, then the run fields."""
    unknown = set(budget) - BUDGET_KEYS
    if unknown:
        raise ValueError(f"task {task!r}: unknown budget setting(s) {sorted(unknown)}; valid: {sorted(BUDGET_KEYS)}")
    cfg: dict[str, Any] = dict(budget)
    for key, value in cli_overrides(args).items():
        cfg[key] = {**dict(cfg.get(key) or {}), **value} if isinstance(value, dict) else value
    for f in dataclasses.fields(RunConfig):
        if f.metadata.get("cli") is not False and not f.metadata.get("budget"):
            v = getattr(args, f.name)
            cfg[f.name] = tuple(v) if isinstance(v, list) else v
    return RunConfig(task=task, encoder=encoder, weighting=weighting, architecture=architecture, decoder=decoder,
                     **cfg)
