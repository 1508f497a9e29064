"""zoo.engine.train: a checkpoint stores the training state under the names older checkpoints were written
with, and a resumed run reads every field of it back."""
from __future__ import annotations

import pytest

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
