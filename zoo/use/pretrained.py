"""The pretrained reference models shipped with the package: their index, files and records.

Each model is ``zoo/pretrained/<task>-<encoder>.safetensors``; its record (``zoo.engine.record.ModelRecord``,
in the style of torchvision's ``Weights.meta``: task, encoder, heads, parameters, GFLOPs, file size, test
metrics and the data they were measured on, training data, the exact recipe command and the run config) is
stored in the file's safetensors header and listed in ``zoo/pretrained/index.json``. Loading is
``zoo.use.load``'s; this module only knows the shipped files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from zoo.core.metrics import build_metric
from zoo.core.model import MultiTaskModel
from zoo.core.registry import Registry, unknown_name_error
from zoo.data.config import is_count
from zoo.engine.checkpoint import read_weights
from zoo.engine.record import ModelRecord, resolve_record

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def _index() -> dict[str, dict[str, Any]]:
    path = PRETRAINED_DIR / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def list_pretrained() -> list[str]:
    """Names of the shipped models, ``task/encoder`` (e.g. ``circlization/scratch``)."""
    return sorted(_index())


def is_shipped(name: str) -> bool:
    return str(name) in _index()


def pretrained_meta(name: str) -> dict[str, Any]:
    """The record of a shipped model, as its index holds it (the header's, plus file size and hash); an
    unknown name lists the shipped ones."""
    index = _index()
    if name not in index:
        raise unknown_name_error("pretrained model", name, index)
    return index[name]


def read_shipped(name: str) -> tuple[dict[str, torch.Tensor], ModelRecord]:
    """The weights and record of shipped model ``name``."""
    meta = pretrained_meta(name)
    state, _ = read_weights(PRETRAINED_DIR / meta["file"])
    return state, ModelRecord.from_dict(meta, f"{PRETRAINED_DIR / 'index.json'} ({name})")


def record_of_row(row: dict[str, Any], model: MultiTaskModel, registry: Registry) -> ModelRecord:
    """A trained model's record completed from its results row: its test metrics (the values its task's
    metrics report) and the data they were measured on, its training data, machine and recipe command."""
    from zoo.use.speed import gflops_per_image

    rec: ModelRecord = model.record
    task = resolve_record(rec, registry)
    keys = {k for m in task.metrics for k in build_metric(registry, m.name, m.metric, m.settings).result_keys()}
    metrics_data, train_data = task.spec.task.describe_data(task, rec.info)
    mode, size = rec.input_spec
    gflops = round(gflops_per_image(model, torch.rand(rec.in_channels, *size), list(model.heads)), 4) if size else None
    return rec.replace(
        name=f"{row['task']}/{row['encoder']}",
        metrics={k: row[k] for k in row if k in keys and row[k] is not None},
        val_metrics={k: row[k] for k in row if k.startswith("val_") and not is_count(k)},
        best_epoch=row.get("best_epoch"), epochs=row.get("epochs"), train_seconds=row.get("train_seconds"),
        machine=row.get("machine"), torch=row.get("torch"), recipe=row.get("command"), gflops=gflops,
        metrics_data=metrics_data, train_data=train_data)


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
