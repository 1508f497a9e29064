"""Untrusted files and values that used to end in a traceback, a raw library message or a runaway
allocation: each is one line naming the input, through the CLI a user would run."""
from __future__ import annotations

import errno
import json
import time
import warnings

import cv2
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save

from conftest import assert_clear, fill_hub_repo, run_cli, write_folder

import zoo
from zoo.data.__main__ import main as data_cli
from zoo.predict import main as predict_cli

RECURSIVE = "encoders: &a\n  x: *a\n"  # a mapping that contains itself


def data_export(args: list[str], capsys) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = data_cli(["export", *args])
    return rc, capsys.readouterr().err.replace("\n", " ")


def test_a_recursive_alias_in_a_registry_file(tiny_mnist, tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text(RECURSIVE)
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "o"),
                       "--registry", str(f)], capsys)
    assert_clear(rc, err, f"registry file {f}", "a recursive alias")
    rc, err = data_export(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "d"),
                           "--registry", str(f)], capsys)
    assert_clear(rc, err, f"registry file {f}", "a recursive alias")


@pytest.mark.parametrize("flag,value", [("--task-arg", "augment=&a [*a]"),
                                        ("--architecture-arg", "detach=&a [*a]"),
                                        ("--encoder-arg", "width=&a {w: *a}")], ids=["task", "architecture", "encoder"])
def test_a_recursive_alias_in_a_setting_names_the_argument(tiny_mnist, tmp_path, capsys, flag, value):
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path), flag, value],
                      capsys)
    assert_clear(rc, err, f"{flag} {value!r}: cannot parse the value as YAML", "a recursive alias")


def test_data_export_out_must_be_a_folder(tiny_mnist, tmp_path, capsys):
    f = tmp_path / "taken.txt"
    f.write_text("mine")
    rc, err = data_export(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(f)], capsys)
    assert_clear(rc, err, f"--out {f} is a file, not a folder")
    assert f.read_text() == "mine"
    rc, err = data_export(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "d"),
                           "--n", "3"], capsys)
    assert rc == 0 and len(list((tmp_path / "d" / "Masks").glob("*.png"))) == 3, err


def test_an_npz_of_object_arrays_names_the_file_and_array(tmp_path, capsys):
    images = np.empty(3, dtype=object)
    images[:] = [np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), np.zeros((8, 8), np.uint8)]
    path = tmp_path / "ragged.npz"
    np.savez(path, images=images, masks=np.zeros((3, 8, 8), np.uint8))
    rc, err = run_cli(["--task", "npz", "--data-root", str(path), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"{path}: array 'images' holds Python objects (dtype object)", "never unpickles")
    from zoo.predict import main as predict_cli  # predict's FILE.npz:KEY reads arrays the same way

    rc = predict_cli(["foreground/scratch", f"{path}:images", "--out", str(tmp_path / "p")])
    assert_clear(rc, capsys.readouterr().err.replace("\n", " "), f"{path}: array 'images' holds Python objects")


# ----------------------------------------------------------------------------- sizes from untrusted numbers
def test_a_16_bit_mask_value_cannot_make_65536_classes(tmp_path, capsys):
    root = write_folder(tmp_path / "f")
    mask = np.zeros((20, 24), np.uint16)
    mask[0, 0] = 65535
    cv2.imwrite(str(root / "Masks" / "003.png"), mask)
    rc, err = run_cli(["--task", "folder", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"{root / 'Masks' / '003.png'}: its mask value 65535", "makes 65,536 classes",
                 "at most 1,024", "32.0 GiB")
    rc, err = run_cli(["--task", "folder", "--data-root", str(root), "--out", str(tmp_path / "o"),
                       "--task-arg", "num_classes=5000"], capsys)
    assert_clear(rc, err, "num_classes=5000 makes 5,000 classes")
    path = tmp_path / "ids.npz"
    np.savez(path, images=np.zeros((5, 8, 8), np.uint8), masks=np.full((5, 8, 8), 65535, np.uint16))
    rc, err = run_cli(["--task", "npz", "--data-root", str(path), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"{path}: its mask value 65535", "makes 65,536 classes")


def test_experts_that_cannot_fit_are_refused_before_building(tiny_mnist, tmp_path, capsys):
    """The settings alone say the model cannot fit: one line, with nothing built (it took minutes and
    ended out of memory), from the command line and from a model folder's config.json (zoo.predict)."""
    started = time.perf_counter()
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "o"),
                       "--architecture", "cgc", "--architecture-arg", "shared_experts=1000000"], capsys)
    assert_clear(rc, err, "shared_experts=1000000", "4,000,004 experts", "GiB, more than the", "use fewer experts")
    folder = tmp_path / "model"
    zoo.save_pretrained(zoo.create_model("foreground", "scratch", pretrained=True), folder)
    config = json.loads((folder / "config.json").read_text())
    config["config"].update(architecture="cgc", architecture_settings={"shared_experts": 10**7})
    (folder / "config.json").write_text(json.dumps(config))
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((28, 28), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = predict_cli([str(folder), str(tmp_path / "x.png"), "--out", str(tmp_path / "p")])
    assert_clear(rc, capsys.readouterr().err.replace("\n", " "), "shared_experts=10000000", "use fewer experts")
    assert time.perf_counter() - started < 60
    with pytest.raises(ValueError, match="shared_experts=10000000"):
        zoo.build_model("scratch", {"mask": "binary_mask"}, architecture="mmoe",
                        architecture_settings={"shared_experts": 10**7})


def test_a_training_batch_of_one_that_batchnorm_cannot_take(tiny_mnist, tmp_path, capsys):
    """One image that resnet18 reduces to 1x1: a clear error in train mode (the Python API) and before
    the first step (the CLI); two images, larger images or eval mode work."""
    model = zoo.build_model("resnet18", {"mask": "binary_mask"}).train()
    with pytest.raises(ValueError, match=r"a training batch of 1 image of 32x32: .* \(stride 32\) are then 1x1.*"
                                         r"train on batches of 2 or more images .* or call model.eval\(\)"):
        model(torch.rand(1, 1, 32, 32))
    assert model(torch.rand(2, 1, 32, 32))["mask"].shape == (2, 1, 32, 32)
    assert model(torch.rand(1, 1, 64, 64))["mask"].shape == (1, 1, 64, 64)
    assert model.eval()(torch.rand(1, 1, 32, 32))["mask"].shape == (1, 1, 32, 32)
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
                       "--encoder", "resnet18", "--batch-size", "1"], capsys)
    assert_clear(rc, err, "a training batch of 1 image of 28x28", "BatchNorm cannot normalise",
                 "batch size of 2 or more (--batch-size, now 1)")


