"""zoo.runs.grid: a grid hands each run to a child process as a serialised job, records a failed run as a
row that never replaces a finished one and goes on, skips the rows it has (retraining a row whose budget
changed), and continues an interrupted run from its last.pt, never one another process is training."""
from __future__ import annotations

import json
import shlex

import pytest

import zoo
from conftest import foreground_task, run_cli as bench_cli, scratch_encoder, write_registry
from test_rundir import interrupt_after_first_epoch
from zoo.bench import main, parse_args
from zoo.engine.checkpoint import hold
from zoo.engine.config import budget_mode
from zoo.runs.grid import record_failure
from zoo.runs.plan import plan_jobs
from zoo.runs.results import load_rows, write_results
from zoo.runs.rundir import new_run_dir, unfinished_run

REG = zoo.load_registry()


def run_cli(args, capsys):  # the speed columns take seconds that these tests never read
    return bench_cli(args, capsys, speed=False)


def test_a_grid_job_is_data_that_round_trips_and_keys_its_row(tiny_mnist, tmp_path):
    """A grid hands its children a serialised job (zoo.runs.job), never an edited command line: the job read
    back is the job written, and its identity is the row key, label and run folder the grid always used."""
    from zoo.runs.job import Job

    args = parse_args(["--task", "joint", "--architecture", "cgc", "--weighting", "upgrad", "--weighting-arg",
                       "pref_vector=[1,1]", "--data-root", str(tiny_mnist), "--out", str(tmp_path), "--epochs", "2"])
    jobs = plan_jobs(args, REG, budget_mode(args), tmp_path)
    joint = jobs[-1]
    back = Job.read(joint.write(tmp_path / "logs"))
    assert back == joint and back.cfg == joint.cfg
    # each row's command trains its combination (a baseline's without the strategy's settings)
    assert joint.command.startswith("python -m zoo.bench --task joint --encoder scratch --weighting upgrad "
                                    "--architecture cgc --epochs 2 --weighting-arg 'pref_vector=[1,1]' ")
    assert joint.ident.fields == {"task": "joint", "encoder": "scratch", "weighting": "upgrad", "architecture": "cgc",
                                  "budget_mode": joint.mode, "seed": 0, "world_size": None}
    assert joint.label == "joint | scratch | upgrad | cgc"
    assert joint.ident.folder == f"joint-scratch-upgrad-cgc-{joint.mode}-s0"
    base = jobs[0]  # a baseline: hard sharing, fixed, without the strategy's settings (its own budget mode)
    assert "architecture" not in base.ident.fields and base.cfg.weighting_settings == {}
    assert "--epochs 2" in base.command and "weighting-arg" not in base.command
    for job in (joint, base):  # a row's command plans that run again: the same settings and row key
        again = parse_args(shlex.split(job.command)[3:])
        (same,) = [j for j in plan_jobs(again, REG, budget_mode(again), tmp_path) if j.key == job.key]
        assert same.cfg == job.cfg
    assert base.ident.folder == f"{base.cfg.task}-scratch-fixed-{joint.base_mode}-s0"
    assert base.key == joint.ident.baseline(base.cfg.task, joint.base_mode).key
    with pytest.raises(ValueError, match="cannot read it as a zoo job"):
        Job.read(tmp_path / "nope.json")


def test_failure_rows_never_replace_finished_rows(tmp_path):
    done = {"task": "t", "encoder": "e", "weighting": "fixed", "budget_mode": "default", "seed": 0, "iou": 99.0}
    write_results(tmp_path, [done], "h")
    failed = {**{k: done[k] for k in ("task", "encoder", "weighting", "budget_mode", "seed")}, "status": "failed",
              "error": "boom"}
    record_failure(tmp_path, failed, "h")
    assert load_rows(tmp_path) == [done]
    record_failure(tmp_path, {**failed, "encoder": "other"}, "h")
    assert {r["encoder"]: r.get("status") for r in load_rows(tmp_path)} == {"e": None, "other": "failed"}


def test_grid_records_failures_goes_on_and_skips_finished_rows(tiny_mnist, tmp_path, capsys):
    # an encoder that builds in the parent's check but fails when it trains
    bad = write_registry(tmp_path, {"encoders": {"broken": scratch_encoder(width=-4)}})
    out = tmp_path / "grid"
    args = ["--task", "foreground", "--encoder", "scratch,broken", "--registry", str(bad), "--data-root",
            str(tiny_mnist), "--out", str(out), "--epochs", "1", "--batch-size", "16", "--jobs", "2"]
    rc, err = run_cli(args, capsys)
    rows = {r["encoder"]: r for r in load_rows(out)}
    assert rc == 1 and rows["broken"]["status"] == "failed" and "iou" in rows["scratch"], err
    assert rows["broken"]["error"] and (out / "logs").is_dir()
    first = json.loads((out / "results.json").read_text())
    rc = main([*args, "--quiet", "--no-figures", "--no-speed"])
    err = capsys.readouterr().err  # as a log file gets it: one line per message, however long the path
    assert f"skip foreground | scratch | fixed: its row is in {out} already\n" in err, err
    again = {r["encoder"]: r for r in load_rows(out)}
    assert again["scratch"] == {r["encoder"]: r for r in first["rows"]}["scratch"]  # not retrained
    log = next((out / "logs").glob("foreground-broken-*.log")).read_text()  # retried: both attempts kept
    assert log.count("=== ") == 2 and log.count("foreground | broken | fixed: python -m zoo.bench --job") == 2, log
    assert again["broken"]["status"] == "failed" and again["broken"]["error"] == rows["broken"]["error"]


