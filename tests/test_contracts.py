"""The contracts heads, losses and metrics declare, read from the declaration and never from a
tensor's shape: output kinds, loss modes, class counts, one head spec from YAML to the trainer,
and what ``zoo.predict`` is told."""
from __future__ import annotations

import pytest
import torch

import zoo
from conftest import assert_clear, foreground_task, run_cli, write_folder, write_registry
from zoo.core.losses import BCEDice, CrossEntropy, Dice, Focal
from zoo.engine.build import task_spec
from zoo.engine.step import HeadPlan
from zoo.core.kinds import LOSS_MODES, OUTPUT_KINDS
from zoo.heads.base import Description, Head
from zoo.tasks.base import HeadSpec, TaskData

REG = zoo.load_registry()


def resolve_one(tmp_path, head_entry: dict, data: TaskData | None = None):
    reg_file = write_registry(tmp_path, {"tasks": {"one": foreground_task(
        heads={"out": head_entry}, metrics={"acc": {"metric": "accuracy", "head": "out", "target": "label"}})}})
    reg = zoo.load_registry([reg_file])
    spec = task_spec("one", reg)
    return spec.task.resolve(spec, data or TaskData({}, {}, {}, {}), reg).heads[0], reg


@pytest.mark.parametrize("head", zoo.list_heads())
def test_every_head_declares_its_output_kind_and_its_loss_gets_that_mode(head, tmp_path):
    """Resolved from ``{head: NAME}`` alone: the kind is declared, the built head agrees with it, and
    the default loss is built in the kind's mode."""
    h, reg = resolve_one(tmp_path, {"head": head})
    assert isinstance(h, HeadSpec) and h.output in OUTPUT_KINDS
    model = zoo.build_model("scratch", [h], encoder_settings={"width": 4, "depth": 2, "input_skip": True},
                            registry=reg)
    assert model.heads["out"].output_kind == h.output
    loss = reg.build("losses", h.loss, **h.loss_settings)
    if hasattr(type(loss), "modes"):
        assert loss.mode == LOSS_MODES[h.output] == h.loss_settings["mode"]


def test_the_circle_heads_kind_follows_its_mode(tmp_path):
    fit, _ = resolve_one(tmp_path, {"head": "circle"})
    regress, reg = resolve_one(tmp_path, {"head": "circle", "settings": {"mode": "regress"}})
    assert (fit.output, regress.output) == ("binary_mask", "circle")
    assert (fit.loss_settings["mode"], regress.loss_settings["mode"]) == ("binary", "regression")
    head = reg.build("heads", "circle", channels=[4, 8], reductions=[1, 2], mode="regress")
    assert head.output_kind == "circle"
    # test-time augmentation: a circle's centre moves back by the shift, read from the kind
    out = torch.tensor([[10.0, 12.0, 5.0]])
    assert head.shift_output(out, dy=1, dx=-1).tolist() == [[11.0, 11.0, 5.0]]


@pytest.mark.parametrize("entry,expect", [
    ({"head": "segmentation", "loss": "bce", "target": "mask"},
     ["loss 'bce' trains in binary mode", "outputs dense_classes", "trained in multiclass mode", "ce_dice"]),
    ({"head": "binary_mask", "loss": "ce_dice", "target": "mask"},
     ["loss 'ce_dice' trains in multiclass mode", "outputs binary_mask", "bce_dice"]),
    ({"head": "classification", "loss": "circle_l1", "target": "label"},
     ["loss 'circle_l1' trains in regression mode", "outputs class_logits"]),
    ({"head": "segmentation", "loss": "dice", "loss_settings": {"mode": "binary"}, "target": "mask"},
     ["loss 'dice' trains in binary mode", "outputs dense_classes"]),
], ids=["bce-segmentation", "ce_dice-binary_mask", "circle_l1-classification", "binary-dice-segmentation"])
def test_a_loss_that_contradicts_its_heads_kind_is_one_clear_error(entry, expect, tmp_path):
    from zoo.core.registry import RegistryError

    with pytest.raises(RegistryError) as e:
        resolve_one(tmp_path, entry)
    for part in expect:
        assert part in str(e.value), (part, str(e.value))
    assert "\n" not in str(e.value)


