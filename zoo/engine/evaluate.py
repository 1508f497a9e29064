"""Evaluation: every metric accumulated over a whole split (all ranks), optionally with test-time
augmentation, through the one scoring loop (``score_streams``, which the preflight check shares), and
scoring a saved checkpoint."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from zoo.core.metrics import Metric
from zoo.data.partial import labelled
from zoo.core import distributed as dist
from zoo.engine.checkpoint import read_weights
from zoo.engine.config import RunConfig
from zoo.engine.record import ModelRecord
from zoo.engine.loaders import to_device
from zoo.engine.step import HeadPlan, autocast, predictions, run_heads, streams


@torch.no_grad()
def evaluate(s, split: str = "val", loaders: dict[str, Any] | None = None) -> dict[str, float]:
    """Every metric of setup ``s`` (``zoo.engine.build_run.Setup``) accumulated over the whole ``split``
    (all ranks), then computed. ``loaders`` replaces the split's own (e.g. pre-built batches)."""
    dist.at(f"the {split} evaluation")
    loaders = loaders if loaders is not None else s.loaders(split)
    s.model.eval()
    for m in s.metrics:
        m.reset()
    score_streams(s, loaders, amp=s.cfg.amp, tta=s.cfg.tta)
    results: dict[str, float] = {}
    for m in s.metrics:
        m.state = dist.sum_tensor(m.state, s.device)
        results.update(m.compute())
    return results


def score_streams(s, batches: Mapping[str, Iterable[dict]], *, amp: bool = False, tta: bool = False,
                  on_outputs: Callable[[list[HeadPlan], dict[str, torch.Tensor], dict], None] | None = None) -> None:
    """Each stream's ``batches`` through the heads of setup ``s`` that read it, and the metrics of that
    stream updated with their hard predictions: the one scoring loop, of evaluation and of the
    preflight check. The caller resets the metrics before and computes them after, and chooses the
    mode (``no_grad``, ``model.eval()``).

    ``amp``: under autocast (``--amp``); ``tta``: averaged over shifted (and, for a task whose images
    may be mirrored, mirrored) inputs. ``on_outputs(heads, outputs, batch)`` sees each batch's raw
    outputs before they are scored (the preflight checks each head's output and loss there)."""
    channels_last = s.cfg.uses_channels_last(s.device)
    for stream, heads in streams(s.plans).items():
        for batch in batches[stream]:
            batch = to_device(batch, s.device, channels_last)
            with autocast(s.device, amp):
                out = run_heads(s.model, batch["image"], heads, tta=tta, mirror=s.task.spec.task.mirrors)
            if on_outputs is not None:
                on_outputs(heads, out, batch)
            with torch.no_grad():  # (a caller's forward may keep its graph: the preflight differentiates it)
                preds = predictions(s.model, out, batch["image"])
            for m in s.metrics:
                if s.metric_streams[m.name] == stream:
                    update_labelled(m, preds, batch)


def update_labelled(m: Metric, preds: dict[str, torch.Tensor], batch: dict) -> None:
    """Update metric ``m`` with only the samples of ``batch`` that carry every target it reads (partial labels:
    ``batch["valid"]``), as a head's loss leaves out the samples without its target; a batch with none is skipped."""
    keep = labelled(batch, m.targets)
    if keep is None:
        m.update(preds, batch)
    elif bool(keep.any()):
        n = len(keep)
        m.update({k: v[keep] for k, v in preds.items()},
                 {k: v[keep] for k, v in batch.items() if torch.is_tensor(v) and len(v) == n})


def score_weights(cfg: RunConfig, weights: dict[str, Any], split: str = "test") -> dict[str, float]:
    """Build the run ``cfg`` describes, load ``weights`` into its model and score them on ``split``: the one
    way a saved model is scored (a checkpoint here, a shipped model in ``zoo.use.pretrained``)."""
    from zoo.engine.build_run import setup

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    s = setup(cfg, weights)
    s.model.load_state_dict(weights)
    return evaluate(s, split)


def evaluate_checkpoint(path: str | Path, split: str = "test", registry_files: Iterable[str | Path] | None = None,
                        **overrides: Any) -> dict[str, float]:
    """Score a saved model on a split with the config it was trained with (``overrides`` replace fields,
    e.g. ``data_root``): a training checkpoint (``best.pt``) or a zoo ``.safetensors`` file, such as a
    shipped model's (``PRETRAINED_DIR / pretrained_meta(name)["file"]``, with ``data_root`` the bundled
    MNIST copy its metrics were measured on). The one way a saved model is scored.

    The file is untrusted: the registry files its config names are never read (a registry names code to
    import); a model of a user's registry is scored with the caller's ``registry_files``."""
    state, meta = read_weights(path)
    return score_weights(saved_config(meta, registry_files, **overrides), state, split)


def saved_config(meta: dict[str, Any], registry_files: Iterable[str | Path] | None = None,
                 **overrides: Any) -> RunConfig:
    """The run config a model file records, with the caller's registry files in place of the file's own."""
    cfg = ModelRecord.from_dict(meta, "the model file").config  # checked: the file is untrusted
    return dataclasses.replace(cfg, registry=tuple(str(f) for f in registry_files or ()), **overrides)
