"""zoo.engine.train: a checkpoint stores the training state under the names older checkpoints were written
with, a resumed run reads every field of it back, only last.pt resumes, a NaN validation score is
never picked as the best epoch, and a run of few optimizer steps says so before training."""
from __future__ import annotations

import warnings

import pytest
import torch

from conftest import assert_clear, run_cli, write_folder
from zoo.bench import main
from zoo.engine.checkpoint import load_checkpoint
from zoo.engine.config import RunConfig
from zoo.engine.train import fit

#: the keys of a last.pt since checkpoints were first written (a best.pt lacks the optimizer and scheduler)
LAST_PT = {"model", "weighting", "epoch", "best", "best_epoch", "stale", "history", "train_seconds", "samples",
           "config", "info", "world_size", "optimizer", "scheduler"}


@pytest.mark.parametrize("schedule", ["onecycle", "plateau", "none"])  # per step, per epoch, none
def test_checkpoints_keep_their_keys_and_a_resume_reads_the_state_back(tiny_mnist, tmp_path, schedule):
    cfg = RunConfig(task="foreground", encoder="scratch", epochs=1, batch_size=16, data_root=str(tiny_mnist),
                    encoder_settings={"width": 4, "input_skip": True}, schedule=schedule)
    run = tmp_path / "run"
    first = fit(cfg, out_dir=run, show_progress=False)
    assert set(load_checkpoint(run / "last.pt")) == LAST_PT
    assert set(load_checkpoint(run / "best.pt")) == LAST_PT - {"optimizer", "scheduler"}
    # resumed after its last epoch, the run trains no further: what it reports is the state it read back
    again = fit(cfg, out_dir=run, resume=run / "last.pt", show_progress=False)
    fields = ("epochs", "best_epoch", "train_seconds", "train_samples", "history", "val", "test")
    assert {f: getattr(again, f) for f in fields} == {f: getattr(first, f) for f in fields}
    assert first.epochs == 1 and first.train_samples > 0 and len(first.history) == 1


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


def test_a_tiny_folder_run_warns_about_its_step_count_before_training(tmp_path, capsys):
    """A bring-your-own-data run of a few optimizer steps says so before the first epoch, with the numbers
    and what to change; a --quick run is told it is a smoke run instead; a run of enough steps says nothing."""
    src = write_folder(tmp_path / "data", n=12)
    args = ["--task", "folder", "--encoder", "scratch", "--data-root", str(src), "--encoder-arg", "width=4", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--out", str(tmp_path / "a"), "--epochs", "2", "--batch-size", "64"]) == 0
        err = capsys.readouterr().err.replace("\n", " ")
        # 12 images: 8 train after the validation and test splits, one batch of 64 -> 1 step per epoch
        assert "warning: this run takes only 2 optimizer step(s) (1 per epoch x 2 epoch(s) at batch size 64)" in err
        assert "give --epochs 50" in err and err.index("warning: this run") < err.index("epoch 1/")
        assert main([*args, "--out", str(tmp_path / "b"), "--quick"]) == 0
        err = capsys.readouterr().err.replace("\n", " ")
        assert "note: smoke-sized run (--quick)" in err and "warning: this run" not in err
        assert main([*args, "--out", str(tmp_path / "c"), "--epochs", "50", "--batch-size", "64"]) == 0
        assert "optimizer step" not in capsys.readouterr().err