def test_a_loss_mode_mismatch_through_the_cli_fails_before_training(tmp_path, tiny_mnist, capsys):
    reg = write_registry(tmp_path, {"tasks": {"fg_ce_dice": foreground_task(
        heads={"mask": {"head": "binary_mask", "loss": "ce_dice", "target": "mask"}},
        budget={"epochs": 1, "batch_size": 16, "lr": 0.003})}})
    rc, err = run_cli(["--task", "fg_ce_dice", "--registry", str(reg), "--encoder", "scratch", "--data-root",
                       str(tiny_mnist), "--out", str(tmp_path / "o"), "--no-speed"], capsys)
    assert_clear(rc, err, "head 'mask' (binary_mask)", "loss 'ce_dice' trains in multiclass mode", "bce_dice")


def test_a_head_that_declares_no_output_kind_is_refused_by_name():
    class Undeclared(Head):
        def forward(self, features):
            return features[-1].mean((2, 3))

    with pytest.raises(ValueError, match="Undeclared declares output_kind None.*binary_mask, dense_classes"):
        Undeclared.output_for({})
    enc = REG.build("encoders", "scratch", in_channels=1, width=4, depth=2)
    with pytest.raises(TypeError, match="head 'x' \\(.*Undeclared\\) declares output_kind None"):
        zoo.MultiTaskModel(enc, {"x": Undeclared(enc.out_channels, enc.reductions)})


def test_losses_take_their_mode_not_the_outputs_shape():
    """One-channel logits in multiclass mode are a 1-class softmax (loss 0), not a guessed BCE; the same
    tensor in binary mode is BCE. Class logits [B, N] and maps [B, N, 1, 1] agree in multiclass mode."""
    torch.manual_seed(0)
    logits, mask = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 4, 4))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], mask.float())
    assert CrossEntropy("binary")(logits, mask) == pytest.approx(float(bce))
    assert float(CrossEntropy("multiclass")(logits, torch.zeros_like(mask))) == pytest.approx(0.0, abs=1e-6)
    cls, y = torch.randn(5, 10), torch.randint(0, 10, (5,))
    for loss in (Focal("multiclass"), Dice("multiclass"), BCEDice("multiclass")):
        assert float(loss(cls, y)) == pytest.approx(float(loss(cls[..., None, None], y[:, None, None])), rel=1e-5)
    with pytest.raises(ValueError, match="BCEDice takes mode binary or multiclass, got 'regression'"):
        BCEDice("regression")


def test_class_counts_go_to_the_metrics_that_declare_they_take_them(tmp_path):
    """``confusion`` declares ``takes_class_count``: it gets the data's count and background. A user
    metric whose constructor merely has a ``num_classes`` parameter is not given one."""
    (tmp_path / "user_metric_mod.py").write_text('''
from zoo.core.metrics import Accuracy

class CountingAccuracy(Accuracy):
    def __init__(self, name, head, target, num_classes=None):
        super().__init__(name, head, target)
        self.num_classes = num_classes
''')
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        metrics = {"conf": {"metric": "confusion", "head": "seg", "target": "mask"},
                   "count": {"metric": "counting", "head": "seg", "target": "mask"}}
        seg = foreground_task(heads={"seg": {"head": "segmentation", "target": "mask"}}, metrics=metrics)
        reg_file = write_registry(tmp_path, {"metrics": {"counting": {"target": "user_metric_mod:CountingAccuracy"}},
                                             "tasks": {"seg": seg}})
        reg = zoo.load_registry([reg_file])
        spec = task_spec("seg", reg)
        resolved = spec.task.resolve(spec, TaskData({}, {}, {}, {}, num_classes=5, exclude=[0]), reg)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_metric_mod", None)
    by = {m.name: m.settings for m in resolved.metrics}
    assert by["conf"]["num_classes"] == 5 and by["conf"]["exclude"] == [0]
    assert "num_classes" not in by["count"]
    assert resolved.heads[0].settings["num_classes"] == 5


