"""zoo/engine/record.py: the typed model record every producer writes and every reader reads, and the one
builder of a model from it (issue 41, point 1)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.engine.checkpoint import read_weights
from zoo.engine.record import ModelRecord
from zoo.use.pretrained import PRETRAINED_DIR

OLD_FOLDER = Path(__file__).parent / "data" / "hub_folder_v1"  # config.json + card written by zoo before the record


def _folder(tmp_path: Path, config: dict | None = None) -> Path:
    """A model folder with the shipped foreground weights, and ``config`` (default: the old folder's)."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(OLD_FOLDER / "README.md", folder / "README.md")
    (folder / "config.json").write_text(json.dumps(config) if config is not None
                                        else (OLD_FOLDER / "config.json").read_text())
    state, _ = read_weights(PRETRAINED_DIR / "foreground-scratch.safetensors")
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_a_folder_written_before_the_record_loads_unchanged(tmp_path):
    """The committed config.json was written by zoo.save_pretrained before ModelRecord existed (from the
    shipped foreground model): it loads, says what it said, and predicts what the shipped model predicts."""
    folder = _folder(tmp_path)
    old = json.loads((OLD_FOLDER / "config.json").read_text())
    model = zoo.from_pretrained(folder)
    shipped = zoo.load_model("foreground/scratch")
    assert isinstance(model.record, ModelRecord)
    for key in ("metrics", "val_metrics", "metrics_data", "train_data", "recipe", "machine", "best_epoch"):
        assert getattr(model.record, key) == old[key], key
    assert model.record.config == shipped.record.config
    assert model.record.input_spec == ("digit", (28, 28)) and model.record.source == str(folder)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x)["mask"], shipped(x)["mask"])
    zoo.save_pretrained(model, folder)  # zoo's own folder and card: replaced, and read back the same
    assert zoo.from_pretrained(folder).record.metrics == old["metrics"]


def test_what_a_model_is_comes_from_the_built_model_not_the_file(tmp_path):
    """A record cannot lie about the model it describes: parameters, heads and input are the built model's."""
    config = json.loads((OLD_FOLDER / "config.json").read_text())
    config.update(num_params=5, input={"mode": "keep", "size": None, "channels": 3},
                  heads={"mask": {"class": "Evil", "target": "x", "output": "scalar"}})
    model = zoo.from_pretrained(_folder(tmp_path, config))
    rec = model.record
    assert rec.num_params == sum(p.numel() for p in model.parameters()) != 5
    assert rec.input_spec == ("digit", (28, 28)) and rec.in_channels == 1
    assert rec.head_classes == {"mask": type(model.heads["mask"]).__name__}


def test_keys_a_newer_zoo_wrote_survive_a_load_and_a_save(tmp_path):
    config = json.loads((OLD_FOLDER / "config.json").read_text())
    config["calibration"] = {"temperature": 1.5}
    model = zoo.from_pretrained(_folder(tmp_path, config))
    assert model.record.extra == {"calibration": {"temperature": 1.5}}
    assert model.meta["calibration"] == {"temperature": 1.5}
    out = zoo.save_pretrained(model, tmp_path / "again")
    assert json.loads((out / "config.json").read_text())["calibration"] == {"temperature": 1.5}


@pytest.mark.parametrize("name", zoo.list_pretrained())
def test_a_record_round_trips_through_its_json(name):
    rec = zoo.load_model(name).record
    again = ModelRecord.from_dict(json.loads(json.dumps(rec.to_dict())), "round trip")
    # what the built model says (heads, parameters, input) is not read back: the next build says it again
    assert again.to_dict() == {k: v for k, v in rec.to_dict().items() if k not in ("heads", "num_params", "input")}
    assert again.replace(input_spec=rec.input_spec, head_specs=rec.head_specs, head_classes=rec.head_classes,
                         num_params=rec.num_params) == rec


def _good() -> dict:
    return {"config": {"task": "foreground", "encoder": "scratch"}, "metrics": {"iou": 99.0}}


@pytest.mark.parametrize("change,message", [
    (lambda d: [], "its model record is a list, not a mapping"),
    (lambda d: d.pop("config"), "has no run config with a task and an encoder"),
    (lambda d: d["config"].update(task=3), "has no run config with a task and an encoder"),
    (lambda d: d["config"].update(epochs=-2), "its run config is not valid: .*epochs"),
    (lambda d: d["config"].update(encoder_settings=7), "its run config is not valid"),
    (lambda d: d.update(metrics={"iou": "high"}), "metrics must map names to numbers"),
    (lambda d: d.update(metrics=[1, 2]), "metrics is list .* expected dict"),
    (lambda d: d.update(in_channels="3"), "in_channels is str .* expected int"),
    (lambda d: d.update(best_epoch=True), "best_epoch is bool"),
    (lambda d: d.update(recipe=["rm", "-rf"]), "recipe is list .* expected str"),
])
def test_a_bad_record_is_a_one_line_error_naming_the_file(change, message):
    d = _good()
    replaced = change(d)  # edits d in place, or gives what stands in its place
    d = replaced if isinstance(replaced, list) else d
    with pytest.raises(ValueError, match=message) as err:
        ModelRecord.from_dict(d, "model.safetensors")
    assert str(err.value).startswith("model.safetensors: ") and "\n" not in str(err.value)


def test_a_bad_record_in_a_model_file_stops_load_model_in_one_line(tmp_path):
    state, meta = read_weights(PRETRAINED_DIR / "foreground-scratch.safetensors")
    meta["config"]["epochs"] = "many"
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"zoo": json.dumps(meta)})
    with pytest.raises(ValueError, match=r"bad.safetensors: its run config is not valid"):
        zoo.load_model(path)


OLD_RUN = Path(__file__).parent / "data" / "run_v1"  # a quick run's best.pt + results.json, by zoo before the record


def test_a_checkpoint_written_before_the_record_loads_and_scores_as_its_row_says(tmp_path):
    """The committed best.pt (foreground, scratch width 4, --quick, seed 0) loads with the record of its results
    row beside it, and scores on the test split what that row says the run scored."""
    from zoo.engine.evaluate import evaluate_checkpoint

    run = shutil.copytree(OLD_RUN, tmp_path / "run")  # load_model reads the row beside best.pt
    best = next(run.glob("*/best.pt"))
    row = json.loads((run / "results.json").read_text())["rows"][0]
    model = zoo.load_model(best)
    assert model.record.metrics == {"iou": row["iou"], "iou_dice": row["iou_dice"]}
    assert model.record.recipe == row["command"] and model.record.val_metrics == {"val_iou": row["val_iou"]}
    assert model.record.metrics_data.startswith("MNIST test set: the genuine 256 test digits")
    scored = evaluate_checkpoint(best, data_root=str(Path(__file__).parent.parent / "zoo" / "data" / "mnist"))
    assert scored["iou"] == pytest.approx(row["iou"], abs=1e-3)


def test_a_record_asking_for_sizes_its_weights_lack_is_refused_before_allocating(tmp_path):
    """An edited config.json asking for a 100,000-channel encoder (360 GB of weights) is compared with the
    weights on the meta device and refused in one line, never allocated."""
    config = json.loads((OLD_FOLDER / "config.json").read_text())
    config["config"]["encoder_settings"] = {"input_skip": True, "width": 100000}
    folder = _folder(tmp_path, config)
    with pytest.raises(ValueError, match=r"does not fit the foreground/scratch model its record describes: .*"
                                         r"\(16, 1, 3, 3\) in the weights, \(100000, 1, 3, 3\) in the model"):
        zoo.from_pretrained(folder)
