"""Multi-task runs through the CLI: bad strategy input fails before training with one line;
partial labels mask a head's loss and metrics; the grid runner keeps rows across failures."""
from __future__ import annotations

import dataclasses
import json
import shlex
import warnings

import pytest
import torch

import zoo
from zoo.bench import main, parse_args
from zoo.engine.config import budget_mode
from zoo.engine.evaluate import _update
from zoo.runs.gain import delta_m
from zoo.runs.grid import record_failure
from zoo.core.metrics import Accuracy
from zoo.runs.results import load_rows, write_results
from zoo.runs.plan import plan_jobs
from zoo.runs.rundir import new_run_dir, unfinished_run
from zoo.engine.checkpoint import hold
from zoo.engine.step import HeadPlan, step_losses
from zoo.tasks.base import HeadSpec
from zoo.engine.train import fit

REG = zoo.load_registry()


def run_cli(args, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main([*args, "--quiet", "--no-figures", "--no-speed"])
    return rc, capsys.readouterr().err.replace("\n", " ")


def assert_clear(rc, err, *expect):
    assert rc == 2, err
    assert "Traceback" not in err and "error:" in err, err
    for e in expect:
        assert e in err[err.index("error:"):], (e, err)
    assert "epoch 1/" not in err


def test_at_least_twenty_strategies_each_with_its_paper():
    names = REG.names("weightings")
    assert len(names) >= 20
    for required in ("upgrad", "aligned_mtl", "cagrad", "imtl_g", "mgda", "nash_mtl", "fairgrad", "dualproj",
                     "graddrop", "gradvac", "config", "pcgrad", "famo", "stch", "rlw", "geometric_mean", "imtl_l",
                     "dwa", "uncertainty", "fixed", "gradnorm"):
        assert required in names
    assert all(REG.entry("weightings", n).spec.get("paper") for n in names)


@pytest.mark.parametrize("args,expect", [
    (["--weighting", "upgard"], ["upgard", "upgrad"]),
    (["--weighting", "upgrad", "--weighting-arg", "c=0.4"], ["UPGrad: unknown setting(s) 'c'", "valid: pref_vector"]),
    (["--weighting", "stch", "--weighting-arg", "mu=-1"], ["STCH", "mu"]),
    (["--weighting", "graddrop", "--weighting-arg", "gramian=true"], ["GradDrop does not weight by the Gramian"]),
])
def test_bad_strategy_input(tiny_mnist, tmp_path, capsys, args, expect):
    rc, err = run_cli(["--task", "circlization", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
                       "--epochs", "1", *args], capsys)
    assert_clear(rc, err, *expect)
    assert not load_rows(tmp_path)


def test_strategy_that_needs_a_setting_it_was_not_given(tiny_mnist, tmp_path, capsys):
    user = tmp_path / "mine.yaml"
    user.write_text("weightings:\n  my_stch: {target: 'zoo.core.torchjd:Scalarized', settings: {method: STCH}, paper: x}\n")
    rc, err = run_cli(["--task", "circlization", "--registry", str(user), "--weighting", "my_stch", "--data-root",
                       str(tiny_mnist), "--out", str(tmp_path / "o"), "--epochs", "1"], capsys)
    assert_clear(rc, err, "STCH needs setting(s) 'mu'", "--weighting-arg mu=VALUE")


def test_unknown_torchjd_method_in_a_user_registry(tiny_mnist, tmp_path, capsys):
    user = tmp_path / "mine.yaml"
    user.write_text("weightings:\n  nope: {target: 'zoo.core.torchjd:Aggregated', settings: {method: UPGard}, paper: x}\n")
    rc, err = run_cli(["--task", "circlization", "--registry", str(user), "--weighting", "nope", "--data-root",
                       str(tiny_mnist), "--out", str(tmp_path / "o"), "--epochs", "1"], capsys)
    assert_clear(rc, err, "TorchJD has no aggregator 'UPGard'")


def test_strategy_that_cannot_work_with_the_tasks_heads_fails_in_preflight(tiny_mnist, tmp_path, capsys):
    user = tmp_path / "mine.yaml"  # trimmed mean drops the largest and smallest row: it needs 3+ heads
    user.write_text("weightings:\n  trimmed: {target: 'zoo.core.torchjd:Aggregated', settings: {method: TrimmedMean, "
                    "trim_number: 1}, paper: x}\n")
    rc, err = run_cli(["--task", "circlization", "--registry", str(user), "--weighting", "trimmed", "--data-root",
                       str(tiny_mnist), "--out", str(tmp_path / "o"), "--epochs", "1"], capsys)
    assert_clear(rc, err, "weighting 'trimmed' fails on task 'circlization' (2 heads)", "at least 3 rows")


# ----------------------------------------------------------------------------- partial labels
def test_a_head_missing_its_target_learns_from_the_labelled_half_only():
    torch.manual_seed(0)
    model = zoo.build_model("scratch", {"digit": "classification"}, encoder_settings={"width": 4, "depth": 2})
    model.eval()  # no dropout/BatchNorm batch statistics: the two computations see the same function
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([1, 2, 3, 4])
    spec = HeadSpec("digit", "classification", {}, "ce", {}, 1.0, "label", "main", "class_logits")
    plan = HeadPlan(spec, torch.nn.CrossEntropyLoss())
    batch = {"image": x, "label": y, "valid": {"label": torch.tensor([True, True, False, False])}}
    step_losses(model, {"main": batch}, {"main": [plan]})["digit"].backward()
    masked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    step_losses(model, {"main": {"image": x[:2], "label": y[:2]}}, {"main": [plan]})["digit"].backward()
    for a, b in zip(masked, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-7)
    # no labelled sample: a zero loss with zero gradient, never NaN
    model.zero_grad()
    none = {**batch, "valid": {"label": torch.zeros(4, dtype=torch.bool)}}
    loss = step_losses(model, {"main": none}, {"main": [plan]})["digit"]
    loss.backward()
    assert float(loss) == 0.0 and all(float(p.grad.abs().sum()) == 0.0 for p in model.parameters())


def test_metrics_score_only_the_samples_that_carry_their_targets():
    m = Accuracy("accuracy", "digit", "label")
    preds = {"digit": torch.tensor([1, 2, 0, 0])}
    batch = {"label": torch.tensor([1, 2, 3, 4]), "valid": {"label": torch.tensor([True, True, False, False])}}
    _update(m, preds, batch)
    assert m.compute()["accuracy"] == 100.0  # the two unlabelled (wrong) predictions are not scored


def test_mixed_digits_task_trains_on_two_half_labelled_datasets(tiny_mnist, tmp_path, capsys):
    rc, err = run_cli(["--task", "mixed_digits", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
                       "--epochs", "2", "--batch-size", "16"], capsys)
    assert rc == 0, err
    row = load_rows(tmp_path)[0]
    assert 0 <= row["iou"] <= 100 and 0 <= row["accuracy"] <= 100
    assert row["train_mask_labelled"] + row["train_label_labelled"] == row["train_digits"]


# ----------------------------------------------------------------------------- delta_m
def test_delta_m_is_the_mean_over_tasks_of_the_mean_over_their_metrics():
    single = {"iou": 100.0, "accuracy": 100.0, "gated_iou": 100.0, "dice": 100.0}
    joint = {"iou": 103.0, "accuracy": 94.0, "gated_iou": 100.0, "dice": 100.0}
    tasks = {"iou": "foreground", "accuracy": "circlization", "gated_iou": "circlization", "dice": "semantic"}
    # foreground +3 %, circlization (-6 + 0) / 2 = -3 %, semantic 0: mean 0 (a mean over metrics says -0.75)
    assert delta_m(joint, single, tasks) == pytest.approx(0.0)
    assert delta_m(joint, single) == pytest.approx(-0.75)


# ----------------------------------------------------------------------------- grid runner
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
    bad = tmp_path / "bad.yaml"  # an encoder that builds in the parent's check but fails when it trains
    bad.write_text("encoders:\n  broken: {target: 'zoo.encoders.scratch:ScratchEncoder', settings: {width: -4}}\n")
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
    reg = tmp_path / "r.yaml"
    entry = ("encoders:\n  tiny_a: {target: 'zoo.encoders.scratch:ScratchEncoder', settings: {width: 4}}\n"
             "  tiny_b: {target: 'zoo.encoders.scratch:ScratchEncoder', settings: {width: 4}}\n"
             "tasks:\n  fg_b:\n    target: zoo.tasks.mnist:ForegroundTask\n    heads:\n"
             "      mask: {head: binary_mask, loss: bce, target: mask}\n"
             "    metrics:\n      iou: {metric: iou, head: mask, target: mask}\n"
             "    budget: {epochs: %d, batch_size: 16, train_limit: 64, test_limit: 64}\n")
    reg.write_text(entry % 1)
    out = tmp_path / "grid"
    args = ["--task", "fg_b", "--encoder", "tiny_a,tiny_b", "--registry", str(reg), "--data-root", str(tiny_mnist),
            "--out", str(out), "--jobs", "2"]
    rc, err = run_cli(args, capsys)
    first = {r["encoder"]: r for r in load_rows(out)}
    assert rc == 0 and all(r["epochs"] == 1 and len(r["budget_hash"]) == 8 for r in first.values()), err
    reg.write_text(entry % 2 + "    encoder_budgets: {tiny_b: {epochs: 1}}\n")
    rc, err = run_cli(args, capsys)
    rows = {r["encoder"]: r for r in load_rows(out)}
    assert rc == 0 and "retrain fg_b | tiny_a | fixed" in err and "skip fg_b | tiny_b | fixed" in err, err
    assert rows["tiny_a"]["epochs"] == 2 and rows["tiny_a"]["budget_hash"] != first["tiny_a"]["budget_hash"]
    assert rows["tiny_b"] == first["tiny_b"]
    old = {**rows["tiny_a"]}
    del old["budget_hash"]  # a row written before rows had budget_hash: skipped, as before
    write_results(out, [old], "h")
    reg.write_text(entry % 3)
    rc, err = run_cli(args, capsys)
    assert "skip fg_b | tiny_a" in err and "retrain fg_b | tiny_b" in err, err


def interrupt_after_first_epoch(cfg, run_dir):
    """Train ``cfg`` in ``run_dir`` and kill it after its first epoch, as a session's end does."""
    def killed_after_first(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, out_dir=run_dir, on_epoch_end=killed_after_first, show_progress=False)


def test_grid_resumes_an_interrupted_run_and_never_a_live_one(tiny_mnist, tmp_path, capsys):
    """A job killed mid-training (a session's end) is continued from its last.pt by the same grid
    command; a run another process is training is left alone."""
    small = tmp_path / "small.yaml"
    small.write_text("encoders:\n  small: {target: 'zoo.encoders.scratch:ScratchEncoder', settings: {width: 8}}\n"
                     "  tiny: {target: 'zoo.encoders.scratch:ScratchEncoder', settings: {width: 4}}\n")
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


def test_single_run_names_an_interrupted_run_of_its_configuration(tiny_mnist, tmp_path, capsys):
    """Rerunning a single command after an interruption starts a new folder (only --resume or the
    grid continues one); it says so and how to continue, and never names a finished run."""
    small = tmp_path / "small.yaml"
    small.write_text("encoders:\n  small: {target: 'zoo.encoders.scratch:ScratchEncoder', settings: {width: 4}}\n")
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


# ----------------------------------------------------------------------------- fine-tuning options
@pytest.mark.parametrize("weighting", ["fixed", "gradnorm", "upgrad", "uncertainty"])
def test_freeze_encoder_epochs_train_the_heads_only(tiny_mnist, weighting):
    """--freeze-encoder-epochs 1: after the first epoch the encoder's weights and BatchNorm statistics
    are what they were, the heads' are not; in the second the encoder trains too."""
    from zoo.engine.build_run import setup
    from zoo.engine.config import RunConfig
    from zoo.engine.train import Trainer

    cfg = RunConfig(task="circlization", encoder="scratch", weighting=weighting, epochs=2, batch_size=16,
                    freeze_encoder_epochs=1, train_limit=64, test_limit=16, data_root=str(tiny_mnist),
                    encoder_settings={"width": 4})
    t = Trainer(cfg, setup(cfg), None)
    enc = {k: v.clone() for k, v in t.s.model.encoder.state_dict().items()}
    head = {k: v.clone() for k, v in t.s.model.heads.state_dict().items()}
    t.epoch(1, None)
    assert all(torch.equal(v, t.s.model.encoder.state_dict()[k]) for k, v in enc.items())
    assert any(not torch.equal(v, t.s.model.heads.state_dict()[k]) for k, v in head.items())
    t.epoch(2, None)
    assert any(not torch.equal(v, t.s.model.encoder.state_dict()[k]) for k, v in enc.items())


def test_encoder_lr_scale_gives_the_encoder_its_own_rate(tiny_mnist):
    """--encoder-lr-scale 0 leaves the encoder where it started while the heads learn; 0.1 gives its
    parameter group a tenth of the heads' rate at every step of the schedule."""
    from zoo.engine.build_run import setup
    from zoo.engine.config import RunConfig
    from zoo.engine.train import Trainer

    base = dict(task="foreground", encoder="scratch", epochs=1, batch_size=16, train_limit=64, test_limit=16,
                data_root=str(tiny_mnist), encoder_settings={"width": 4, "input_skip": True})
    t = Trainer(RunConfig(encoder_lr_scale=0.0, **base), setup(RunConfig(encoder_lr_scale=0.0, **base)), None)
    enc = {k: v.clone() for k, v in t.s.model.encoder.state_dict().items() if v.dtype.is_floating_point}
    t.epoch(1, None)
    assert all(torch.equal(v, t.s.model.encoder.state_dict()[k]) for k, v in enc.items() if "running" not in k
               and "num_batches" not in k)
    t = Trainer(RunConfig(encoder_lr_scale=0.1, **base), setup(RunConfig(encoder_lr_scale=0.1, **base)), None)
    enc_group, head_group = t.optimizer.param_groups
    for _ in range(3):
        t.scheduler.step()
        assert enc_group["lr"] == pytest.approx(0.1 * head_group["lr"])


@pytest.mark.parametrize("change", [{"encoder_lr_scale": 0.5}, {"freeze_encoder_epochs": 2}])
def test_fine_tuning_options_are_checked_on_resume(tiny_mnist, tmp_path, change):
    from zoo.engine.config import RunConfig
    from zoo.engine.train import fit

    base = RunConfig(task="foreground", encoder="scratch", epochs=2, batch_size=16, train_limit=32, test_limit=16,
                     data_root=str(tiny_mnist), encoder_settings={"width": 4, "input_skip": True})
    fit(dataclasses.replace(base, epochs=1), out_dir=tmp_path / "r", show_progress=False)
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"{key}: "):
        fit(dataclasses.replace(base, **change), out_dir=tmp_path / "r", resume=tmp_path / "r" / "last.pt",
            show_progress=False)