# ----------------------------------------------------------------------------- weights of another model
def full_state(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model(arch).state_dict().items()}


@pytest.mark.parametrize("arch,expect", [
    ("resnet34", "it holds 96 tensor(s) the model has no place for, e.g. layer1.2.bn1.weight of shape (64,)"),
    ("resnet50", "layer1.0.conv1.weight has shape (64, 64, 1, 1) in the file, but the model expects (64, 64, 3, 3)"),
], ids=["more-blocks", "other-shapes"])
def test_another_models_weights_cached_under_the_tag(hf_cache, tiny_mnist, tmp_path, capsys, arch, expect):
    """resnet34's weights have resnet18's shapes and more blocks: timm loads a features-only model
    non-strictly, so they loaded silently. Now the run stops before training, naming the file."""
    snapshot = fill_hub_repo(hf_cache, "timm/resnet18.a1_in1k", {"model.safetensors": save(full_state(arch))})
    rc, err = run_cli(["--task", "foreground", "--encoder", "resnet18", "--data-root", str(tiny_mnist),
                       "--out", str(tmp_path / "o"), "--encoder-arg", "pretrained=true"], capsys)
    assert_clear(rc, err, f"pretrained weights resnet18.a1_in1k: the file {snapshot / 'model.safetensors'} does not "
                          "fit resnet18", expect)


def test_the_right_weights_still_load_from_the_cache_and_a_file(hf_cache, tmp_path):
    fill_hub_repo(hf_cache, "timm/resnet18.a1_in1k", {"model.safetensors": save(full_state("resnet18"))})
    enc = zoo.load_registry().build("encoders", "resnet18", pretrained=True, out_indices=[0, 1])
    assert torch.equal(enc.model.layer1[0].conv1.weight, full_state("resnet18")["layer1.0.conv1.weight"])
    path = tmp_path / "r18.safetensors"
    path.write_bytes(save(full_state("resnet18")))
    zoo.load_registry().build("encoders", "resnet18", pretrained=str(path))
    features = tmp_path / "features.safetensors"  # a features-only file (what zoo's encoder holds) fits too
    features.write_bytes(save({k: v.contiguous() for k, v in enc.model.state_dict().items()}))
    zoo.load_registry().build("encoders", "resnet18", pretrained=str(features), out_indices=[0, 1])


@pytest.mark.parametrize("arch,into,expect", [
    ("resnet34", "resnet18", "it holds 96 tensor(s) resnet18 has no place for, e.g. layer1.2.bn1.weight of "
                             "shape (64,)"),
    ("resnet18", "resnet34", "it lacks 80 of resnet34's tensors, e.g. layer1.2.conv1.weight of shape (64, 64, 3, 3)"),
], ids=["more-blocks", "fewer-blocks"])
def test_another_models_weights_in_a_local_file(tiny_mnist, tmp_path, capsys, arch, into, expect):
    path = tmp_path / f"{arch}.safetensors"
    path.write_bytes(save(full_state(arch)))
    rc, err = run_cli(["--task", "foreground", "--encoder", into, "--data-root", str(tiny_mnist),
                       "--out", str(tmp_path / "o"), "--encoder-arg", f"pretrained={path}"], capsys)
    assert_clear(rc, err, f"pretrained weights file {path} does not fit {into}", expect)


@pytest.mark.parametrize("fault", [OSError(errno.ENOMEM, "Cannot allocate memory", "run-dir"), MemoryError()],
                         ids=["ENOMEM", "MemoryError"])
def test_out_of_memory_is_not_reported_as_a_disk_fault(tiny_mnist, tmp_path, capsys, monkeypatch, fault):
    """The machine running out of memory while building (simulated: the real case takes minutes) was
    reported as "cannot write <run dir>"."""
    import zoo.bench

    monkeypatch.setattr(zoo.bench, "fit", lambda *a, **k: (_ for _ in ()).throw(fault))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path)], capsys)
    assert_clear(rc, err, "out of memory on this machine", "use smaller settings")
    assert "cannot write" not in err
