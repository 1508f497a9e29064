"""zoo.runs.plan: the budget each planned run trains with (the task's default or quick budget, an
encoder's own budget laid over it) and the refusals of a budget a task does not have or cannot read."""
from __future__ import annotations

import json

import pytest

from conftest import assert_clear, foreground_task, run_cli, write_registry


def test_quick_without_quick_budget_is_an_error(tiny_mnist, tmp_path, capsys):
    reg = write_registry(tmp_path, {"tasks": {"fg_noquick": foreground_task(budget={"epochs": 50})}})
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


def enc_budget_task(budgets) -> dict:
    """Registry entries of task ``fg_enc`` with ``budgets`` as its ``encoder_budgets``."""
    return {"tasks": {"fg_enc": foreground_task(budget={"epochs": 1, "batch_size": 32, "train_limit": 64,
                                                        "test_limit": 64},
                                                quick={"epochs": 1, "train_limit": 32}, encoder_budgets=budgets)}}


@pytest.mark.parametrize("budgets,expect", [
    ({"scrach": {"epochs": 2}}, ["encoder_budgets", "'scrach'"]),
    ({"scratch": {"epoch": 2}}, ["unknown budget setting(s) ['epoch']", "valid:"]),
    ({"scratch": 2}, ["encoder_budgets.scratch: must be a non-empty mapping of budget settings", "got 2"]),
    (["scratch"], ["field 'encoder_budgets' must be a mapping"]),
], ids=["unknown-encoder", "unknown-setting", "not-settings", "a-list"])
def test_bad_encoder_budgets(tiny_mnist, tmp_path, capsys, budgets, expect):
    reg = write_registry(tmp_path, enc_budget_task(budgets))
    rc, err = run_cli(["--registry", str(reg), "--task", "fg_enc", "--encoder", "scratch", "--data-root", str(tiny_mnist),
                       "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, *expect)
    assert not (tmp_path / "o" / "results.json").exists()


def test_an_encoder_budget_applies_to_that_encoder_only(tiny_mnist, tmp_path, capsys):
    """scratch's own entry trains it 2 epochs; the task's budget (1 epoch) stays for every other encoder,
    and --quick still lays the quick budget over the encoder's."""
    from zoo.runs.plan import budget_of
    from zoo.engine.build import load_registry, task_spec

    reg = write_registry(tmp_path, enc_budget_task({"scratch": {"epochs": 2, "lr": 0.01}}))
    spec = task_spec("fg_enc", load_registry([reg]))
    assert budget_of(spec, False, "scratch") == {**spec.budget, "epochs": 2, "lr": 0.01}
    assert budget_of(spec, False, "resnet18") == budget_of(spec, False) == spec.budget
    assert budget_of(spec, True, "scratch") == {**spec.budget, "lr": 0.01, "epochs": 1, "train_limit": 32}
    rc, err = run_cli(["--registry", str(reg), "--task", "fg_enc", "--encoder", "scratch", "--encoder-arg", "width=4",
                       "--data-root", str(tiny_mnist), "--out", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    (row,) = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    assert row["epochs"] == 2 and "epoch 2/2" in err


def _needs_root() -> list[str]:
    """The registered tasks that say what their --data-root must be (``Task.check_data``)."""
    import zoo
    from zoo.tasks.base import Task

    reg = zoo.load_registry()
    classes = {t: reg.entry("tasks", t).obj for t in reg.names("tasks")}
    return [t for t, c in classes.items() if isinstance(c, type) and issubclass(c, Task)
            and (c.needs_root or c.check_data is not Task.check_data)]


@pytest.mark.parametrize("task", _needs_root())
def test_a_task_without_offline_data_needs_data_root_before_any_run(task, tmp_path, capsys, monkeypatch):
    """A task with no offline default (COCO, Pets, NYUv2, Cityscapes, folders, npz) and no --data-root is one line
    and exit 2 before the first run: a task with baselines once failed each baseline in turn, writing a failure
    row for each."""
    monkeypatch.delenv("ZOO_DATA", raising=False)
    rc, err = run_cli(["--task", task, "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "need", "--data-root")
    assert not (tmp_path / "o" / "results.json").exists() and not (tmp_path / "o" / "logs").exists()
