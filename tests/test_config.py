"""zoo.engine.config: a run's options are checked before any data is read (one line naming the bad
option), and a resume is refused when the checkpoint was trained with other settings (check_resumable), from
the command line or from zoo.engine.train.fit."""
from __future__ import annotations

import pytest

from conftest import assert_clear, run_cli
from zoo.engine.config import RunConfig
from zoo.engine.train import fit

FG_ENCODER = {"input_skip": True, "width": 8}  # the foreground threshold head reads the raw input


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


def test_resumed_checkpoint_of_other_task_is_refused(tiny_mnist, tmp_path):
    cfg = RunConfig(task="foreground", encoder="scratch", epochs=1, batch_size=16, data_root=str(tiny_mnist),
                    encoder_settings=FG_ENCODER)
    fit(cfg, out_dir=tmp_path, show_progress=False)
    other = RunConfig(task="circlization", encoder="scratch", epochs=1, batch_size=16, data_root=str(tiny_mnist),
                      encoder_settings={"width": 8})
    with pytest.raises(ValueError, match="task: 'foreground' in the checkpoint, 'circlization' now"):
        fit(other, resume=tmp_path / "last.pt", show_progress=False)
