"""zoo.engine.checks: a run's checks before training (here the preflight on one small batch: a head whose
output cannot meet its target is one line naming both shapes)."""
from __future__ import annotations

from conftest import assert_clear, foreground_task, run_cli, write_registry


def test_head_output_that_does_not_fit_its_target(tiny_mnist, tmp_path, capsys):
    reg = write_registry(tmp_path, {"tasks": {"wrong": foreground_task(
        heads={"digit": {"head": "classification", "loss": "ce", "target": "mask"}},
        metrics={"a": {"metric": "accuracy", "head": "digit", "target": "label"}}, budget={"epochs": 1})}})
    rc, err = run_cli(["--registry", str(reg), "--task", "wrong", "--data-root", str(tiny_mnist), "--out",
                       str(tmp_path / "o")], capsys)
    assert_clear(rc, err, "head 'digit' (ClassificationHead)", "output shape (2, 10)", "target 'mask' of shape (2, 28, 28)")