def test_a_cuda_out_of_memory_after_a_checkpoint_retries_in_a_new_folder(tiny_mnist, tmp_path, capsys, monkeypatch):
    """The out-of-memory retry halves the batch. When the failed attempt already wrote checkpoints (an
    out-of-memory in a later epoch), fit refuses that folder, so the retry takes a new one and the
    old one is kept and named; the row says the batch was halved."""
    import zoo.bench as bench

    real_fit, calls = bench.fit, []

    def fit_out_of_memory_once(cfg, out_dir, **kw):
        calls.append((cfg.batch_size, out_dir))
        if len(calls) == 1:
            def oom_after_first(epoch, row):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return real_fit(cfg, out_dir=out_dir, **{**kw, "on_epoch_end": oom_after_first})
        return real_fit(cfg, out_dir=out_dir, **kw)

    monkeypatch.setattr(bench, "fit", fit_out_of_memory_once)
    small = tmp_path / "small.yaml"
    small.write_text("encoders:\n  small: {target: 'zoo.encoders.scratch:ScratchEncoder', settings: {width: 4}}\n")
    out = tmp_path / "runs"
    rc, err = run_cli(["--task", "foreground", "--encoder", "small", "--registry", str(small), "--data-root",
                       str(tiny_mnist), "--out", str(out), "--epochs", "2", "--batch-size", "16"], capsys)
    (first, one), (second, two) = calls
    rows = load_rows(out)
    assert rc == 0 and (first, second) == (16, 8) and one != two, err
    assert (one / "last.pt").exists() and f"{one} keeps the run at batch size 16" in err, err
    assert rows[0]["run_dir"] == str(two) and rows[0]["epochs"] == 2 and "16 -> 8" in rows[0]["note"]
