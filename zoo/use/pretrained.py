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

from zoo.engine.checkpoint import read_weights
from zoo.core.model import MultiTaskModel
from zoo.core.registry import RegistryError, unknown_name_error
from zoo.data.config import is_count
from zoo.use.hub import is_model_folder
from zoo.use.record import model_from_record

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


TEST_DATA = {"foreground": "MNIST test set: the genuine 10,000 test digits",
             "circlization": "MNIST test set: the genuine 10,000 test digits",
             "semantic": "10,000 2x2 composites of the 10,000 MNIST test digits (seeded)",
             "joint": "the genuine 10,000 MNIST test digits (iou, accuracy, gated_iou) and 10,000 2x2 composites of "
                      "them (dice)"}
METRIC_PREFIXES = ("iou", "accuracy", "gated_iou", "dice", "miou", "pixel_acc")


def record(row: dict[str, Any], model: MultiTaskModel) -> dict[str, Any]:
    """A trained model's record (torchvision's ``Weights.meta`` style) from its results row: what it is,
    its test metrics and the data they were measured on, its training data, machine and recipe command."""
    from zoo.use.speed import gflops_per_image

    mode, size = model.meta["input"]
    rec = {"name": f"{row['task']}/{row['encoder']}", "task": row["task"], "encoder": row["encoder"],
           "heads": {n: type(h).__name__ for n, h in model.heads.items()},
           "num_params": sum(p.numel() for p in model.parameters()),
           "input": {"mode": mode, "size": list(size) if size else None, "channels": model.meta["in_channels"]},
           "in_channels": model.meta["in_channels"],
           "metrics": {k: row[k] for k in row if k.startswith(METRIC_PREFIXES) and row[k] is not None},
           "val_metrics": {k: row[k] for k in row if k.startswith("val_") and not is_count(k)},
           "best_epoch": row.get("best_epoch"), "epochs": row.get("epochs"), "train_seconds": row.get("train_seconds"),
           "machine": row.get("machine"), "torch": row.get("torch"), "recipe": row.get("command"),
           "config": model.meta["config"], "info": model.meta.get("info", {})}
    if size:
        x = torch.rand(model.meta["in_channels"], *size)
        rec["gflops"] = round(gflops_per_image(model, x, list(model.heads)), 4)
    if "train_digits" in row and "val_digits" in row and row["task"] in TEST_DATA:  # the MNIST reference tasks
        rec["metrics_data"] = TEST_DATA[row["task"]]
        rec["train_data"] = (f"train: {row['train_digits'] + row['val_digits']:,} digits (offline MNIST subset; "
                             f"{row['train_digits']:,} train + {row['val_digits']:,} validation)")
    return rec


def run_row(checkpoint: str | Path) -> dict[str, Any] | None:
    """The results row of the run that wrote ``checkpoint`` (``OUT/<run>/best.pt``, its row in
    ``OUT/results.json``), or None when there is none to be found."""
    from zoo.runs.results import load_rows

    run_dir = Path(checkpoint).resolve().parent
    try:
        rows = load_rows(run_dir.parent)
    except (ValueError, OSError):
        return None
    return next((r for r in rows if r.get("run_dir") and Path(r["run_dir"]).name == run_dir.name
                 and not r.get("status")), None)  # a failed row has a status


def create_model(task: str, encoder: str = "scratch", pretrained: bool | str | Path = False,
                 registry_files: Iterable[str | Path] | None = None) -> MultiTaskModel:
    """The model of ``task`` on ``encoder``; ``pretrained=True`` loads the shipped weights,
    ``pretrained=PATH`` a zoo ``.safetensors`` file, a training checkpoint, a model folder or
    ``hf-hub:ORG/NAME``. The model is in eval mode and carries its metadata as ``model.meta``."""
    meta: dict[str, Any] = {}
    state = None
    if pretrained is True:
        meta = pretrained_meta(f"{task}/{encoder}")  # the index's record: the header's plus file size and hash
        state, _ = read_weights(PRETRAINED_DIR / meta["file"])
    elif pretrained and is_model_folder(pretrained):
        from zoo.use.hub import from_pretrained

        model = from_pretrained(pretrained, task=task, registry_files=registry_files)
        if model.meta["config"]["encoder"] != encoder:
            raise RegistryError(f"{pretrained} holds a {task}/{model.meta['config']['encoder']} model, not {task}/{encoder}")
        return model
    elif pretrained:
        state, meta = read_weights(pretrained)
        saved = meta["config"]
        if (saved["task"], saved["encoder"]) != (task, encoder):
            raise RegistryError(f"{pretrained} holds a {saved['task']}/{saved['encoder']} model, not {task}/{encoder}")
    return model_from_record(task, encoder, state, meta, registry_files)


def load_model(model: str | Path, registry_files: Iterable[str | Path] | None = None) -> MultiTaskModel:
    """A shipped model by name (``task/encoder``), a Hugging Face-layout folder or ``hf-hub:ORG/NAME``
    (``zoo.from_pretrained``), or any zoo model file / checkpoint by path. A run's ``best.pt`` gets the
    record of its results row (metrics, machine, recipe) when the row is beside it.

    A model file is untrusted, like a folder: the registry files its record names (they name code to
    import and call) are never read; a task, head or encoder from a user's registry comes only from the
    caller's ``registry_files``."""
    from zoo.use.hub import from_pretrained, registry_hint

    name = str(model)
    if name in _index():
        task, _, encoder = name.partition("/")
        return create_model(task, encoder, pretrained=True, registry_files=registry_files)
    if is_model_folder(name):
        return from_pretrained(name, registry_files=registry_files)
    if "/" in name and not Path(name).exists() and name.count("/") == 1 and not name.endswith((".pt", ".safetensors")):
        pretrained_meta(name)  # an unknown shipped name: the error lists the shipped ones
    state, meta = read_weights(name)  # read once: the file says which task and encoder it holds
    cfg = meta["config"]
    try:
        built = model_from_record(cfg["task"], cfg["encoder"], state, meta, registry_files)
    except RegistryError as exc:  # a task, head or encoder of a registry the caller did not give
        raise RegistryError(f"{name}: {exc}{registry_hint(meta)}") from None
    row = run_row(name) if Path(name).name == "best.pt" else None  # the row scored best.pt, not last.pt
    if row is not None and (row.get("task"), row.get("encoder")) == (cfg["task"], cfg["encoder"]):
        built.meta = {**record(row, built), **built.meta}  # the built input spec and targets win
    return built
