"""zoo: a PyTorch multi-task model zoo. Shared encoders, task heads, a registry, a benchmark runner.

Python API (mirrors ``python -m zoo.bench``)::

    import zoo
    zoo.list_encoders(); zoo.list_heads(); zoo.list_tasks()
    model = zoo.build_model("scratch", {"mask": "binary_mask"})
    registry = zoo.load_registry(["my_registry.yaml"])   # user entries merged on
    zoo.list_pretrained(); model = zoo.create_model("circlization", "scratch", pretrained=True)
    zoo.save_pretrained(model, "my-model"); model = zoo.from_pretrained("my-model")  # or "hf-hub:ORG/NAME"
    cfg = zoo.run_config("foreground", "scratch", quick=True)   # what the CLI trains; zoo.train.fit(cfg)
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from zoo.heads.base import Head
from zoo.engine.build import build_model, load_registry, task_spec
from zoo.core.model import MultiTaskModel
from zoo.engine.record import ModelRecord
from zoo.use.hub import push_to_hub, save_pretrained
from zoo.use.load import create_model, from_pretrained, load_model
from zoo.use.pretrained import list_pretrained, pretrained_meta
from zoo.core.registry import Registry, RegistryError

from zoo.version import __version__

if TYPE_CHECKING:
    from zoo.engine.config import RunConfig


def run_config(task: str, encoder: str = "scratch", *, quick: bool = False,
               registry_files: Iterable[str | Path] | None = None, **overrides: Any) -> "RunConfig":
    """The run ``python -m zoo.bench --task TASK --encoder ENCODER [--quick]`` would train, for
    ``zoo.train.fit``: the task's budget from the registry (the encoder's own settings over it), then
    ``overrides`` (``epochs=3``; a settings mapping such as ``encoder_settings`` is laid over the budget's)."""
    from zoo.bench import config_for

    return config_for(task, encoder, quick, list(registry_files or ()), **overrides)


def _names(kind: str, registry_files: Iterable[str | Path] | None) -> list[str]:
    return load_registry(registry_files).names(kind)


def list_encoders(registry_files: Iterable[str | Path] | None = None) -> list[str]:
    """Registered encoder names (plus any timm backbone as ``timm:<name>``)."""
    return _names("encoders", registry_files)


def list_heads(registry_files: Iterable[str | Path] | None = None) -> list[str]:
    """Registered head names."""
    return _names("heads", registry_files)


def list_tasks(registry_files: Iterable[str | Path] | None = None) -> list[str]:
    """Registered task names."""
    return _names("tasks", registry_files)


def list_weightings(registry_files: Iterable[str | Path] | None = None) -> list[str]:
    """Registered loss-weighting strategies."""
    return _names("weightings", registry_files)


__all__ = ["Head", "ModelRecord", "MultiTaskModel", "Registry", "RegistryError", "build_model", "create_model", "from_pretrained",
           "list_encoders", "list_heads", "list_pretrained", "list_tasks", "list_weightings", "load_model",
           "load_registry", "pretrained_meta", "push_to_hub", "run_config", "save_pretrained", "task_spec"]
