"""Every bad input of the design issue, driven through the CLI as a user would: exit code 2, one
clear line naming the bad thing, no traceback, and nothing trained."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import make_mnist, write_idx
from test_datasets_ext import write_coco, write_folder

from zoo.bench import main


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main([*args, "--quiet", "--no-figures"])
    err = capsys.readouterr().err.replace("\n", " ")
    return rc, err


def assert_clear(rc: int, err: str, *expect: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    assert "error:" in err, err
    message = err[err.index("error:"):]
    for e in expect:
        assert e in message, (e, err)
    assert "epoch 1/" not in err, "the error must come before the first training step"


# ----------------------------------------------------------------------------- run options
@pytest.mark.parametrize("args,expect", [
    (["--train-limit", "0"], ["train limit must be an integer >= 1", "got 0"]),
    (["--train-limit", "-5"], ["train limit must be an integer >= 1", "got -5"]),
    (["--test-limit", "-5"], ["test limit must be an integer >= 1", "got -5"]),
    (["--seed", "-1"], ["seed must be an integer from 0 to 4294967295", "got -1"]),
    (["--seed", str(2**70)], ["seed must be an integer from 0 to 4294967295", f"got {2**70}"]),
    (["--lr", "inf"], ["learning rate must be a finite number > 0", "got inf"]),
    (["--lr", "nan"], ["learning rate must be a finite number > 0", "got nan"]),
    (["--weight-decay", "inf"], ["weight decay must be a finite number >= 0", "got inf"]),
    (["--weighting-arg", "weights=[1, 2]"], ["--weighting-arg weights=...", "come from the task's heads"]),
    (["--weighting-arg", "names=[a]"], ["--weighting-arg names=...", "come from the task's heads"]),
    (["--task-arg", "colour=3"], ["unknown setting(s) 'colour'", "valid: augment"]),
    (["--task-arg", "augment={spin: 3}"], ["augment: unknown setting(s) 'spin'", "valid: shift, rotate"]),
    (["--encoder-arg", "widht=8"], ["unknown setting(s) 'widht'", "valid: in_channels, width"]),
    (["--task-arg", "nokey"], ["--task-arg: expected KEY=VALUE", "'nokey'"]),
    (["--encoder-arg", "width=100000"], ["encoder 'scratch' with settings", "parameters: training needs at least",
                                         "use smaller settings"]),
])
def test_bad_run_options(tiny_mnist, tmp_path, capsys, args, expect):
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path), *args], capsys)
    assert_clear(rc, err, *expect)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("arg,expect", [
    ("train_size=abc", "train_size must be an integer >= 1"),
    ("test_size=0", "test_size must be an integer >= 1"),
    ("labelling=blobs", "labelling must be one of pixel, region"),
])
def test_bad_task_arg_type_with_quick(tiny_mnist, tmp_path, capsys, arg, expect):
    rc, err = run_cli(["--task", "semantic", "--quick", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
                       "--task-arg", arg], capsys)
    assert_clear(rc, err, expect)


def test_out_that_is_a_file_or_not_writable(tiny_mnist, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", str(f)], capsys)
    assert_clear(rc, err, f"--out {f} is a file")
    rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", str(f / "sub")], capsys)
    assert_clear(rc, err, f"--out {f / 'sub'} is not writable")
    if os.geteuid() != 0:  # a read-only folder (root writes anywhere)
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", str(ro)], capsys)
        assert_clear(rc, err, f"--out {ro} is not writable")
    if Path("/sys").is_dir():  # read-only for everyone, root included
        rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", "/sys/zoo-out"],
                          capsys)
        assert_clear(rc, err, "--out /sys/zoo-out is not writable")


def test_quick_without_quick_budget_is_an_error(tiny_mnist, tmp_path, capsys):
    reg = tmp_path / "r.yaml"
    reg.write_text("tasks:\n  fg_noquick:\n    target: zoo.tasks.mnist:ForegroundTask\n    heads:\n"
                   "      mask: {head: binary_mask, loss: bce, target: mask}\n"
                   "    metrics:\n      iou: {metric: iou, head: mask, target: mask}\n"
                   "    budget: {epochs: 50}\n")
    rc, err = run_cli(["--registry", str(reg), "--task", "fg_noquick", "--quick", "--data-root", str(tiny_mnist),
                       "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "task 'fg_noquick' has no quick budget")


def test_quick_budget_inherits_the_default_budget():
    from zoo.runs.plan import budget_of
    from zoo.engine.build import load_registry, task_spec

    spec = task_spec("foreground", load_registry())
    quick = budget_of(spec, quick=True)
    assert quick["lr"] == spec.budget["lr"] == 0.006 and quick["epochs"] == spec.quick["epochs"]
    assert quick["encoder_settings"] == spec.budget["encoder_settings"]


ENC_BUDGET_TASK = ("tasks:\n  fg_enc:\n    target: zoo.tasks.mnist:ForegroundTask\n    heads:\n"
                   "      mask: {head: binary_mask, loss: bce, target: mask}\n"
                   "    metrics:\n      iou: {metric: iou, head: mask, target: mask}\n"
                   "    budget: {epochs: 1, batch_size: 32, train_limit: 64, test_limit: 64}\n"
                   "    quick: {epochs: 1, train_limit: 32}\n"
                   "    encoder_budgets: %s\n")


@pytest.mark.parametrize("budgets,expect", [
    ("{scrach: {epochs: 2}}", ["encoder_budgets", "'scrach'"]),
    ("{scratch: {epoch: 2}}", ["unknown budget setting(s) ['epoch']", "valid:"]),
    ("{scratch: 2}", ["encoder_budgets.scratch: must be a non-empty mapping of budget settings", "got 2"]),
    ("[scratch]", ["field 'encoder_budgets' must be a mapping"]),
])
def test_bad_encoder_budgets(tiny_mnist, tmp_path, capsys, budgets, expect):
    reg = tmp_path / "r.yaml"
    reg.write_text(ENC_BUDGET_TASK % budgets)
    rc, err = run_cli(["--registry", str(reg), "--task", "fg_enc", "--encoder", "scratch", "--data-root", str(tiny_mnist),
                       "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, *expect)
    assert not (tmp_path / "o" / "results.json").exists()


def test_an_encoder_budget_applies_to_that_encoder_only(tiny_mnist, tmp_path, capsys):
    """scratch's own entry trains it 2 epochs; the task's budget (1 epoch) stays for every other encoder,
    and --quick still lays the quick budget over the encoder's."""
    from zoo.runs.plan import budget_of
    from zoo.engine.build import load_registry, task_spec

    reg = tmp_path / "r.yaml"
    reg.write_text(ENC_BUDGET_TASK % "{scratch: {epochs: 2, lr: 0.01}}")
    spec = task_spec("fg_enc", load_registry([reg]))
    assert budget_of(spec, False, "scratch") == {**spec.budget, "epochs": 2, "lr": 0.01}
    assert budget_of(spec, False, "resnet18") == budget_of(spec, False) == spec.budget
    assert budget_of(spec, True, "scratch") == {**spec.budget, "lr": 0.01, "epochs": 1, "train_limit": 32}
    rc, err = run_cli(["--registry", str(reg), "--task", "fg_enc", "--encoder", "scratch", "--encoder-arg", "width=4",
                       "--data-root", str(tiny_mnist), "--out", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    (row,) = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    assert row["epochs"] == 2 and "epoch 2/2" in err


@pytest.mark.parametrize("change,expect", [
    (["--encoder-arg", "width=8"], "encoder_settings: {'width': 4} in the checkpoint, {'width': 8} now"),
    (["--encoder-arg", "width=4", "--weighting", "uncertainty"], "weighting: 'fixed' in the checkpoint, 'uncertainty'"),
    (["--encoder-arg", "width=4", "--epochs", "3"], "epochs: 1 in the checkpoint, 3 now"),
])
def test_resume_with_other_settings_is_refused(tiny_mnist, tmp_path, capsys, change, expect):
    base = ["--task", "circlization", "--data-root", str(tiny_mnist), "--out", str(tmp_path), "--epochs", "1",
            "--batch-size", "16", "--train-limit", "32", "--test-limit", "16"]
    assert run_cli([*base, "--encoder-arg", "width=4"], capsys)[0] == 0
    last = next(tmp_path.glob("*/last.pt"))
    args = [a for a in base if a not in ("--epochs", "1")] + (["--epochs", "1"] if "--epochs" not in change else [])
    rc, err = run_cli([*args, *change, "--resume", str(last)], capsys)
    assert_clear(rc, err, f"checkpoint {last} is from another run", expect)


def test_resume_from_best_pt_is_refused_and_best_pt_is_the_model_only(tiny_mnist, tmp_path, capsys):
    """best.pt is the trained model (no AdamW moments: a third of last.pt's weight bytes); only
    last.pt continues training, and --resume best.pt says so before any step."""
    args = ["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path), "--epochs", "1",
            "--batch-size", "16", "--train-limit", "32", "--test-limit", "16", "--encoder-arg", "width=4"]
    assert run_cli(args, capsys)[0] == 0
    run = next(tmp_path.glob("foreground-*"))
    best, last = (torch.load(run / f, weights_only=True) for f in ("best.pt", "last.pt"))
    assert "optimizer" not in best and "scheduler" not in best and "optimizer" in last
    assert (run / "best.pt").stat().st_size < (run / "last.pt").stat().st_size
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())  # one epoch: best = last
    rc, err = run_cli([*args, "--resume", str(run / "best.pt")], capsys)
    assert_clear(rc, err, f"checkpoint {run / 'best.pt'} holds the trained model only", "resume from the run's last.pt")


# ----------------------------------------------------------------------------- MNIST files
def test_mnist_train_and_test_of_different_sizes(tmp_path, capsys):
    root = make_mnist(tmp_path / "m")
    write_idx(root / "train-images-idx3-ubyte", np.zeros((200, 20, 20), np.uint8))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "holds 20x20 images", "holds 28x28", "must have one size")