def test_one_head_spec_from_yaml_to_the_trainer(tmp_path, tiny_mnist):
    """The trainer's plans carry the very HeadSpec objects the task resolved, not copies of their fields."""
    from zoo.engine.build_run import setup
    from zoo.engine.config import RunConfig

    cfg = RunConfig(task="circlization", encoder="scratch", epochs=1, batch_size=8, data_root=str(tiny_mnist),
                    train_limit=32, test_limit=16, encoder_settings={"width": 4, "depth": 2})
    reg = zoo.load_registry()
    spec = task_spec("circlization", reg)
    s = setup(cfg, registry=reg, spec=spec)
    assert s.registry is reg and s.task.spec is spec  # handed down, not rebuilt
    assert all(isinstance(p, HeadPlan) and p.spec is h for p, h in zip(s.plans, s.task.heads))
    assert [(p.name, p.stream, p.target) for p in s.plans] == [("digit", "main", "label"), ("circle", "main", "mask")]
    with pytest.raises(ValueError, match="spec of task 'foreground' for a run of task 'circlization'"):
        setup(cfg, registry=reg, spec=task_spec("foreground", reg))


def test_heads_describe_structured_fields():
    """``zoo.predict`` draws what ``describe`` returns as fields (label, circle, mask), not parsed key names."""
    enc = REG.build("encoders", "scratch", in_channels=1, width=4, depth=2, input_skip=True)
    cls = REG.build("heads", "classification", channels=enc.out_channels, reductions=enc.reductions)
    circle = REG.build("heads", "circle", channels=enc.out_channels, reductions=enc.reductions, mode="regress")
    mask = REG.build("heads", "binary_mask", channels=enc.out_channels, reductions=enc.reductions)
    ident = lambda x, y, r=0.0: (x, y, r)  # noqa: E731
    d = cls.describe(torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([1]), ident)
    assert isinstance(d, Description) and d.label[0] == 1 and d.values == {"class": 1, "prob": d.label[1]}
    assert d.mask is None and d.circle is None
    d = circle.describe(torch.tensor([[4.0, 5.0, 2.0]]), torch.zeros(1, 8, 8), ident)
    assert d.circle == (4.0, 5.0, 2.0) and d.values == {"cx": 4.0, "cy": 5.0, "r": 2.0} and d.label is None
    pred = torch.ones(1, 8, 8, dtype=torch.long)
    d = mask.describe(torch.zeros(1, 1, 8, 8), pred, ident)
    assert d.mask is pred[0] or torch.equal(d.mask, pred[0])
    # the record says what the mask holds (its foreground share); the mask itself is drawn and written
    assert d.values == {"foreground_pct": 100.0} and d.label is None and d.circle is None


def test_result_columns_are_classified_by_their_owners_declarations():
    """Counts (``zoo.data.config``) and the gain's baseline columns (``zoo.runs.gain``) go after the
    row's tail; metrics, ``val_`` metrics and delta_m stay metric columns."""
    from zoo.data.config import is_count, split_counts
    from zoo.runs.gain import is_gain_detail
    from zoo.runs.results import TAIL, columns, metric_columns

    assert split_counts({"train": 3, "val": 1}, "composites") == {"train_composites": 3, "val_composites": 1}
    with pytest.raises(ValueError, match="count unit"):
        split_counts({"train": 3}, "pixels")
    assert is_count("val_digits") and is_count("test_composites") and not is_count("val_iou")
    assert is_gain_detail("single_iou") and not is_gain_detail("delta_m")
    row = {"task": "joint", "encoder": "e", "weighting": "fixed", "iou": 99.0, "val_iou": 98.0, "delta_m": 0.1,
           "train_digits": 10, "train_composites": 5, "single_iou": 98.5, "single_parameters_sum": 7, "gflops": 0.2}
    assert metric_columns([row]) == ["iou", "val_iou", "delta_m"]
    cols = columns([row])
    assert cols.index("train_digits") > cols.index("gflops") and "train_digits" in TAIL
    assert cols[-3:] == ["single_iou", "single_parameters_sum", "train_composites"]


def test_a_several_stream_tasks_speed_columns_declare_their_stream():
    """The joint task declares its speed stream (composites): its own ``gflops`` is one sample of every
    stream, its images/s the composites', and ``speed_stream`` says so. By hand:"""
    from zoo.tasks.joint import JointTask
    from zoo.use.speed import task_columns

    per_stream = {"gflops_digits": 0.1, "gflops_composites": 0.25, "infer_img_s_b1_digits": 300.0,
                  "infer_img_s_b1_composites": 120.0, "eval_batch_composites": 64}
    got = task_columns(per_stream, ["digits", "composites"], JointTask.speed_stream)
    assert got == {"gflops": 0.35, "speed_stream": "composites", "infer_img_s_b1": 120.0, "eval_batch": 64}
    with pytest.raises(ValueError, match="speed stream 'main' is not one of the task's streams"):
        task_columns(per_stream, ["digits", "composites"], "main")


