"""The CLI end to end on tiny data: result files, resume, bad input, distributed evaluation."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.bench import main
from zoo.engine.build_run import setup
from zoo.engine.config import RunConfig
from zoo.engine.evaluate import evaluate
from zoo.engine.train import fit

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "2", "--batch-size", "16", "--quiet"]


def test_cli_two_encoders_write_three_result_files(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["--task", "circlization", "--encoder", "scratch,mobilenetv3_small_100", "--data-root", str(tiny_mnist),
               "--out", str(out), *TINY])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert [r["encoder"] for r in rows] == ["scratch", "mobilenetv3_small_100"]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 100.0 and 0.0 <= r["gated_iou"] <= 100.0
        assert r["parameters"] > 0 and r["train_seconds"] > 0 and r["train_samples_per_s"] > 0
        assert r["train_digits"] == 180 and r["val_digits"] == 20 and r["test_digits"] == 60
        assert r["data_source"] == str(tiny_mnist) and r["device"] == "cpu" and r["seed"] == 0
        assert r["command"].startswith("python -m zoo.bench --task circlization")
    with open(out / "results.csv") as f:
        header = next(csv.reader(f))
    for col in ("task", "encoder", "heads", "parameters", "epochs", "train_seconds", "train_samples_per_s", "accuracy",
                "gated_iou", "data_source", "train_digits", "val_digits", "test_digits", "device", "torch", "seed", "command"):
        assert col in header
    md = (out / "results.md").read_text()
    assert "| scratch |" in md and "command: `python -m zoo.bench" in md
    for r in rows:  # each run has its own directory: checkpoints, figure, log
        run = Path(r["run_dir"])
        assert run.parent == out and run.name.startswith(f"circlization-{r['encoder']}-fixed-custom-")
        assert (run / "figure.png").stat().st_size > 1000 and (run / "best.pt").is_file()
        assert "epoch 2/2" in (run / "log.txt").read_text()
    printed = capsys.readouterr().out
    assert f"{rows[0]['accuracy']:.2f}" in printed and f"{rows[1]['gated_iou']:.2f}" in printed  # the rich table


FG_ENCODER = {"input_skip": True, "width": 8}  # the foreground threshold head reads the raw input


@pytest.mark.parametrize("device_data", [True, False], ids=["device-resident", "dataloader"])
def test_training_moves_metrics(tiny_mnist, device_data):
    """A few epochs on the rectangle digits: the foreground IoU of the U-Net head must rise well above
    the untrained model's, with the data on the device (batched augmentation) and through a
    DataLoader (per-sample). (The default threshold head gets these two-level images right
    untrained; tests/test_threshold_heads.py checks that it learns.)"""
    cfg = RunConfig(task="foreground", encoder="scratch", epochs=4, batch_size=16, lr=5e-3, schedule="none",
                    data_root=str(tiny_mnist), encoder_settings=FG_ENCODER, device_data=device_data,
                    registry=(str(ROOT / "benchmarks/ablation/fg_unet.yaml"),))
    s = setup(cfg)
    before = evaluate(s, "val")["iou"]
    r = fit(cfg, show_progress=False)
    assert r.val["iou"] > before + 10 and r.test["iou"] > 60.0, (before, r.val, r.test)


def test_resume_matches_uninterrupted_run(tiny_mnist, tmp_path):
    cfg = RunConfig(task="circlization", encoder="scratch", epochs=3, batch_size=16, data_root=str(tiny_mnist),
                    encoder_settings={"width": 8}, schedule="onecycle")
    full = fit(cfg, out_dir=tmp_path / "full", show_progress=False)

    def stop_after_first(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, out_dir=tmp_path / "cut", on_epoch_end=stop_after_first, show_progress=False)
    assert (tmp_path / "cut" / "last.pt").is_file()
    resumed = fit(cfg, out_dir=tmp_path / "cut", resume=tmp_path / "cut" / "last.pt", show_progress=False)
    assert resumed.test == full.test
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]


def test_same_seed_same_numbers(tiny_mnist):
    cfg = RunConfig(task="foreground", encoder="scratch", epochs=1, batch_size=16, data_root=str(tiny_mnist),
                    encoder_settings=FG_ENCODER)
    assert fit(cfg, show_progress=False).test == fit(cfg, show_progress=False).test


@pytest.mark.parametrize("args,expect", [
    (["--task", "circlisation"], "Did you mean 'circlization'"),
    (["--task", "foreground", "--encoder", "resnet19"], "Did you mean 'resnet18'"),
    (["--task", "foreground", "--weighting", "uncertain"], "Did you mean 'uncertainty'"),
    (["--task", "foreground", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["--task", "foreground", "--lr", "-1"], "learning rate must be a finite number > 0"),
    (["--task", "foreground", "--device", "cuda:7"], "CUDA is not available"),
    (["--task", "foreground", "--resume", "/no/such/last.pt"], "checkpoint /no/such/last.pt does not exist"),
    ([], "--task is required"),
])
def test_cli_bad_input(tiny_mnist, tmp_path, capsys, args, expect):
    if expect == "CUDA is not available":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    rc = main([*args, "--data-root", str(tiny_mnist), "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert expect in capsys.readouterr().err.replace("\n", "")


def test_cli_missing_data_is_clear(tmp_path, capsys):
    rc = main(["--task", "foreground", "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "MNIST not found" in err and "--data-root" in err


def test_cli_list(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("scratch", "resnet18", "binary_mask", "circle", "circlization", "semantic", "uncertainty"):
        assert name in out


def test_distributed_two_processes_equal_single_process_evaluation(tiny_mnist, tmp_path):
    """torchrun with 2 CPU (gloo) processes trains; its reduced test metrics equal a one-process
    evaluation of the same checkpoint; only rank 0 writes files."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "zoo.bench", "--task", "foreground", "--encoder", "scratch", "--data-root", str(tiny_mnist),
           "--out", str(out), "--epochs", "1", "--batch-size", "8", "--no-figures", "--quiet", "--test-limit", "25"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "results.json").read_text())["rows"][0]
    from zoo.engine.evaluate import evaluate_checkpoint

    single = evaluate_checkpoint(Path(row["run_dir"]) / "best.pt", split="test")
    assert row["iou"] == pytest.approx(round(single["iou"], 4), abs=1e-4)
    assert not list(out.glob("**/*.tmp"))


def test_list_is_readable_at_80_columns_with_each_tasks_description():
    """--list folds, never cuts: every registered name, its source and settings are whole at 80 columns, and
    each task shows its description (which says what data it needs)."""
    from rich.console import Console

    from zoo.bench import list_registry
    from zoo.engine.build import load_registry

    registry = load_registry()
    console = Console(record=True, width=80)
    list_registry(registry, console)
    text = console.export_text()
    assert "…" not in text
    for kind in ("encoders", "heads", "tasks", "weightings"):
        for e in registry.entries(kind):
            assert e.name in text
    for e in registry.entries("tasks"):
        if e.spec.get("description"):
            assert "description=" + e.spec["description"].split()[0] in text, e.name
