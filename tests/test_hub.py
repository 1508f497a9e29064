"""Pretrained timm encoders through a Hugging Face cache the test fills itself (offline: nothing is
downloaded), the normalisation they carry into every export, and Hub-layout zoo model folders."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save
from timm.models import adapt_input_conv

import zoo
from conftest import fill_hub_repo, write_registry
from zoo.bench import main as bench
from zoo.export import main as export_cli
from zoo.predict import main as predict_cli
from zoo.use.hub import push_to_hub

ARCH = "mobilenetv3_small_100"  # the smallest registered timm encoder
TAG = f"{ARCH}.lamb_in1k"  # its one (and default) timm tag
REG = zoo.load_registry()


def timm_weights(cache: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised full timm model's weights, cached where timm looks for TAG's weights."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(ARCH).state_dict().items()}
    config = {"architecture": ARCH, "num_classes": 1000, "pretrained_cfg": {"tag": TAG.split(".")[1]}}
    fill_hub_repo(cache, f"timm/{TAG}", {"model.safetensors": save(state), "config.json": json.dumps(config).encode()})
    return state


def cli(main, args: list[str], capsys) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(args)
    return rc, capsys.readouterr().err.replace("\n", " ")


def one_line_error(rc: int, err: str, *expect: str) -> None:
    assert rc == 2 and "Traceback" not in err and "error:" in err, err
    for e in expect:
        assert e in err, (e, err)
    assert "epoch 1/" not in err


@pytest.mark.parametrize("pretrained", [True, "true", TAG])
def test_pretrained_true_loads_exactly_the_cached_weights_offline(hf_cache, pretrained):
    assert constants.HF_HUB_OFFLINE  # conftest: nothing can be downloaded
    src = timm_weights(hf_cache)
    enc = REG.build("encoders", ARCH, in_channels=1, pretrained=pretrained)
    got = enc.model.state_dict()
    # every feature tensor is the cached one; the stem is timm's 1-channel adaptation of it
    assert torch.equal(got["conv_stem.weight"], adapt_input_conv(1, src["conv_stem.weight"]))
    assert got["conv_stem.weight"].shape[1] == 1
    for k, v in got.items():
        if k != "conv_stem.weight":
            assert torch.equal(v, src[k]), k
    reference = timm.create_model(TAG, pretrained=True, features_only=True, in_chans=1).state_dict()
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    mean, std = timm.models.get_pretrained_cfg(TAG).mean, timm.models.get_pretrained_cfg(TAG).std
    assert enc.normalization["mean"] == pytest.approx([sum(mean) / 3])
    assert enc.normalization["std"] == pytest.approx([sum(std) / 3])
    rgb = REG.build("encoders", ARCH, in_channels=3, pretrained=pretrained)
    assert torch.equal(rgb.model.state_dict()["conv_stem.weight"], src["conv_stem.weight"])
    assert rgb.normalization["mean"] == pytest.approx(list(mean))
    assert rgb.normalization["std"] == pytest.approx(list(std))


def test_a_local_file_gets_timm_input_conv_adaptation_and_its_stated_normalisation(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model("resnet18")
    path = tmp_path / "r18.safetensors"
    path.write_bytes(save({k: v.contiguous() for k, v in full.state_dict().items()}))
    enc = REG.build("encoders", "resnet18", pretrained=str(path))
    assert torch.equal(enc.model.conv1.weight, adapt_input_conv(1, full.conv1.weight))
    assert torch.equal(enc.model.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
    # a local file's origin is unknown: no normalisation is guessed (older runs of it keep resuming)
    assert enc.normalization is None and "input_mean" not in enc.state_dict()
    enc = REG.build("encoders", "resnet18", pretrained=str(path), mean=[0.485, 0.456, 0.406], std=0.25)
    assert enc.normalization["mean"] == pytest.approx([0.449]) and enc.normalization["std"] == [0.25]
    x = torch.rand(2, 1, 32, 32)
    m, s = enc.input_mean, enc.input_std
    assert all(torch.equal(a, b) for a, b in zip(enc(x), enc.model((x - m) / s)))  # applied in forward
    # from random weights (and the scratch encoder) inputs stay as they are
    assert REG.build("encoders", "resnet18").normalization is None
    assert REG.build("encoders", "scratch").normalization is None
    assert "encoder.input_mean" not in zoo.create_model("foreground", "scratch", pretrained=True).state_dict()


def test_a_trained_pretrained_model_normalises_in_predict_and_onnx(hf_cache, tiny_mnist, tmp_path, capsys):
    """The user's path: train on timm's cached weights, save the run as a Hub folder, predict and export
    from the folder; onnxruntime equals PyTorch, normalisation included."""
    import onnxruntime as ort

    timm_weights(hf_cache)
    out = tmp_path / "runs"
    rc, err = cli(bench, ["--task", "foreground", "--encoder", ARCH, "--encoder-arg", "pretrained=true",
                          "--data-root", str(tiny_mnist), "--epochs", "1", "--train-limit", "40", "--test-limit", "20",
                          "--out", str(out), "--quiet", "--no-figures", "--no-speed"], capsys)
    assert rc == 0, err
    ckpt = next(out.glob("foreground-*/best.pt"))
    shutil.rmtree(hf_cache)  # the checkpoint holds every weight: scoring and loading it fetch nothing
    hf_cache.mkdir()
    from zoo.engine.evaluate import evaluate_checkpoint

    assert evaluate_checkpoint(ckpt, "test")["iou"] == pytest.approx(
        json.loads((out / "results.json").read_text())["rows"][0]["iou"], abs=1e-3)
    model = zoo.load_model(ckpt)
    assert model.encoder.normalization is not None
    assert model.meta["metrics"] and model.meta["recipe"].startswith("python -m zoo.bench")  # the results row's
    folder = tmp_path / "hub-model"
    rc, err = cli(export_cli, [str(ckpt), "--format", "hub", "--out", str(folder)], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "library_name: zoo" in card and f"| iou | {model.meta['metrics']['iou']:.2f} |" in card
    assert model.meta["machine"] in card
    # the recipe, with its paths as names: a folder is published as it is, never with this machine's paths
    assert f"--data-root {tiny_mnist.name} " in card and "--test-limit 20" in card
    for name in ("README.md", "config.json"):
        assert str(tmp_path) not in (folder / name).read_text(), f"{name} publishes a local path"
    loaded = zoo.from_pretrained(folder)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), loaded(x).values()))
    onnx = tmp_path / "m.onnx"
    rc, err = cli(export_cli, [str(folder), "--format", "onnx", "--out", str(onnx)], capsys)
    assert rc == 0, err
    got = ort.InferenceSession(str(onnx)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = list(loaded(x).values())
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4)
    image = tmp_path / "digit.png"
    import cv2

    cv2.imwrite(str(image), (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8))
    rc, err = cli(predict_cli, [str(folder), str(image), "--out", str(tmp_path / "pred")], capsys)
    assert rc == 0, err
    assert (tmp_path / "pred" / "predictions.json").is_file()


@pytest.mark.parametrize("case,expect", [
    ("empty-cache", ["not in the Hugging Face cache", "HF_HUB_OFFLINE=1", f"hf download timm/{TAG}"]),
    ("unknown-tag", ["is not a timm tag of this encoder", TAG]),
    ("corrupt-cache", ["is not readable safetensors", "delete it and fetch it again"]),
    ("scratch", ["the scratch encoder has no published weights"]),
])
def test_bad_pretrained_settings_are_one_line_before_any_data(hf_cache, tmp_path, capsys, case, expect):
    encoder, value = ARCH, "true"
    if case == "unknown-tag":
        value = f"{ARCH}.no_such_tag"
    elif case == "corrupt-cache":
        timm_weights(hf_cache)
        blob = next(hf_cache.rglob("model.safetensors"))
        blob.write_bytes(blob.read_bytes()[: 5000])
    elif case == "scratch":
        encoder = "scratch"
    # the data root does not exist: the pretrained error must come first
    rc, err = cli(bench, ["--task", "foreground", "--encoder", encoder, "--encoder-arg", f"pretrained={value}",
                          "--data-root", str(tmp_path / "no-data"), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    one_line_error(rc, err, *expect)
    assert "no-data" not in err


def test_save_from_pretrained_round_trip_keeps_outputs_and_record(tmp_path):
    model = zoo.create_model("circlization", "scratch", pretrained=True)
    folder = zoo.save_pretrained(model, tmp_path / "m")
    zoo.save_pretrained(model, folder)  # a zoo folder is replaced whole
    loaded = zoo.from_pretrained(folder)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), loaded(x).values()))
    for key in ("config", "info", "metrics", "recipe", "machine", "train_data", "best_epoch"):
        assert loaded.meta[key] == model.meta[key], key
    card = (folder / "README.md").read_text()
    assert "| accuracy | 99.47 |" in card and "| gated_iou | 99.21 |" in card and model.meta["recipe"] in card
    again = zoo.create_model("circlization", "scratch", pretrained=folder)
    assert torch.equal(again.state_dict()["encoder.blocks.0.0.weight"], model.state_dict()["encoder.blocks.0.0.weight"])


def test_hf_hub_names_load_from_a_filled_cache_offline(hf_cache, tmp_path, capsys):
    folder = zoo.save_pretrained(zoo.create_model("foreground", "scratch", pretrained=True), tmp_path / "m")
    fill_hub_repo(hf_cache, "acme/digit-masks", {p.name: p.read_bytes() for p in folder.iterdir()})
    model = zoo.from_pretrained("hf-hub:acme/digit-masks")
    assert model.meta["metrics"] == zoo.pretrained_meta("foreground/scratch")["metrics"]
    image = tmp_path / "digit.png"
    import cv2

    cv2.imwrite(str(image), (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8))
    rc, err = cli(predict_cli, ["hf-hub:acme/digit-masks", str(image), "--out", str(tmp_path / "pred")], capsys)
    assert rc == 0, err
    rc, err = cli(predict_cli, ["hf-hub:acme/not-cached", str(image), "--out", str(tmp_path / "p2")], capsys)
    one_line_error(rc, err, "hf-hub:acme/not-cached", "not in the Hugging Face cache", "hf download acme/not-cached")


def test_a_folder_never_names_the_registry_files_that_load_it(tmp_path):
    """A registry file names code to import and call: a downloaded folder's config cannot choose one."""
    folder = zoo.save_pretrained(zoo.create_model("foreground", "scratch", pretrained=True), tmp_path / "m")
    evil = write_registry(tmp_path, {"tasks": {"evil": {"target": "os:system"}}}, "evil.yaml")
    config = json.loads((folder / "config.json").read_text())
    _edit_config(folder, task="evil", config={**config["config"], "task": "evil", "registry": [str(evil)],
                                              "task_settings": {"command": "touch " + str(tmp_path / "pwned")}})
    with pytest.raises(zoo.RegistryError, match="unknown task 'evil'.*trained with the registry file"):
        zoo.from_pretrained(folder)
    assert not (tmp_path / "pwned").exists()


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("case,expect", [
    ("no-config", "has no config.json: not a zoo model folder"),
    ("run-folder", "a run folder's model is RUN/best.pt"),
    ("other-format", "is zoo model format 99"),
    ("other-library", "not a zoo model config"),
    ("unknown-task", "unknown task 'cubism'"),
    ("not-json", "is not valid JSON"),
    ("corrupt-weights", "is not readable safetensors"),
    ("other-weights", "does not fit the circlization/scratch model"),
    ("bad-hub-name", "a hub model is named hf-hub:ORG/NAME"),
])
def test_bad_model_folders_are_one_line(tmp_path, capsys, case, expect):
    folder = zoo.save_pretrained(zoo.create_model("circlization", "scratch", pretrained=True), tmp_path / "m")
    name = str(folder)
    if case in ("no-config", "run-folder"):
        (folder / "config.json").unlink()
        if case == "run-folder":
            (folder / "best.pt").write_bytes(b"")
    elif case == "other-format":
        _edit_config(folder, zoo_format=99, zoo_version="9.0")
    elif case == "other-library":
        _edit_config(folder, library_name="transformers")
    elif case == "unknown-task":
        _edit_config(folder, task="cubism", config={**json.loads((folder / "config.json").read_text())["config"],
                                                    "task": "cubism"})
    elif case == "not-json":
        (folder / "config.json").write_text("{not json")
    elif case == "corrupt-weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 40)
    elif case == "other-weights":
        other = zoo.save_pretrained(zoo.create_model("foreground", "scratch", pretrained=True), tmp_path / "f")
        shutil.copy(other / "model.safetensors", folder / "model.safetensors")
    elif case == "bad-hub-name":
        name = "hf-hub:no-slash"
    rc, err = cli(export_cli, [name, "--format", "onnx", "--out", str(tmp_path / "m.onnx")], capsys)
    one_line_error(rc, err, expect)


