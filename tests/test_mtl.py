"""Multi-task runs through the CLI: bad strategy input fails before training with one line;
partial labels mask a head's loss and metrics; fine-tuning options; the out-of-memory retry.
The grid runner's tests are in test_grid.py, run folders' in test_rundir.py."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import zoo
from conftest import assert_clear, run_cli as bench_cli, scratch_encoder, write_registry
from zoo.engine.evaluate import update_labelled
from zoo.runs.gain import delta_m
from zoo.core.metrics import Accuracy
from zoo.runs.results import load_rows
from zoo.engine.step import HeadPlan, step_losses
from zoo.tasks.base import HeadSpec

REG = zoo.load_registry()


def run_cli(args, capsys):  # the speed columns take seconds that these tests never read
    return bench_cli(args, capsys, speed=False)


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
    user = write_registry(tmp_path, {"weightings": {"my_stch": {"target": "zoo.core.torchjd:Scalarized",
                                                                "settings": {"method": "STCH"}, "paper": "x"}}})
    rc, err = run_cli(["--task", "circlization", "--registry", str(user), "--weighting", "my_stch", "--data-root",
                       str(tiny_mnist), "--out", str(tmp_path / "o"), "--epochs", "1"], capsys)
    assert_clear(rc, err, "STCH needs setting(s) 'mu'", "--weighting-arg mu=VALUE")


def test_unknown_torchjd_method_in_a_user_registry(tiny_mnist, tmp_path, capsys):
    user = write_registry(tmp_path, {"weightings": {"nope": {"target": "zoo.core.torchjd:Aggregated",
                                                             "settings": {"method": "UPGard"}, "paper": "x"}}})
    rc, err = run_cli(["--task", "circlization", "--registry", str(user), "--weighting", "nope", "--data-root",
                       str(tiny_mnist), "--out", str(tmp_path / "o"), "--epochs", "1"], capsys)
    assert_clear(rc, err, "TorchJD has no aggregator 'UPGard'")


def test_strategy_that_cannot_work_with_the_tasks_heads_fails_in_preflight(tiny_mnist, tmp_path, capsys):
    # trimmed mean drops the largest and smallest row: it needs 3+ heads
    trimmed = {"method": "TrimmedMean", "trim_number": 1}
    user = write_registry(tmp_path, {"weightings": {"trimmed": {"target": "zoo.core.torchjd:Aggregated",
                                                                "settings": trimmed, "paper": "x"}}})
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
    update_labelled(m, preds, batch)
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
    small = write_registry(tmp_path, {"encoders": {"small": scratch_encoder(width=4)}})
    out = tmp_path / "runs"
    rc, err = run_cli(["--task", "foreground", "--encoder", "small", "--registry", str(small), "--data-root",
                       str(tiny_mnist), "--out", str(out), "--epochs", "2", "--batch-size", "16"], capsys)
    (first, one), (second, two) = calls
    rows = load_rows(out)
    assert rc == 0 and (first, second) == (16, 8) and one != two, err
    assert (one / "last.pt").exists() and f"{one} keeps the run at batch size 16" in err, err
    assert rows[0]["run_dir"] == str(two) and rows[0]["epochs"] == 2 and "16 -> 8" in rows[0]["note"]
