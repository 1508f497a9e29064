"""The shipped reference models: listed, loadable, described, and scoring what their metadata says."""
from __future__ import annotations

import hashlib

import pytest

import zoo
from zoo.data.idx import BUNDLED
from zoo.engine.evaluate import evaluate_checkpoint
from zoo.use.pretrained import PRETRAINED_DIR

SHIPPED = zoo.list_pretrained()


def test_reference_models_are_shipped():
    assert {"foreground/scratch", "circlization/scratch", "semantic/scratch"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_metadata_record(name):
    meta = zoo.pretrained_meta(name)
    task, _, encoder = name.partition("/")
    assert (meta["task"], meta["encoder"]) == (task, encoder)
    data = (PRETRAINED_DIR / meta["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert abs(len(data) / 2**20 - meta["file_size_mb"]) < 1e-3
    model = zoo.create_model(task, encoder, pretrained=True)
    assert sum(p.numel() for p in model.parameters()) == meta["num_params"]
    assert set(model.heads) == set(meta["heads"]) and meta["gflops"] > 0
    assert meta["recipe"].startswith("python -m zoo.bench") and "train: 5,000 digits" in meta["train_data"]
    assert meta["metrics"] and "10,000" in meta["metrics_data"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_its_metadata(name):
    """Scored on the test digits, each shipped model reproduces its recorded metrics to 0.01."""
    meta = zoo.pretrained_meta(name)
    scores = evaluate_checkpoint(PRETRAINED_DIR / meta["file"], data_root=str(BUNDLED), device="cpu")
    for metric, value in meta["metrics"].items():
        assert scores[metric] == pytest.approx(value, abs=0.01), metric
