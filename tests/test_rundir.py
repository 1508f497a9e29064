"""zoo.runs.rundir: each run trains in a folder of its own, and a rerun of a single command names an
interrupted run of its configuration (and how to continue it) without continuing it."""
from __future__ import annotations

import pytest

import zoo
from conftest import run_cli as bench_cli, scratch_encoder, write_registry
from zoo.bench import parse_args
from zoo.engine.config import budget_mode
from zoo.engine.train import fit
from zoo.runs.plan import plan_jobs
from zoo.runs.results import load_rows
from zoo.runs.rundir import new_run_dir


def run_cli(args, capsys):  # the speed columns take seconds that these tests never read
    return bench_cli(args, capsys, speed=False)


def test_rerun_gets_its_own_run_directory(tiny_mnist, tmp_path):
    from zoo.bench import main

    args = ["--task", "foreground", "--encoder", "scratch", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
            "--quick", "--quiet", "--no-figures"]
    assert main(args) == 0 and main(args) == 0
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(dirs) == 2 and all((d / "best.pt").is_file() for d in dirs)
    [row] = load_rows(tmp_path)
    assert row["run_dir"] == str(dirs[1]) or row["run_dir"] == str(dirs[0])


def interrupt_after_first_epoch(cfg, run_dir):
    """Train ``cfg`` in ``run_dir`` and kill it after its first epoch, as a session's end does."""
    def killed_after_first(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, out_dir=run_dir, on_epoch_end=killed_after_first, show_progress=False)


def test_single_run_names_an_interrupted_run_of_its_configuration(tiny_mnist, tmp_path, capsys):
    """Rerunning a single command after an interruption starts a new folder (only --resume or the
    grid continues one); it says so and how to continue, and never names a finished run."""
    small = write_registry(tmp_path, {"encoders": {"small": scratch_encoder(width=4)}})
    out = tmp_path / "runs"
    args = ["--task", "foreground", "--encoder", "small", "--registry", str(small), "--data-root", str(tiny_mnist),
            "--out", str(out), "--epochs", "2", "--batch-size", "16"]
    parsed = parse_args(args)
    mode = budget_mode(parsed)
    job = plan_jobs(parsed, zoo.load_registry([small]), mode, out)[0]
    cut = new_run_dir(out, job.cfg, mode)
    interrupt_after_first_epoch(job.cfg, cut)
    rc, err = run_cli(args, capsys)
    rows = load_rows(out)
    assert rc == 0 and f"{cut} holds an interrupted run of foreground | small" in err, err
    assert "(epoch 1 of 2)" in err and f"rerun this job alone with --resume {cut / 'last.pt'}" in err, err
    assert [r["run_dir"] for r in rows] != [str(cut)] and rows[0]["epochs"] == 2
    # the new, finished run is newer but never named; the interrupted one still is, until it is continued
    rc, err = run_cli(args, capsys)
    assert rc == 0 and err.count("holds an interrupted run") == 1 and f"{cut} holds" in err, err
    rc, err = run_cli([*args, "--resume", str(cut / "last.pt")], capsys)
    assert rc == 0 and "holds an interrupted run" not in err, err
    rc, err = run_cli(args, capsys)
    assert rc == 0 and "holds an interrupted run" not in err, err
