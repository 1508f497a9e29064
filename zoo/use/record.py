"""A model from its record: the one builder of a saved model (a zoo file, a checkpoint, a model folder),
shared by ``zoo.use.pretrained`` and ``zoo.use.hub`` (so neither imports the other's private names)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

from zoo.core.model import MultiTaskModel
from zoo.encoders.base import settings_for_state
from zoo.engine.build import build_model, load_registry, task_spec, with_decoder_of_run
from zoo.runs.keys import row_architecture
from zoo.tasks.base import TaskData


def _in_channels(state: dict[str, torch.Tensor]) -> int:
    """The input channels of saved weights: the first convolution of the encoder."""
    first = next((v for k, v in state.items() if k.startswith("encoder.") and v.dim() == 4), None)
    return int(first.shape[1]) if first is not None else 1


def model_from_record(task: str, encoder: str, state: dict[str, torch.Tensor] | None, meta: dict[str, Any],
                      registry_files: Iterable[str | Path] | None) -> MultiTaskModel:
    """The task's model with ``state`` loaded (if any), as its ``meta`` record describes it."""
    registry = load_registry(registry_files)
    cfg = meta.get("config") or {}
    spec = with_decoder_of_run(task_spec(task, registry, cfg.get("task_settings")), registry, cfg.get("decoder"),
                               cfg.get("decoder_settings"))
    # the weights come from ``state``: nothing is fetched again, the normalisation is the state's
    encoder_settings = settings_for_state(cfg.get("encoder_settings", spec.budget_for(encoder).get(
        "encoder_settings", {})), state)
    info = meta.get("info", {})
    in_channels = int(meta.get("in_channels") or (_in_channels(state) if state is not None else 1))
    data = TaskData({}, {}, {}, info, in_channels=in_channels, num_classes=info.get("num_classes"))
    resolved = spec.task.resolve(spec, data, registry)
    model = build_model(encoder, resolved.heads, data.in_channels, encoder_settings, registry,
                        row_architecture(cfg), cfg.get("architecture_settings") or {})
    if state is not None:
        model.load_state_dict(state)
    model.meta = {**meta, "input": spec.task.input_spec(), "in_channels": in_channels,
                  "head_specs": {h.name: h.record() for h in resolved.heads}}
    return model.eval()