def test_mnist_images_too_small_for_the_tasks(tmp_path, capsys):
    """1x1-pixel digits gave a NaN test IoU and exit 0."""
    root = make_mnist(tmp_path / "m")
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 255, (200, 1, 1)).astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 255, (60, 1, 1)).astype(np.uint8))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "are 1x1 pixels; the digit tasks need at least 8x8")


@pytest.mark.parametrize("split,file", [("train", "train-images-idx3-ubyte"), ("test", "t10k-images-idx3-ubyte")])
def test_mnist_with_no_foreground_at_all(tmp_path, capsys, split, file):
    """All-black digits used to train with a NaN validation IoU at every epoch (a checkpoint picked on
    NaN) and exit 0; now one line names the split and the files."""
    root = make_mnist(tmp_path / "m")
    n = 200 if split == "train" else 60
    write_idx(root / file, np.zeros((n, 28, 28), np.uint8))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"MNIST {split} digits", "has a foreground pixel", "the digit tasks need images with strokes")


# ----------------------------------------------------------------------------- npz
@pytest.mark.parametrize("masks,expect", [
    (np.full((10, 8, 8), 0.5), "masks hold fractional values (e.g. 0.5"),
    (np.where(np.eye(8)[None].repeat(10, 0) > 0, np.nan, 0.0), "masks hold 80 NaN/inf value(s)"),
    (np.full((10, 8, 8), -1, np.int32), "mask values -1..-1 are outside 0..65535"),
    (np.full((10, 8, 8), 300, np.int32), "masks hold values 300..300, outside 0..3"),
])
def test_npz_masks_never_wrap_or_truncate(tmp_path, capsys, masks, expect):
    f = tmp_path / "d.npz"
    np.savez(f, images=np.zeros((10, 8, 8), np.uint8), masks=masks)
    rc, err = run_cli(["--task", "npz", "--data-root", str(f), "--out", str(tmp_path / "o"), "--task-arg",
                       "num_classes=4"], capsys)
    assert_clear(rc, err, str(f), expect)


