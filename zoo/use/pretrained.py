"""Pretrained reference models shipped with the package, and ``create_model``.

Each model is ``zoo/pretrained/<task>-<encoder>.safetensors``; its metadata record (in the style of
torchvision's ``Weights.meta``: task, encoder, heads, parameters, GFLOPs, file size, test metrics and
the data they were measured on, training data, the exact recipe command and the run config) is stored
in the file's safetensors header and listed in ``zoo/pretrained/index.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch

from zoo.engine.build import build_model, load_registry, task_spec
from zoo.engine.checkpoint import load_checkpoint
from zoo.core.model import MultiTaskModel
from zoo.core.registry import RegistryError, unknown_name_error
from zoo.tasks.base import TaskData

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def _index() -> dict[str, dict[str, Any]]:
    path = PRETRAINED_DIR / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def list_pretrained() -> list[str]:
    """Names of the shipped models, ``task/encoder`` (e.g. ``circlization/scratch``)."""
    return sorted(_index())


def pretrained_meta(name: str) -> dict[str, Any]:
    """The metadata record of a shipped model; an unknown name lists the shipped ones."""
    index = _index()
    if name not in index:
        raise unknown_name_error("pretrained model", name, index)
    return index[name]


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata from a zoo ``.safetensors`` file or a training checkpoint (``best.pt``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors' own errors (header too large, invalid, truncated) and OSError
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ValueError(f"{path} is not a readable .safetensors file (empty, truncated, corrupt or not "
                             f"safetensors): {detail}") from None
        if "zoo" not in header:
            raise ValueError(f"{path} has no zoo metadata (task, encoder, config); is it a zoo model file?")
        try:
            return state, json.loads(header["zoo"])
        except ValueError:
            raise ValueError(f"{path}: its zoo metadata is not valid JSON; is it a zoo model file?") from None
    ckpt = load_checkpoint(path)
    return ckpt["model"], {"config": ckpt["config"], "info": ckpt.get("info", {})}


def _in_channels(state: dict[str, torch.Tensor]) -> int:
    """The input channels of saved weights: the first convolution of the encoder."""
    first = next((v for k, v in state.items() if k.startswith("encoder.") and v.dim() == 4), None)
    return int(first.shape[1]) if first is not None else 1


def create_model(task: str, encoder: str = "scratch", pretrained: bool | str | Path = False,
                 registry_files: Iterable[str | Path] | None = None) -> MultiTaskModel:
    """The model of ``task`` on ``encoder``; ``pretrained=True`` loads the shipped weights,
    ``pretrained=PATH`` a zoo ``.safetensors`` file or a training checkpoint. The model is in eval
    mode and carries its metadata as ``model.meta``."""
    meta: dict[str, Any] = {}
    state = None
    if pretrained is True:
        meta = pretrained_meta(f"{task}/{encoder}")  # the index's record: the header's plus file size and hash
        state, _ = read_weights(PRETRAINED_DIR / meta["file"])
    elif pretrained:
        state, meta = read_weights(pretrained)
        saved = meta["config"]
        if (saved["task"], saved["encoder"]) != (task, encoder):
            raise RegistryError(f"{pretrained} holds a {saved['task']}/{saved['encoder']} model, not {task}/{encoder}")
    return _build(task, encoder, state, meta, registry_files)


def _build(task: str, encoder: str, state: dict[str, torch.Tensor] | None, meta: dict[str, Any],
           registry_files: Iterable[str | Path] | None) -> MultiTaskModel:
    """The task's model with ``state`` loaded (if any), as its ``meta`` record describes it."""
    registry = load_registry(registry_files)
    cfg = meta.get("config") or {}
    spec = task_spec(task, registry, cfg.get("task_settings"))
    encoder_settings = cfg.get("encoder_settings", spec.budget_for(encoder).get("encoder_settings", {}))
    info = meta.get("info", {})
    in_channels = int(meta.get("in_channels") or (_in_channels(state) if state is not None else 1))
    data = TaskData({}, {}, {}, info, in_channels=in_channels, num_classes=info.get("num_classes"))
    resolved = spec.task.resolve(spec, data, registry)
    model = build_model(encoder, resolved.heads, data.in_channels, encoder_settings, registry)
    if state is not None:
        model.load_state_dict(state)
    model.meta = {**meta, "input": spec.task.input_spec(), "in_channels": in_channels,
                  "targets": {h.name: h.target for h in resolved.heads}}
    return model.eval()


def load_model(model: str | Path) -> MultiTaskModel:
    """A shipped model by name (``task/encoder``) or any zoo model file / checkpoint by path."""
    name = str(model)
    if name in _index():
        task, _, encoder = name.partition("/")
        return create_model(task, encoder, pretrained=True)
    if "/" in name and not Path(name).exists() and name.count("/") == 1 and not name.endswith((".pt", ".safetensors")):
        pretrained_meta(name)  # an unknown shipped name: the error lists the shipped ones
    state, meta = read_weights(name)  # read once: the file says which task and encoder it holds
    cfg = meta["config"]
    return _build(cfg["task"], cfg["encoder"], state, meta, cfg.get("registry") or None)


def score_pretrained(name: str, split: str = "test", data_root: str | Path | None = None) -> dict[str, float]:
    """Score a shipped model on a split of its task's data, with the config it was trained with
    (``data_root`` defaults to the MNIST copy bundled with zoo, from which its metrics were measured)."""
    import dataclasses

    from zoo.data.idx import BUNDLED
    from zoo.engine.config import RunConfig
    from zoo.engine.evaluate import score_weights

    meta = pretrained_meta(name)
    cfg = dataclasses.replace(RunConfig.from_dict(meta["config"]), data_root=str(data_root or BUNDLED), device="cpu")
    state, _ = read_weights(PRETRAINED_DIR / meta["file"])
    return score_weights(cfg, state, split)
