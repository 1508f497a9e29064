"""delta_m against a hand computation, and the joint task end to end through the CLI."""
from __future__ import annotations

import json
import math

import pytest

from zoo.bench import main
from zoo.runs.gain import add_gain, delta_m


def test_delta_m_hand():
    # +1% on one metric, -3% on the other: mean -1%
    assert delta_m({"a": 101.0, "b": 97.0}, {"a": 100.0, "b": 100.0}) == pytest.approx(-1.0)
    # lower-is-better flips the sign
    assert delta_m({"err": 9.0}, {"err": 10.0}, lower_is_better={"err"}) == pytest.approx(10.0)


def test_add_gain_accounting():
    base = {"encoder": "scratch", "weighting": "fixed", "seed": 0, "budget_mode": "default", "data_source": "d"}
    rows = [{**base, "task": "fg", "iou": 90.0, "parameters": 10, "train_seconds": 5.0},
            {**base, "task": "cls", "acc": 80.0, "parameters": 20, "train_seconds": 7.0}]
    joint = {**base, "task": "joint", "weighting": "pcgrad", "iou": 99.0, "acc": 80.0}
    assert add_gain(joint, {"iou": "fg.iou", "acc": "cls.acc"}, rows) == []
    assert joint["delta_m"] == pytest.approx(5.0)
    assert joint["single_parameters_sum"] == 30 and joint["single_train_seconds_sum"] == 12.0
    other = {**joint, "encoder": "resnet18"}
    assert add_gain(other, {"iou": "fg.iou"}, rows) == ["fg"]


def test_a_timed_out_single_task_row_is_no_baseline():
    """A joint run that finishes while its single-task row is still a timeout (no metrics) gets no
    delta_m, and is not crashed by the missing metric; the finished row, once there, is used."""
    base = {"encoder": "resnet50", "weighting": "fixed", "seed": 0, "budget_mode": "default", "data_source": "d"}
    timeout = {**base, "task": "fg", "status": "timeout", "error": "killed after 430 s (--job-timeout)"}
    joint = {**base, "task": "joint", "iou": 99.0}
    assert add_gain(joint, {"iou": "fg.iou"}, [timeout]) == ["fg"] and "delta_m" not in joint
    done = {**base, "task": "fg", "iou": 90.0, "parameters": 10, "train_seconds": 5.0}
    assert add_gain(joint, {"iou": "fg.iou"}, [timeout, done]) == [] and joint["delta_m"] == pytest.approx(10.0)


@pytest.mark.slow
def test_joint_cli_trains_baselines_and_reports_gain(tiny_mnist, tmp_path):
    out = tmp_path / "j"
    rc = main(["--task", "joint", "--encoder", "scratch", "--weighting", "fixed,uncertainty", "--data-root", str(tiny_mnist),
               "--out", str(out), "--quick", "--quiet", "--no-figures", "--encoder-arg", "width=4"])
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["task"] for r in rows) == ["circlization", "foreground", "joint", "joint", "semantic"]
    for r in (r for r in rows if r["task"] == "joint"):
        for m in ("iou", "accuracy", "gated_iou", "dice"):
            assert 0.0 <= r[m] <= 100.0
        assert "delta_m" in r and (math.isnan(r["delta_m"]) or -100 <= r["delta_m"] <= 1e6)
        assert r["single_parameters_sum"] > r["parameters"], "three single-task models hold more than one joint model"


def test_a_replaced_baseline_row_refreshes_the_joint_rows_delta_m(tmp_path):
    """A single-task row rerun (say under an encoder's own budget) replaces its row; the joint row of
    that encoder is then compared with the new row, by hand: Dice 98 -> 99 against a joint 98.01."""
    from zoo.bench import HEADER, refresh_gains
    from zoo.engine.build import load_registry
    from zoo.runs.results import load_rows, write_rows

    ident = {"encoder": "e", "budget_mode": "default", "seed": 0, "parameters": 10, "train_seconds": 1.0}
    singles = [{**ident, "task": "foreground", "weighting": "fixed", "iou": 99.0},
               {**ident, "task": "circlization", "weighting": "fixed", "accuracy": 99.0, "gated_iou": 98.0},
               {**ident, "task": "semantic", "weighting": "fixed", "dice": 98.0}]
    joint = {**ident, "task": "joint", "weighting": "fixed", "iou": 99.0, "accuracy": 99.0, "gated_iou": 98.0,
             "dice": 98.01}
    write_rows(tmp_path, [*singles, joint], HEADER)
    registry = load_registry()
    refresh_gains(tmp_path, registry)
    row = next(r for r in load_rows(tmp_path) if r["task"] == "joint")
    assert row["delta_m"] == pytest.approx(round(100 * (0.01 / 98) / 3, 3)) and row["single_dice"] == 98.0
    singles[2] = {**singles[2], "dice": 99.0}  # the rerun's row, same key
    write_rows(tmp_path, [*singles, row], HEADER)
    refresh_gains(tmp_path, registry)
    row = next(r for r in load_rows(tmp_path) if r["task"] == "joint")
    assert row["delta_m"] == pytest.approx(round(100 * (-0.99 / 99) / 3, 3)) and row["single_dice"] == 99.0


@pytest.mark.slow
def test_a_joint_grid_with_strategy_settings_trains_its_baselines_without_them(tiny_mnist, tmp_path):
    """``--weighting-arg leave_out=[mask]`` is MGDA's setting, not the baselines' (fixed takes none): they
    train without it, under the budget mode the rest of the command gives, and the joint row names
    that mode as its ``baseline_mode``. Before, every baseline failed with "unknown setting(s)
    'leave_out'" and the joint row had no delta_m."""
    from zoo.runs.gain import baseline_key
    from zoo.runs.keys import row_key

    out = tmp_path / "lo"
    rc = main(["--task", "joint", "--encoder", "scratch", "--weighting", "mgda", "--weighting-arg", "leave_out=[mask]",
               "--data-root", str(tiny_mnist), "--out", str(out), "--quick", "--quiet", "--no-figures", "--no-speed",
               "--encoder-arg", "width=4"])
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    by = {r["task"]: r for r in rows}
    assert not any(r.get("status") for r in rows), [r.get("error") for r in rows]
    joint = by["joint"]
    # both custom (width=4), the joint's also keyed by its MGDA setting
    assert joint["baseline_mode"].startswith("custom-quick-") and joint["budget_mode"] != joint["baseline_mode"]
    for task in ("foreground", "circlization", "semantic"):
        assert by[task]["budget_mode"] == joint["baseline_mode"] and "leave_out" not in by[task]["command"]
        assert baseline_key(joint, task) == row_key(by[task])
    assert "delta_m" in joint and "single_parameters_sum" in joint
    # a row without baseline_mode is compared within its own budget mode, as before
    plain = {k: v for k, v in joint.items() if k != "baseline_mode"}
    assert baseline_key(plain, "foreground")[3] == joint["budget_mode"]
