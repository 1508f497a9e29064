"""zoo.engine.evaluate: one scoring loop (``score_streams``) for evaluation and the preflight check."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from zoo.core.registry import RegistryError
from zoo.engine.build import load_registry, task_spec
from zoo.engine.build_run import setup
from zoo.engine.config import RunConfig
from zoo.engine.evaluate import evaluate, score_streams

TINY = {"width": 4, "input_skip": True}


def test_score_streams_runs_each_stream_through_the_heads_that_read_it(tiny_mnist):
    """Two streams (digits, composites): every validation sample of each goes once through its own heads,
    and the metrics scored on them are what ``evaluate`` reports (one process: no sum over ranks)."""
    cfg = RunConfig(task="joint", encoder="scratch", data_root=str(tiny_mnist), encoder_settings=TINY)
    s = setup(cfg)
    seen: dict[str, int] = {}

    def count(heads, out, batch) -> None:
        assert set(out) == {h.name for h in heads} and len({h.stream for h in heads}) == 1
        seen[heads[0].stream] = seen.get(heads[0].stream, 0) + len(batch["image"])

    s.model.eval()
    for m in s.metrics:
        m.reset()
    with torch.no_grad():
        score_streams(s, s.loaders("val"), on_outputs=count)
    assert seen == {k: len(ds) for k, ds in s.data.val.items()} and len(seen) == 2
    scored = {k: v for m in s.metrics for k, v in m.compute().items()}
    reported = evaluate(s, "val")
    assert scored.keys() == reported.keys()
    assert all(scored[k] == reported[k] or (math.isnan(scored[k]) and math.isnan(reported[k])) for k in scored)


def test_preflight_names_a_monitor_metric_that_no_metric_computes(tiny_mnist):
    """A task whose monitor is not among its metrics' outputs fails before training, listing the valid names."""
    registry = load_registry()
    spec = dataclasses.replace(task_spec("foreground", registry), monitor=["iuo"])
    cfg = RunConfig(task="foreground", encoder="scratch", data_root=str(tiny_mnist), encoder_settings=TINY)
    with pytest.raises(RegistryError, match=r"monitor metric\(s\) \['iuo'\] are not computed by its metrics; "
                                            r"valid: \['iou', 'iou_dice'\]"):
        setup(cfg, registry=registry, spec=spec)
