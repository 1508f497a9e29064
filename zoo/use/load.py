"""Loading a trained model: ``load_model(source)``, the one loader, and its two public aliases.

A source is a shipped model's name (``zoo.use.pretrained``), a model folder or ``hf-hub:ORG/NAME``
(``zoo.use.hub``), or a zoo ``.safetensors`` file or training checkpoint. Each gives weights and a record
(``zoo.engine.record.ModelRecord``); the model is built from the record by the engine's own builder.

Every source is untrusted: the registry files a record names (they name code to import and call) are never
read; a task, head or encoder of a user's registry comes only from the caller's ``registry_files``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from zoo.core.errors import one_line
from zoo.core.model import MultiTaskModel
from zoo.core.registry import RegistryError
from zoo.engine.build import load_registry, task_spec
from zoo.engine.checkpoint import read_weights
from zoo.engine.config import RunConfig
from zoo.engine.record import ModelRecord, StateMismatch, build_from_record, in_channels_of
from zoo.use.hub import CONFIG, WEIGHTS, is_model_folder, read_named_folder
from zoo.use.pretrained import is_shipped, pretrained_meta, read_shipped, record_of_row, run_row


def load_model(source: str | Path, registry_files: Iterable[str | Path] | None = None) -> MultiTaskModel:
    """A shipped model by name (``task/encoder``), a Hugging Face-layout folder or ``hf-hub:ORG/NAME``, or any
    zoo model file / checkpoint by path, in eval mode, with its record as ``model.record``. A run's
    ``best.pt`` gets the record of its results row (metrics, machine, recipe) when the row is beside it."""
    name = str(source)
    registry = load_registry(registry_files)
    row = None
    if is_shipped(name):
        state, record = read_shipped(name)
        where = name
    elif is_model_folder(name):
        state, config, folder = read_named_folder(name)
        record = ModelRecord.from_dict(config, str(folder / CONFIG)).replace(source=name)
        where = str(folder / WEIGHTS)
    else:
        if "/" in name and not Path(name).exists() and name.count("/") == 1 and \
                not name.endswith((".pt", ".safetensors")):
            pretrained_meta(name)  # an unknown shipped name: the error lists the shipped ones
        state, meta = read_weights(name)  # read once: the file says which task and encoder it holds
        record = ModelRecord.from_dict(meta, name)
        where = name
        row = run_row(name) if Path(name).name == "best.pt" else None  # the row scored best.pt, not last.pt
    model = _build(record, registry, state, where)
    if row is not None and (row.get("task"), row.get("encoder")) == (record.task, record.encoder):
        model.record = record_of_row(row, model, registry)
    return model.eval()


def _build(record: ModelRecord, registry, state: dict[str, torch.Tensor], where: str) -> MultiTaskModel:
    """The record's model with ``state`` loaded; a record this registry cannot build, or weights that do not
    fit it, is a one-line error naming the source."""
    if any(k.startswith("encoder.") and v.dim() == 4 for k, v in state.items()):
        record = record.replace(in_channels=in_channels_of(state))  # what the weights are, whatever the file says
    try:
        return build_from_record(record, registry, state)
    except RegistryError as exc:  # a task, head or encoder of a registry the caller did not give
        raise RegistryError(f"{where}: {exc}{registry_hint(record.config.registry)}") from None
    except (RuntimeError, StateMismatch) as exc:  # the weights do not fit the model the record describes
        raise ValueError(f"{where} does not fit the {record.task}/{record.encoder} model its record describes: "
                         f"{one_line(exc)}") from None


def registry_hint(files: tuple[str, ...]) -> str:
    """What to do when a model's task, head or encoder is not in the caller's registry: the registry files it
    was trained with are named, never read."""
    return (f"; it was trained with the registry file(s) {', '.join(files)}: if you trust them, give your copy "
            "with registry_files=[...] (--registry on the command line)") if files else ""


def create_model(task: str, encoder: str = "scratch", pretrained: bool | str | Path = False,
                 registry_files: Iterable[str | Path] | None = None) -> MultiTaskModel:
    """The model of ``task`` on ``encoder``: untrained (the task's budget's encoder settings, nothing fetched),
    or ``pretrained=True`` for the shipped weights, or ``pretrained=SOURCE`` for anything ``load_model``
    takes, which must hold this task and encoder."""
    if pretrained is True:
        pretrained_meta(f"{task}/{encoder}")  # not shipped: the error lists the shipped ones
        return load_model(f"{task}/{encoder}", registry_files)
    if pretrained:
        model = load_model(pretrained, registry_files)
        held = (model.record.task, model.record.encoder)
        if held != (task, encoder):
            raise RegistryError(f"{pretrained} holds a {held[0]}/{held[1]} model, not {task}/{encoder}")
        return model
    registry = load_registry(registry_files)
    settings = dict(task_spec(task, registry).budget_for(encoder).get("encoder_settings", {}))
    settings.pop("pretrained", None)  # an untrained model: nothing is fetched
    record = ModelRecord(config=RunConfig(task=task, encoder=encoder, encoder_settings=settings))
    return build_from_record(record, registry).eval()


def from_pretrained(name: str | Path, task: str | None = None,
                    registry_files: Iterable[str | Path] | None = None) -> MultiTaskModel:
    """A model saved by ``save_pretrained``: a folder, or ``hf-hub:ORG/NAME`` through the Hugging Face cache
    (with ``HF_HUB_OFFLINE=1`` only the cache is read). With ``task`` it must hold a model of that task."""
    if not is_model_folder(name):
        raise ValueError(f"{name}: not a model folder or hf-hub:ORG/NAME; zoo.load_model takes model files, "
                         "checkpoints and shipped names")
    model = load_model(name, registry_files)
    if task is not None and model.record.task != task:
        raise RegistryError(f"{name} holds a {model.record.task} model, not {task}")
    return model