def test_a_models_record_lists_its_tasks_metrics_and_validation_metrics_not_counts():
    """The shipped semantic model's record listed ``val_composites`` (a count) among its validation
    metrics; ``record_of_row`` asks ``is_count``. Its test metrics are the values the task's own metrics
    report (``Metric.result_keys``), not names matched against a table."""
    from zoo.use.pretrained import record_of_row

    model = zoo.create_model("semantic", "scratch")
    row = {"task": "semantic", "encoder": "scratch", "dice": 99.0, "dice_all": 98.0, "miou": 97.0, "miou_all": 96.0,
           "pixel_acc": 99.5, "iou": 1.0, "parameters": 5, "val_dice": 99.1, "val_digits": 500,
           "val_composites": 2000, "val_samples": 3}
    rec = record_of_row(row, model, zoo.load_registry())
    assert rec.val_metrics == {"val_dice": 99.1}
    assert rec.metrics == {"dice": 99.0, "dice_all": 98.0, "miou": 97.0, "miou_all": 96.0, "pixel_acc": 99.5}


@pytest.mark.parametrize("name", zoo.list_pretrained())
def test_a_shipped_models_record_is_rebuilt_from_its_row(name):
    """``benchmarks/make_pretrained.py`` writes a shipped record from the run's results row: from a row with
    the shipped record's values, the record is the shipped one (metrics, the data they were measured on,
    the training data and GFLOPs, which each task describes itself, not a table keyed by task name)."""
    from zoo.use.pretrained import record_of_row

    shipped = zoo.pretrained_meta(name)
    model = zoo.load_model(name)
    row = {"task": shipped["task"], "encoder": shipped["encoder"], **shipped["metrics"], **shipped["val_metrics"],
           **shipped["info"], "parameters": shipped["num_params"], "best_epoch": shipped["best_epoch"],
           "epochs": shipped["epochs"], "train_seconds": shipped["train_seconds"], "machine": shipped["machine"],
           "torch": shipped["torch"], "command": shipped["recipe"]}
    rec = record_of_row(row, model, zoo.load_registry()).replace(file=shipped["file"]).to_dict()
    for key in ("name", "metrics", "metrics_data", "train_data", "heads", "num_params", "input", "in_channels",
                "info", "recipe", "file"):
        assert rec[key] == shipped[key], key
    # the shipped semantic record predates the fix above: its val_composites count is no metric
    assert rec["val_metrics"] == {k: v for k, v in shipped["val_metrics"].items() if k != "val_composites"}
    assert rec["gflops"] == pytest.approx(shipped["gflops"], rel=1e-3)


def test_renamed_folder_head_gets_the_data_classes(tmp_path, capsys):
    """The data's class count goes to the head that predicts classes, whatever its name (it was
    keyed by the hard-coded name 'seg': a renamed head silently got 11 classes)."""
    r = write_folder(tmp_path / "f", n=8, classes=5)
    parts = {"target": "zoo.tasks.folder:FolderTask",
             "heads": {"parts": {"head": "segmentation", "loss": "ce_dice", "target": "mask"}},
             "metrics": {"m": {"metric": "confusion", "head": "parts", "target": "mask", "per_class": True}},
             "monitor": "miou_all", "budget": {"epochs": 1, "batch_size": 2}}
    reg = write_registry(tmp_path, {"tasks": {"parts": parts}})
    from zoo.engine.build_run import setup
    from zoo.engine.config import RunConfig

    s = setup(RunConfig(task="parts", encoder="scratch", data_root=str(r), registry=(str(reg),), epochs=1,
                        encoder_settings={"width": 4}))
    assert s.model.heads["parts"].num_classes == 5 and s.metrics[0].num_classes == 5
    parts["heads"]["parts"]["settings"] = {"num_classes": 11}
    write_registry(tmp_path, {"tasks": {"parts": parts}})
    rc, err = run_cli(["--registry", str(reg), "--task", "parts", "--data-root", str(r), "--out", str(tmp_path / "o"),
                       "--encoder-arg", "width=4"], capsys)
    assert_clear(rc, err, "head 'parts'", "num_classes is 11 in its settings but the data has 5")