def test_save_pretrained_refuses_what_it_would_lose(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    model = zoo.create_model("foreground", "scratch", pretrained=True)
    with pytest.raises(ValueError, match="is not a zoo model folder"):
        zoo.save_pretrained(model, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="needs a zoo model with its record"):
        zoo.save_pretrained(zoo.build_model("scratch", {"mask": "binary_mask"}), tmp_path / "bare")
    with pytest.raises(zoo.RegistryError, match="holds a foreground/scratch model, not circlization/scratch"):
        zoo.create_model("circlization", "scratch", pretrained=zoo.save_pretrained(model, tmp_path / "fg"))


def test_push_to_hub_uploads_the_folder_through_huggingface_hub(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload(self, repo_id, folder_path, **kw):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return "https://huggingface.co/acme/m/commit/abc"

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    model = zoo.create_model("foreground", "scratch", pretrained=True)
    assert push_to_hub(model, "acme/m") == "https://huggingface.co/acme/m/commit/abc"
    assert calls[0][:2] == ("create", "acme/m") and calls[0][2]["exist_ok"]
    assert calls[1] == ("upload", "acme/m", ["README.md", "config.json", "model.safetensors"])


def test_push_to_hub_offline_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"push_to_hub acme/m: .*offline"):
        push_to_hub(zoo.create_model("foreground", "scratch", pretrained=True), "acme/m")
    with pytest.raises(ValueError, match="repo_id must be ORG/NAME"):
        push_to_hub(tmp_path, "no-slash")