def test_grid_retrains_a_row_whose_budget_changed(tiny_mnist, tmp_path, capsys):
    """A finished row is skipped while its training settings are the registry's; after the task's
    budget changes (here: epochs 1 -> 2, with tiny_b keeping 1 through encoder_budgets) only the row
    trained under the old budget is trained again, and a row from before budget_hash is kept."""
    def entries(epochs: int, **task) -> dict:
        budget = {"epochs": epochs, "batch_size": 16, "train_limit": 64, "test_limit": 64}
        return {"encoders": {"tiny_a": scratch_encoder(width=4), "tiny_b": scratch_encoder(width=4)},
                "tasks": {"fg_b": foreground_task(budget=budget, **task)}}

    reg = write_registry(tmp_path, entries(1))
    out = tmp_path / "grid"
    args = ["--task", "fg_b", "--encoder", "tiny_a,tiny_b", "--registry", str(reg), "--data-root", str(tiny_mnist),
            "--out", str(out), "--jobs", "2"]
    rc, err = run_cli(args, capsys)
    first = {r["encoder"]: r for r in load_rows(out)}
    assert rc == 0 and all(r["epochs"] == 1 and len(r["budget_hash"]) == 8 for r in first.values()), err
    write_registry(tmp_path, entries(2, encoder_budgets={"tiny_b": {"epochs": 1}}))
    rc, err = run_cli(args, capsys)
    rows = {r["encoder"]: r for r in load_rows(out)}
    assert rc == 0 and "retrain fg_b | tiny_a | fixed" in err and "skip fg_b | tiny_b | fixed" in err, err
    assert rows["tiny_a"]["epochs"] == 2 and rows["tiny_a"]["budget_hash"] != first["tiny_a"]["budget_hash"]
    assert rows["tiny_b"] == first["tiny_b"]
    old = {**rows["tiny_a"]}
    del old["budget_hash"]  # a row written before rows had budget_hash: skipped, as before
    write_results(out, [old], "h")
    write_registry(tmp_path, entries(3))
    rc, err = run_cli(args, capsys)
    assert "skip fg_b | tiny_a" in err and "retrain fg_b | tiny_b" in err, err


def test_grid_resumes_an_interrupted_run_and_never_a_live_one(tiny_mnist, tmp_path, capsys):
    """A job killed mid-training (a session's end) is continued from its last.pt by the same grid
    command; a run another process is training is left alone."""
    small = write_registry(tmp_path, {"encoders": {"small": scratch_encoder(width=8),
                                                "tiny": scratch_encoder(width=4)}})
    out = tmp_path / "grid"
    args = ["--task", "foreground", "--encoder", "tiny,small", "--registry", str(small), "--data-root",
            str(tiny_mnist), "--out", str(out), "--epochs", "2", "--batch-size", "16", "--jobs", "2"]
    parsed = parse_args(args)
    mode = budget_mode(parsed)
    job = next(j for j in plan_jobs(parsed, zoo.load_registry([small]), mode, out) if j.cfg.encoder == "small")
    cut = new_run_dir(out, job.cfg, mode)
    interrupt_after_first_epoch(job.cfg, cut)
    with hold(cut):  # another process training in it: not a run to continue, by the grid or by hand
        assert unfinished_run(out, job.cfg, mode) is None
        one = [a if a != "tiny,small" else "small" for a in args[:-2]]
        rc, err = run_cli([*one, "--resume", str(cut / "last.pt")], capsys)
        assert rc == 2 and "is being trained by another process" in err, err
    assert unfinished_run(out, job.cfg, mode) == cut / "last.pt"
    other = parse_args([*args[:-4], "--epochs", "3"])  # other settings: never continued
    assert unfinished_run(out, plan_jobs(other, zoo.load_registry([small]), budget_mode(other), out)[1].cfg,
                          mode) is None

    rc, err = run_cli(args, capsys)
    rows = {r["encoder"]: r for r in load_rows(out)}
    assert rc == 0 and "resume from" in err and "start foreground | tiny" in err, err
    assert rows["small"]["run_dir"] == str(cut) and rows["small"]["epochs"] == 2
    assert "resumed from" in rows["small"]["note"] and "note" not in rows["tiny"]
    assert "resumed from" in (out / "logs" / "foreground-small-fixed-" f"{mode}-s0.log").read_text()
    log = (cut / "log.txt").read_text()
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1, log