def test_npz_auto_classes_with_a_stray_value_warns_not_wraps(tmp_path):
    from zoo.data.config import DataConfig
    from zoo.tasks.npz import NpzTask

    masks = np.zeros((10, 8, 8), np.int32)
    masks[:, :4] = 1
    masks[3, 0, 0] = 300  # a uint8 cast would make it 44
    np.savez(tmp_path / "d.npz", images=np.zeros((10, 8, 8), np.uint8), masks=masks)
    with pytest.warns(UserWarning, match=r"found 301 classes because the masks hold the value 300.*\[2, 3, 4"):
        data = NpzTask().datasets(DataConfig(root=str(tmp_path / "d.npz")))
    assert data.num_classes == 301
    assert max(int(data.train["main"][i]["mask"].max()) for i in range(len(data.train["main"]))) in (1, 300)


def test_npz_zero_d_array(tmp_path, capsys):
    f = tmp_path / "d.npz"
    np.savez(f, images=np.zeros((4, 8, 8)), masks=np.array(3))
    rc, err = run_cli(["--task", "npz", "--data-root", str(f), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "array 'masks' is a 0-d scalar")


# ----------------------------------------------------------------------------- folder
@pytest.mark.parametrize("size", ["[0, 0]", "[32]", "[32, -4]", "abc"])
@pytest.mark.parametrize("task", ["folder", "pets", "coco", "npz"])
def test_bad_size(tmp_path, capsys, task, size):
    rc, err = run_cli(["--task", task, "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), "--task-arg",
                       f"size={size}"], capsys)
    assert_clear(rc, err, "size must be [H, W] with two integers >= 1")


def test_folder_images_of_different_sizes_suggest_size(tmp_path, capsys):
    r = write_folder(tmp_path / "f")
    for i in (0, 2, 4):  # half the images 30x30: the 4 training images hold both sizes
        cv2.imwrite(str(r / "Images" / f"{i:03d}.png"), np.zeros((30, 30), np.uint8))
        cv2.imwrite(str(r / "Masks" / f"{i:03d}.png"), np.zeros((30, 30), np.uint8))
    rc, err = run_cli(["--task", "folder", "--data-root", str(r), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "images differ in size", "--task-arg 'size=[H, W]'")


@pytest.mark.parametrize("which", ["val", "test"])
def test_unreadable_val_or_test_image_is_found_before_training(tmp_path, capsys, which):
    from zoo.data.split import split_items
    from zoo.data.folder import find_pairs

    r = write_folder(tmp_path / "f", n=10)
    train, val, test = split_items(find_pairs(r), 0.1, 0.2, 0, "images")
    bad = (val if which == "val" else test)[0].image
    bad.write_bytes(b"not a png")
    rc, err = run_cli(["--task", "folder", "--data-root", str(r), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"{bad}: cannot read the image")


def test_folder_auto_classes_with_a_stray_value_warns(tmp_path):
    from zoo.data.config import DataConfig
    from zoo.tasks.folder import FolderTask

    r = write_folder(tmp_path / "f", n=6, classes=2)  # masks hold {0, 1}
    m = cv2.imread(str(r / "Masks" / "004.png"), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 9
    cv2.imwrite(str(r / "Masks" / "004.png"), m)
    with pytest.warns(UserWarning, match=r"found 10 classes because .*004.png holds the value 9.*\[2, 3, 4, 5, 6, 7, 8\]"):
        FolderTask().datasets(DataConfig(root=str(r)))


def test_renamed_folder_head_gets_the_data_classes(tmp_path, capsys):
    """The data's class count goes to the head that predicts classes, whatever its name (it was
    keyed by the hard-coded name 'seg': a renamed head silently got 11 classes)."""
    r = write_folder(tmp_path / "f", n=8, classes=5)
    reg = tmp_path / "r.yaml"
    reg.write_text("tasks:\n  parts:\n    target: zoo.tasks.folder:FolderTask\n    heads:\n"
                   "      parts: {head: segmentation, loss: ce_dice, target: mask}\n"
                   "    metrics:\n      m: {metric: confusion, head: parts, target: mask, per_class: true}\n"
                   "    monitor: miou_all\n    budget: {epochs: 1, batch_size: 2}\n")
    from zoo.engine.build_run import setup
    from zoo.engine.config import RunConfig

    s = setup(RunConfig(task="parts", encoder="scratch", data_root=str(r), registry=(str(reg),), epochs=1,
                        encoder_settings={"width": 4}))
    assert s.model.heads["parts"].num_classes == 5 and s.metrics[0].num_classes == 5
    reg.write_text(reg.read_text().replace("loss: ce_dice,", "loss: ce_dice, settings: {num_classes: 11},"))
    rc, err = run_cli(["--registry", str(reg), "--task", "parts", "--data-root", str(r), "--out", str(tmp_path / "o"),
                       "--encoder-arg", "width=4"], capsys)
    assert_clear(rc, err, "head 'parts'", "num_classes is 11 in its settings but the data has 5")


def test_head_output_that_does_not_fit_its_target(tiny_mnist, tmp_path, capsys):
    reg = tmp_path / "r.yaml"
    reg.write_text("tasks:\n  wrong:\n    target: zoo.tasks.mnist:ForegroundTask\n    heads:\n"
                   "      digit: {head: classification, loss: ce, target: mask}\n"
                   "    metrics:\n      a: {metric: accuracy, head: digit, target: label}\n"
                   "    budget: {epochs: 1}\n")
    rc, err = run_cli(["--registry", str(reg), "--task", "wrong", "--data-root", str(tiny_mnist), "--out",
                       str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "head 'digit' (ClassificationHead)", "output shape (2, 10)", "target 'mask' of shape (2, 28, 28)")


# ----------------------------------------------------------------------------- COCO
def _coco(tmp_path: Path, edit) -> Path:
    root = write_coco(tmp_path / "c")
    f = root / "annotations" / "instances_train.json"
    data = json.loads(f.read_text())
    edit(data)
    f.write_text(json.dumps(data))
    return root


def _all_skipped(d):
    for a in d["annotations"]:
        a["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # fewer than 3 points


def _bbox_only(d):
    for a in d["annotations"]:
        a.pop("segmentation")
        a["bbox"] = [1, 1, 5, 5]


@pytest.mark.parametrize("edit,expect", [
    (_all_skipped, "all 5 annotation(s) were skipped"),
    (_bbox_only, "all 5 annotation(s) were skipped"),
    (lambda d: d["annotations"].append({"id": 77, "image_id": 999, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}),
     "annotation 77 refers to image_id 999"),
    (lambda d: d["images"][0].pop("file_name"), "has no 'file_name'"),
])
def test_coco_bad_annotations(tmp_path, capsys, edit, expect):
    root = _coco(tmp_path, edit)
    rc, err = run_cli(["--task", "coco", "--data-root", str(root), "--out", str(tmp_path / "o"), "--task-arg",
                       "size=[32, 48]"], capsys)
    assert_clear(rc, err, "instances_train.json", expect)


# ----------------------------------------------------------------------------- untrusted files
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("content,expect", [
    ("a: " + "[" * 50000 + "]" * 50000 + "\n", "nested deeper than 64 levels"),
    (BOMB, "expands to more than 100,000 values"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", "is not UTF-8 text (byte 0 is 0x89)"),
], ids=["deep", "alias-bomb", "binary"])
def test_hostile_registry_files(tiny_mnist, tmp_path, capsys, content, expect):
    f = tmp_path / "r.yaml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "o"),
                       "--registry", str(f)], capsys)
    assert_clear(rc, err, f"registry file {f}", expect)


def test_idx_header_and_gzip_cannot_make_zoo_allocate(tmp_path, capsys):
    """A header whose dimensions multiply past any real file, and a gzip that would inflate to gigabytes,
    are refused from the header: nothing is decompressed beyond the size it declares."""
    import gzip
    import struct

    root = make_mnist(tmp_path / "m")
    header = struct.pack(">IIII", 0x803, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + b"\0" * 100))
    rc, err = run_cli(["--task", "foreground", "--data-root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "train-images-idx3-ubyte.gz: the header declares", "more than zoo reads")
    # 6 GB of zeros after a header that says 200 images: only the declared 156,800 bytes are inflated
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 200, 28, 28))
        f.write(np.asarray([__import__("conftest").rect_digit(i % 10)[0] for i in range(200)]).tobytes())
        block = b"\0" * (1 << 20)
        for _ in range(64):  # 64 MB here stands for the 6 GB: read() stops at the declared size either way
            f.write(block)
    from zoo.data.idx import read_idx
    assert read_idx(root / "train-images-idx3-ubyte.gz", 3).shape == (200, 28, 28)


@pytest.mark.parametrize("make,expect", [
    (lambda p: p.write_bytes(b""), "is not a readable .safetensors file"),
    (lambda p: p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"), "is not a readable .safetensors file"),
    (lambda p: p.write_bytes((2**40).to_bytes(8, "little") + b"{}"), "is not a readable .safetensors file"),
    (lambda p: p.write_bytes(b"not a model at all"), "is not a readable .safetensors file"),
], ids=["empty", "corrupt-header", "oversized-header", "garbage"])
def test_bad_safetensors_files(tmp_path, capsys, make, expect):
    from zoo.predict import main as predict_main

    model = tmp_path / "m.safetensors"
    make(model)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    assert predict_main([str(model), str(img), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert expect in err and str(model) in err and "Traceback" not in err


def test_truncated_safetensors_file(tmp_path, capsys):
    from safetensors.torch import save_file

    from zoo.predict import main as predict_main

    model = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1000)}, str(model), metadata={"zoo": "{}"})
    model.write_bytes(model.read_bytes()[:-100])
    assert predict_main([str(model), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "is not a readable .safetensors file" in err and "Traceback" not in err


def test_decompression_bomb_png_in_predict(tmp_path, capsys, monkeypatch):
    """PIL's pixel cap (a decompression bomb) is one line naming the file, not PIL's traceback."""
    from PIL import Image

    from zoo.predict import main as predict_main

    big = tmp_path / "big.png"
    Image.new("L", (400, 400)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 // 2)  # 400x400 is then over twice the cap
    assert predict_main(["circlization/scratch", str(big), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"{big}: too large to read safely" in err and "Traceback" not in err


def test_python_api_wrong_channel_count():
    import zoo

    model = zoo.build_model("scratch", {"mask": "binary_mask"}, in_channels=1).eval()
    with pytest.raises(ValueError, match=r"input has 3 channel\(s\) \(shape \(2, 3, 28, 28\)\), but this model's "
                                         r"encoder takes 1: give \[B, 1, H, W\]"):
        model(torch.zeros(2, 3, 28, 28))


@pytest.mark.parametrize("where", ["checkpoint", "results"])
def test_a_full_disk_mid_run_leaves_earlier_files_byte_identical(tiny_mnist, tmp_path, capsys, monkeypatch, where):
    """torch.save's 'unexpected pos' on a full disk, or ENOSPC while rewriting results.json: one line,
    exit 2, and the results of the run before are byte for byte what they were."""
    import errno

    import zoo.core.files as files
    import zoo.engine.checkpoint as ckpt

    args = ["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path), "--epochs", "1",
            "--encoder-arg", "width=4", "--no-speed"]
    assert run_cli(args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("results.*")}
    if where == "checkpoint":
        monkeypatch.setattr(ckpt.torch, "save", lambda *a, **k: (_ for _ in ()).throw(
            RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                         "data/3: file write failed; unexpected pos 1408 vs 1296")))
    else:
        real = files.atomic_write_bytes

        def full(path, data):
            if Path(path).name.startswith("results."):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real(path, data)

        monkeypatch.setattr(files, "atomic_write_bytes", full)
    rc, err = run_cli([*args, "--seed", "1"], capsys)
    assert rc == 2 and "Traceback" not in err and "error: cannot write" in err, err
    assert ("the disk may be full" if where == "checkpoint" else "No space left on device") in err
    assert {p.name: p.read_bytes() for p in tmp_path.glob("results.*")} == before
    runs = [d for d in tmp_path.iterdir() if d.is_dir() and d.name.startswith("foreground-")]
    assert all(any(f.name != ".run.lock" for f in d.iterdir()) for d in runs), "no empty run folder is left behind"


class _Boom:  # a pickle that would run code when loaded
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("make,expect", [
    (lambda p: torch.save({"w": _Boom()}, p), "cannot be loaded: refused or unreadable"),
    (lambda p: p.write_bytes(b"\x80\x04garbage"), "cannot be loaded: refused or unreadable"),
    (lambda p: torch.save([1, 2, 3], p), "holds a list, not a state dict of tensors"),
], ids=["malicious-pickle", "corrupt", "not-a-state-dict"])
def test_bad_pretrained_encoder_files(tiny_mnist, tmp_path, capsys, make, expect):
    f = tmp_path / "w.pth"
    make(f)
    rc, err = run_cli(["--task", "foreground", "--encoder", "resnet18", "--data-root", str(tiny_mnist),
                       "--out", str(tmp_path / "o"), "--encoder-arg", f"pretrained={f}"], capsys)
    assert_clear(rc, err, f"pretrained weights file {f}", expect)


def test_a_nan_validation_monitor_is_never_a_silent_pick(tiny_mnist, tmp_path, monkeypatch):
    """An epoch whose validation monitor is NaN is named in a warning, and a later epoch with a number
    is kept over it."""
    import io

    from rich.console import Console

    import zoo.engine.train as train_mod
    from zoo.engine.config import RunConfig

    real, calls = train_mod.evaluate, [0]

    def nan_first(s, split="val", loaders=None):
        out = real(s, split, loaders)
        if split == "val":
            calls[0] += 1
            if calls[0] == 1:
                out = {k: float("nan") for k in out}
        return out

    monkeypatch.setattr(train_mod, "evaluate", nan_first)
    buf = io.StringIO()
    cfg = RunConfig(task="foreground", encoder="scratch", epochs=2, batch_size=16, train_limit=64, test_limit=16,
                    data_root=str(tiny_mnist), encoder_settings={"width": 4, "input_skip": True})
    r = train_mod.fit(cfg, console=Console(file=buf, soft_wrap=True), show_progress=False)
    text = buf.getvalue()
    assert "warning: validation iou is NaN at epoch 1" in text and "never chosen over one with a number" in text
    assert r.best_epoch == 2
