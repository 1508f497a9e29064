"""Model files and folders are untrusted input: loading never imports a registry a file names, never
reads a linked file outside the folder, and writing never loses a user's file or leaves an export that
breaks once copied."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from conftest import write_registry
from zoo.engine.evaluate import evaluate_checkpoint
from zoo.export import exported_files, main as export_cli
from zoo.predict import main as predict_cli
from zoo.use.pretrained import PRETRAINED_DIR, pretrained_meta

# A module that leaves a marker when imported: a registry that names it would run it
EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("ran")
class Evil:
    pass
"""


def cli(main, args: list[str], capsys) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(args)
    return rc, capsys.readouterr().err.replace("\n", " ")


@pytest.fixture
def evil(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A registry file whose task ``evil`` names importable code, and the marker that code would write."""
    marker = tmp_path / "pwned"
    code = tmp_path / "code"
    code.mkdir()
    (code / "evilmod.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(code))
    registry = write_registry(tmp_path, {"tasks": {"evil": {"target": "evilmod:Evil"}}}, "evil.yaml")
    return registry, marker


def _evil_meta(registry: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The shipped foreground model's weights, with a record naming task ``evil`` and ``registry``."""
    from zoo.engine.checkpoint import read_weights

    state, meta = read_weights(PRETRAINED_DIR / pretrained_meta("foreground/scratch")["file"])
    meta["config"] = {**meta["config"], "task": "evil", "registry": [str(registry)]}
    return state, meta


def _model_file(kind: str, registry: Path, folder: Path) -> Path:
    state, meta = _evil_meta(registry)
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = folder / "evil.safetensors"
        save_file(state, str(path), metadata={"zoo": json.dumps(meta)})
    elif kind == "checkpoint":
        path = folder / "run" / "best.pt"
        path.parent.mkdir()
        torch.save({"model": state, "epoch": 1, "config": meta["config"], "info": meta.get("info", {})}, path)
    else:  # a model folder
        path = zoo.save_pretrained(zoo.create_model("foreground", "scratch", pretrained=True), folder / "m")
        config = json.loads((path / "config.json").read_text())
        config.update(task="evil", config={**config["config"], "task": "evil", "registry": [str(registry)]})
        (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("kind", ["safetensors", "checkpoint", "folder"])
@pytest.mark.parametrize("how", ["load_model", "predict", "export", "evaluate_checkpoint", "create_model"])
def test_no_loading_path_imports_the_registry_a_model_names(tmp_path, evil, capsys, kind, how):
    """The registry a model file or folder names is never read: nothing it names runs, and the error says
    which registry the model was trained with and how to give it, if trusted."""
    registry, marker = evil
    path = _model_file(kind, registry, tmp_path)
    if how == "load_model":
        with pytest.raises(zoo.RegistryError, match="unknown task 'evil'.*trained with the registry file"):
            zoo.load_model(path)
    elif how in ("predict", "export"):
        image = tmp_path / "x.png"
        import cv2

        cv2.imwrite(str(image), np.zeros((28, 28), np.uint8))
        args = ([str(path), str(image), "--out", str(tmp_path / "pred")] if how == "predict" else
                [str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
        rc, err = cli(predict_cli if how == "predict" else export_cli, args, capsys)
        assert rc == 2 and "Traceback" not in err and "unknown task 'evil'" in err and "--registry" in err, err
    elif how == "evaluate_checkpoint":
        if kind == "folder":
            pytest.skip("evaluate_checkpoint scores a model file")
        with pytest.raises(zoo.RegistryError, match="unknown task 'evil'"):
            evaluate_checkpoint(path, "test")
    else:
        with pytest.raises(zoo.RegistryError, match="unknown task 'evil'"):
            zoo.create_model("evil", "scratch", pretrained=path)
    assert not marker.exists(), "a model file made zoo import code"


def test_a_registry_the_caller_gives_is_read(tmp_path, evil):
    """The control for the test above: the same file with the registry given by the caller does import it
    (so the marker would show a leak)."""
    registry, marker = evil
    path = _model_file("safetensors", registry, tmp_path)
    with pytest.raises(Exception):  # Evil is no task; what matters is that its module was imported
        zoo.load_model(path, registry_files=[registry])
    assert marker.exists()


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_link_out_of_a_model_folder_is_refused(tmp_path, capsys, name):
    """A folder's file that links outside it is refused by name (as COCO's file_name); one that links
    inside the folder is followed."""
    folder = zoo.save_pretrained(zoo.create_model("foreground", "scratch", pretrained=True), tmp_path / "m")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(folder / name, outside / name)
    (folder / name).symlink_to(outside / name)
    rc, err = cli(export_cli, [str(folder), "--format", "onnx", "--out", str(tmp_path / "m.onnx")], capsys)
    assert rc == 2 and "Traceback" not in err and f"{name} is a link to" in err and "outside the model folder" in err
    with pytest.raises(ValueError, match="outside the model folder"):
        zoo.from_pretrained(folder)
    (folder / name).unlink()
    (folder / "inside").mkdir()
    shutil.move(outside / name, folder / "inside" / name)
    (folder / name).symlink_to(Path("inside") / name)
    assert zoo.from_pretrained(folder).meta["config"]["task"] == "foreground"


@pytest.mark.parametrize("mine", ["README.md", "edited-card", "notes.txt"])
def test_export_hub_never_writes_over_a_users_file(tmp_path, capsys, mine):
    """A folder that holds a user's README (alone, or an edited model card) or any other file is refused,
    and every file in it is kept; a zoo model folder zoo wrote is replaced."""
    folder = tmp_path / "out"
    if mine == "edited-card":
        zoo.save_pretrained(zoo.create_model("foreground", "scratch", pretrained=True), folder)
        card = folder / "README.md"
        card.write_text(card.read_text() + "\nMy own notes on this model.\n")
    else:
        folder.mkdir()
        (folder / mine).write_text("# my project\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rc, err = cli(export_cli, ["circlization/scratch", "--format", "hub", "--out", str(folder)], capsys)
    assert rc == 2 and "Traceback" not in err and "is not a zoo model folder to replace" in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    fresh = tmp_path / "fresh"
    assert cli(export_cli, ["foreground/scratch", "--format", "hub", "--out", str(fresh)], capsys)[0] == 0
    rc, err = cli(export_cli, ["circlization/scratch", "--format", "hub", "--out", str(fresh)], capsys)
    assert rc == 0, err
    assert zoo.from_pretrained(fresh).meta["config"]["task"] == "circlization"


@pytest.mark.parametrize("external", [False, True], ids=["one-file", "external-data"])
def test_an_onnx_export_runs_after_its_listed_files_are_copied_elsewhere(tmp_path, capsys, monkeypatch, external):
    """What the command lists is the whole export: copied to another folder (the original deleted), it runs
    in onnxruntime and equals PyTorch. Over 2 GB the weights go to FILE.data, named after the final file."""
    import onnxruntime as ort

    import zoo.export as export_module

    if external:
        monkeypatch.setattr(export_module, "ONNX_INLINE_BYTES", 0)  # as a model over ONNX's 2 GB would
    here = tmp_path / "here"
    here.mkdir()
    out = here / "c.onnx"
    for _ in range(2):  # a re-export leaves no orphan
        rc, err = cli(export_cli, ["circlization/scratch", "--format", "onnx", "--out", str(out)], capsys)
        assert rc == 0, err
    files = exported_files(out)
    assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in files)
    assert [p.name for p in files] == (["c.onnx", "c.onnx.data", "c.onnx.json"] if external else
                                       ["c.onnx", "c.onnx.json"])
    assert all(str(p) in err for p in files) if external else "c.onnx.json" in err
    there = tmp_path / "there"
    there.mkdir()
    for p in files:
        shutil.copy(p, there / p.name)
    shutil.rmtree(here)
    model = zoo.load_model("circlization/scratch")
    x = torch.rand(3, 1, 28, 28)
    got = ort.InferenceSession(str(there / "c.onnx")).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = list(model(x).values())
    for g, w in zip(got, want):
        assert np.allclose(g, w.numpy(), atol=1e-4)
