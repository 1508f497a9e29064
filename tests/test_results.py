"""Results are never lost or mixed: one directory per run, row keys, locked merges, the user's umask."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

from zoo.engine.build import load_registry, task_spec
from zoo.runs.keys import row_key
from zoo.runs.results import load_rows, write_results
from zoo.engine.evaluate import evaluate_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_rows_are_keyed_by_task_encoder_weighting_budget_and_seed(tmp_path):
    base = {"task": "fg", "encoder": "scratch", "weighting": "fixed", "budget_mode": "default", "seed": 0, "iou": 1.0}
    write_results(tmp_path, [base], "h")
    write_results(tmp_path, [{**base, "budget_mode": "quick", "iou": 2.0}], "h")  # never replaces the default row
    write_results(tmp_path, [{**base, "seed": 1, "iou": 3.0}], "h")  # another seed adds a row
    write_results(tmp_path, [{**base, "iou": 4.0}], "h")  # the same combination replaces its row
    write_results(tmp_path, [{**base, "architecture": "mtan", "iou": 5.0}], "h")  # another architecture adds one
    write_results(tmp_path, [{**base, "decoder": "fpn", "iou": 6.0}], "h")  # another decoder adds one
    rows = {row_key(r): r["iou"] for r in load_rows(tmp_path)}
    # (the last three fields: the world size of a torchrun run, None for one process; the architecture,
    # None for hard sharing; the decoder --decoder gave, None for each head's own)
    assert rows == {("fg", "scratch", "fixed", "default", 0, None, None, None): 4.0,
                    ("fg", "scratch", "fixed", "quick", 0, None, None, None): 2.0,
                    ("fg", "scratch", "fixed", "default", 1, None, None, None): 3.0,
                    ("fg", "scratch", "fixed", "default", 0, None, "mtan", None): 5.0,
                    ("fg", "scratch", "fixed", "default", 0, None, None, "fpn"): 6.0}


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_results(tmp_path, [{"task": "t", "encoder": "e", "weighting": "w", "seed": 0}], "h")
    finally:
        os.umask(old)
    for name in ("results.json", "results.csv", "results.md"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_runs_into_one_out_keep_every_row_and_their_own_metrics(tiny_mnist, tmp_path, trial):
    """Two processes train into one --out at once (two seeds of one combination): both rows are there,
    and each row's metrics are those of the checkpoint in its own run directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "zoo.bench", "--task", "circlization", "--encoder", "scratch",
                               "--data-root", str(tiny_mnist), "--out", str(tmp_path), "--seed", str(seed),
                               "--epochs", "1", "--batch-size", "16", "--encoder-arg", "width=4",
                               "--train-limit", "64", "--test-limit", "40", "--quiet", "--no-figures"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1 + 2 * trial, 2 + 2 * trial)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert sorted(r["seed"] for r in rows) == [1 + 2 * trial, 2 + 2 * trial]
    assert len({r["run_dir"] for r in rows}) == 2
    for r in rows:
        single = evaluate_checkpoint(Path(r["run_dir"]) / "best.pt", split="test")
        assert r["accuracy"] == pytest.approx(round(single["accuracy"], 4), abs=1e-4)
        assert r["gated_iou"] == pytest.approx(round(single["gated_iou"], 4), abs=1e-4)
    assert not list(tmp_path.glob("**/*.tmp"))


def _zoo_table():
    return load_script("zoo_table")


def test_zoo_table_ranks_merges_cost_columns_and_fills_delta_m(tmp_path):
    """The model-zoo README generator on hand-made rows: ranking by the task's metric, failure rows
    last, speed and memory columns merged by (task, encoder), delta_m by hand."""
    table = _zoo_table()
    gpu = {"device": "cuda:0", "machine": "NVIDIA H200 + 16 CPU cores (x86_64)"}
    cpu = {"device": "cpu", "machine": "2 CPU cores (x86_64)"}
    base = {"weighting": "fixed", "budget_mode": "default", "seed": 0, "parameters": 1_000_000, "train_seconds": 10.0}
    rows = [
        {**base, **gpu, "task": "foreground", "encoder": "scratch", "iou": 99.0},
        {**base, **cpu, "task": "foreground", "encoder": "resnet18", "iou": 99.5, "epochs": 20},
        {**base, "task": "foreground", "encoder": "resnet34", "status": "timeout", "error": "killed after 9 s"},
        {**base, **gpu, "task": "circlization", "encoder": "scratch", "accuracy": 98.0, "gated_iou": 97.0},
        {**base, **gpu, "task": "semantic", "encoder": "scratch", "dice": 96.0},
        # gated IoU 1 % above its single-task model, the rest equal: circlization +0.5 %, mean of 3 tasks
        {**base, **gpu, "task": "joint", "encoder": "scratch", "iou": 99.0, "accuracy": 98.0, "gated_iou": 97.97,
         "dice": 96.0},
    ]
    write_results(tmp_path / "zoo", rows, "h")
    write_results(tmp_path / "speed", [{**base, "task": "foreground", "encoder": "scratch", "weighting": "-",
                                         "budget_mode": "untrained", "gflops": 0.0357, "infer_img_s_beval": 1000.0}], "h")
    write_results(tmp_path / "memory", [{**base, **cpu, "task": "foreground", "encoder": "resnet18", "weighting": "-",
                                          "budget_mode": "untrained", "train_peak_memory_mb": 222.8,
                                          "train_batch": 64}], "h")
    merged = {(r["task"], r["encoder"]): r for r in table.merge(tmp_path / "zoo", tmp_path / "speed",
                                                                  tmp_path / "memory")}
    assert merged[("joint", "scratch")]["delta_m"] == pytest.approx(0.167)
    assert merged[("foreground", "scratch")]["gflops"] == 0.0357
    assert merged[("foreground", "resnet18")]["train_peak_memory_mb"] == 222.8
    assert "status" not in merged[("foreground", "scratch")] and "gflops" not in merged[("foreground", "resnet34")]
    lines = table.ranking(list(merged.values()), task_spec("foreground", load_registry())).splitlines()
    assert lines[2].startswith("| 1 | resnet18 | 99.50 | - | 20 |") and lines[2].endswith("| 223 | 10 | - | - | 2 CPU cores (x86_64) |")
    assert lines[3].startswith("| 2 | scratch | 99.00 |") and lines[3].endswith("| H200 |")
    assert lines[4].startswith("| - | resnet34 | **timeout**: killed after 9 s |")
    assert json.loads((tmp_path / "zoo" / "results.json").read_text())["rows"]  # merged columns were written back


def test_a_torchrun_row_never_replaces_the_one_process_row(monkeypatch):
    """Rows of a torchrun run carry its world size in their key and their command says torchrun."""
    from zoo.bench import command_line
    from zoo.runs.identity import launched_world
    from zoo.runs.results import merge_rows

    one = {"task": "foreground", "encoder": "scratch", "weighting": "fixed", "budget_mode": "default", "seed": 0,
           "iou": 99.1}
    assert launched_world() is None and command_line(["--task", "foreground"]) == "python -m zoo.bench --task foreground"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    two = {**one, "world_size": launched_world(), "iou": 99.3}
    assert command_line(["--task", "foreground"]) == "torchrun --nproc_per_node 2 -m zoo.bench --task foreground"
    merged = merge_rows([one], [two])
    assert sorted(r["iou"] for r in merged) == [99.1, 99.3]
    assert merge_rows(merged, [{**two, "iou": 99.4}]) == [one, {**two, "iou": 99.4}]  # a rerun replaces its own row


@pytest.mark.parametrize("rows", [[{"name": "someone else's"}], [["a", "list"]], [{"task": "foreground"}]],
                         ids=["foreign-dict", "not-a-dict", "no-key-fields"])
def test_a_results_file_with_a_foreign_row_is_refused(tmp_path, rows, capsys):
    """A results.json whose rows are not zoo rows is a one-line error naming the file and the row, not an
    empty table line (and no run trains into that folder)."""
    from zoo.bench import main

    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    with pytest.raises(ValueError, match=r"results.json: row 1 is not a zoo result row \(no "):
        load_rows(tmp_path)
    assert main(["--task", "foreground", "--quick", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "row 1 is not a zoo result row" in err and "Traceback" not in err and "epoch 1/" not in err


_WRITER = """
import errno, os, signal, sys
from pathlib import Path
import zoo.runs.results as res

out, dies_at, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
real = res.atomic_write_text

def dying(path, text):
    if Path(path).name == dies_at and how == "disk-full":
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    real(path, text)
    if Path(path).name == dies_at:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 right after this file is replaced

res.atomic_write_text = dying
base = {"task": "foreground", "encoder": "scratch", "weighting": "fixed", "budget_mode": "default"}
res.write_results(out, [{**base, "seed": 1, "iou": 98.0}], "h")
"""


@pytest.mark.parametrize("how", ["kill-9", "disk-full"])
@pytest.mark.parametrize("dies_at", ["results.json", "results.csv", "results.md"])
def test_the_three_results_files_agree_after_a_kill_or_a_full_disk(tmp_path, dies_at, how):
    """results.json is the source of truth, written first; the CSV and Markdown are views of it. A process
    killed (kill -9) right after any of the three is replaced, or a disk that fills while one is written,
    leaves files that agree once read (a reader rebuilds the views), and no row is lost by the next run."""
    import csv as csv_module

    base = {"task": "foreground", "encoder": "scratch", "weighting": "fixed", "budget_mode": "default"}
    write_results(tmp_path, [{**base, "seed": 0, "iou": 99.0}], "h")
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path), dies_at, how], capture_output=True, text=True)
    if how == "kill-9":
        assert proc.returncode == -9, proc.stderr
    else:
        assert proc.returncode == 1 and "No space left on device" in proc.stderr
        if dies_at != "results.json":
            assert "results.json holds every row" in proc.stderr  # the message says where the row is
    # a full disk during the JSON keeps the old rows; anything after it has the new row in the JSON
    want = [0] if (how, dies_at) == ("disk-full", "results.json") else [0, 1]

    def agree() -> None:
        rows = load_rows(tmp_path)
        assert sorted(r["seed"] for r in rows) == want
        with open(tmp_path / "results.csv", newline="") as f:
            assert sorted(int(r["seed"]) for r in csv_module.DictReader(f)) == want
        md = (tmp_path / "results.md").read_text()
        assert md.count("| scratch | fixed |") == len(want) and ("98.00" in md) == (1 in want)

    agree()
    write_results(tmp_path, [{**base, "seed": 2, "iou": 97.0}], "h")
    want.append(2)
    agree()


def test_mtl_table_scores_each_seed_and_takes_side_by_side_step_time():
    """The MTL README generator on hand-made rows: delta_m per seed against that seed's single-task
    rows, then mean ± std; step time per run over hard+fixed of its seed, or, given mtl_step.py's
    JSON, that measurement's ratios; a configuration it did not measure is '-'."""
    mtl = load_script("mtl_table")
    base = {"encoder": "scratch", "budget_mode": "default", "parameters": 1000, "train_seconds": 10.0}
    single = {"foreground": {"iou": 99.0}, "circlization": {"accuracy": 95.0, "gated_iou": 94.0},
              "semantic": {"dice": 94.0}}
    rows = [{**base, "task": t, "weighting": "fixed", "seed": s, **m} for s in (0, 1) for t, m in single.items()]
    equal = {"iou": 99.0, "accuracy": 95.0, "gated_iou": 94.0, "dice": 94.0}
    # seed 0: every metric 1 % above its single-task model (+1.0); seed 1: accuracy and Dice 2 % above (+1.0)
    rows += [{**base, "task": "joint", "weighting": "fixed", "architecture": "mtan", "seed": 0, "train_seconds": 15.0,
              "iou": 99.99, "accuracy": 95.95, "gated_iou": 94.94, "dice": 94.94},
             {**base, "task": "joint", "weighting": "fixed", "architecture": "mtan", "seed": 1, "train_seconds": 30.0,
              **equal, "accuracy": 96.9, "dice": 95.88}]
    rows += [{**base, "task": "joint", "weighting": "fixed", "seed": s, **equal} for s in (0, 1)]
    rows[-1]["train_seconds"] = 20.0
    text, stats = mtl.table(rows)
    assert stats["mtan", "fixed"]["delta_m"] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert stats["hard_sharing", "fixed"]["delta_m"] == [0.0, 0.0]
    assert stats["mtan", "fixed"]["rel_time"] == [1.5, 1.5]  # 15 / 10 (seed 0), 30 / 20 (seed 1)
    mtan = next(line for line in text.splitlines() if line.startswith("| mtan | fixed |"))
    assert "| 1.000 ± 0.000 | 1.50 ± 0.00 |" in mtan
    step = {"rows": [{"architecture": "hard_sharing", "weighting": "fixed", "relative": 1.0, "relative_memory": 1.0,
                      "peak_mb": 8.25},
                     {"architecture": "mtan", "weighting": "upgrad", "relative": 2.0, "relative_memory": 1.5,
                      "peak_mb": 12.4}]}
    text, _ = mtl.table(rows, step)
    assert "(side by side)" in text.splitlines()[0]
    lines = {tuple(line.split(" | ")[:2]): line for line in text.splitlines()[2:] if line.startswith("| ")}
    assert lines["| mtan", "fixed"].endswith("| 1.000 ± 0.000 | - | - | - |")
    assert lines["| hard_sharing", "fixed"].endswith("| 1.00 | 1.00 | 8.2 |")
    # a variant of the joint task from a registry file (the committed histogram-head one): only its rows,
    # against its entry's baselines, the same single-task rows
    variant = [{**r, "task": "joint_histogram"} for r in rows if r["task"] == "joint" and "architecture" in r]
    registry = [str(ROOT / "benchmarks/results/mtl/histogram_head/registry.yaml")]
    _, stats = mtl.table(rows + variant, task="joint_histogram", registry=registry)
    assert list(stats) == [("mtan", "fixed")] and stats["mtan", "fixed"]["delta_m"] == pytest.approx([1.0, 1.0], abs=1e-3)
    # another multi-task task: its columns and baselines come from its registry entry (monitor first; an
    # error is not a percentage)
    scenes = {"scenes_seg": {"seg_miou": 50.0, "seg_pixel_acc": 80.0},
              "scenes_depth": {"depth_abs_err": 0.5, "depth_rel_err": 0.2, "depth_delta1": 70.0},
              "scenes_normals": {"normals_mean": 20.0, "normals_median": 15.0, "normals_within_11_25": 40.0,
                                 "normals_within_22_5": 60.0, "normals_within_30": 70.0}}
    rows = [{**base, "task": t, "weighting": "fixed", "seed": 0, **m} for t, m in scenes.items()]
    joint = {k: v for m in scenes.values() for k, v in m.items()}
    rows.append({**base, "task": "scenes", "weighting": "fixed", "seed": 0, **joint})
    text, stats = mtl.table(rows, task="scenes")
    head = text.splitlines()[0].split(" | ")
    assert head[3:6] == ["seg_miou (%)", "depth_delta1 (%)", "normals_within_11_25 (%)"]
    assert "depth_abs_err (lower is better)" in head and stats["hard_sharing", "fixed"]["delta_m"] == [0.0]
    assert "scenes_depth: depth_abs_err 0.50, depth_rel_err 0.20 (1 seeds)" in text
    # a reference run whose seconds rounded to 0 (a smoke run) gives no step-time ratio, not a ZeroDivisionError
    rows[-1]["train_seconds"] = 0.0
    _, stats = mtl.table(rows, task="scenes")
    assert stats["hard_sharing", "fixed"]["rel_time"] == []


def test_decoder_table_gives_each_rows_output_stride_from_the_decoder():
    """The decoder table's output-stride column: each decoder's own declaration on the scratch encoder as the
    task's budget builds it (input_skip: the raw input joins the stride-1 level), hand-checked against what each
    decoder reads (heads/smp_decoders.py): the scratch encoder's strides are 1, 2, 4, 8, so fpn's four deepest
    levels start at stride 1, and the deepest-level decoders stop at 8."""
    table = load_script("decoder_table")
    want = {"unet": 1, "linknet": 1, "unetplusplus": 1, "manet": 1, "fpn": 1, "pan": 4, "segformer": 4,
            "upernet": 4, "deeplabv3plus": 4, "deeplabv3": 8, "pspnet": 8}
    assert {d: table.output_stride("semantic", d, "scratch") for d in want} == want
    row = {"task": "foreground", "decoder": "segformer", "encoder": "scratch", "iou": 74.5, "parameters": 5.5e5,
           "epochs": 20, "gflops": 0.059}
    (line,) = [line for line in table.ranking([row], "foreground") if line.startswith("| segformer")]
    assert line.startswith("| segformer | scratch | 74.50 | 4 | 0.059 | 0.55 |")


def test_decoder_table_trains_a_timm_encoder_as_smp_builds_it_for_each_decoder():
    """On resnet18 (strides 1 with input_skip, then 2-32) each row is smp's model: DeepLabV3 dilated to output
    stride 8, DeepLabV3+ and PAN to 16, PSPNet cut at stride 8 (smp's create_model), so DeepLabV3+ (which
    refuses an undilated encoder) has a row to make and the deepest-level decoders stop at 8, not 32; the plan
    gives gpu_session.sh one zoo.bench per encoder setting, and a decoder no setting serves (dpt) has none."""
    table = load_script("decoder_table")
    want = {"unet": 1, "linknet": 1, "unetplusplus": 1, "manet": 1, "fpn": 4, "pan": 4, "segformer": 4,
            "upernet": 4, "deeplabv3plus": 4, "deeplabv3": 8, "pspnet": 8}
    assert {d: table.output_stride("semantic", d, "resnet18") for d in want} == want
    assert not table.serves("semantic", "dpt", "resnet18")
    plan = table.plan(["foreground", "semantic"], ["scratch", "resnet18"])
    assert plan == ["scratch\tdeeplabv3,deeplabv3plus,fpn,linknet,manet,pan,pspnet,segformer,unet,unetplusplus,upernet\t",
                    "resnet18\tdeeplabv3\toutput_stride=8", "resnet18\tdeeplabv3plus,pan\toutput_stride=16",
                    "resnet18\tfpn,linknet,manet,segformer,unet,unetplusplus,upernet\t",
                    "resnet18\tpspnet\tout_indices=[0,1,2]"]
    assert table.missing([{"task": "semantic", "encoder": "resnet18", "decoder": "pan"}], ["semantic"])[1] == \
        "- semantic / resnet18: deeplabv3, deeplabv3plus, fpn, linknet, manet, pspnet, segformer, unet, unetplusplus, upernet"


def test_decoder_table_raises_a_served_pairs_build_fault_instead_of_hiding_it_as_a_missing_row(monkeypatch):
    """DPT's block indices do not fit resnet18 (a build error) and DPT refuses a CNN anyway: no row. The same
    build error on a pair the decoder serves (resnet18 + pan, dilated to 16) is a fault in zoo, and the table
    raises it rather than listing the pair as one that cannot be made."""
    table = load_script("decoder_table")
    assert table.read_levels("semantic", "dpt", "resnet18") is None
    plain = table.levels

    def broken(task, encoder, args="{}"):
        if args != "{}":
            raise IndexError("list index out of range")
        return plain(task, encoder, args)

    monkeypatch.setattr(table, "levels", broken)
    assert table.read_levels("semantic", "dpt", "resnet18") is None
    with pytest.raises(IndexError):
        table.read_levels("semantic", "pan", "resnet18")


def test_mtl_table_findings_judge_by_mean_minus_std_over_three_seeds():
    """The paragraph under the MTL table, on hand-made delta_m, by the project's one rule (A beats B when A's
    mean minus std is above B's mean): above 0 beats the single-task models, mean plus std below 0 loses, the
    rest is even; the best does not beat those whose mean reaches its mean minus std; fewer than 3 finite
    delta_m is not judged (a NaN seed is counted apart), and a std of 0 is called out."""
    mtl = load_script("mtl_table")
    nan = float("nan")
    stats = {("mtan", "fixed"): {"delta_m": [3.0, 4.0, 5.0]},        # 4 ± 1: beats (3 > 0); the best
             ("cgc", "famo"): {"delta_m": [2.5, 3.5, 4.5]},          # 3.5 ± 1: beats; 3.5 >= 4 - 1: near the best
             ("hard_sharing", "dwa"): {"delta_m": [0.5, 1.0, 1.5]},  # 1 ± 0.5: beats, but 1 < 3: below the best
             ("hard_sharing", "fixed"): {"delta_m": [-1.0, 0.0, 1.0]},  # 0 ± 1: even
             ("cgc", "upgrad"): {"delta_m": [-3.0, -2.0, -1.0]},     # -2 ± 1: loses
             ("mtan", "cagrad"): {"delta_m": [9.0, 9.0, nan]},       # 2 finite of 3 seeds: not judged
             ("cgc", "dwa"): {"delta_m": [0.5, 0.5, 0.5, nan]},      # 3 finite: judged; std 0
             ("cgc", "nash_mtl"): {"delta_m": [5.0]}}                # one seed: not judged, and not "1 seeds"
    text = mtl.findings(stats)
    lines = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- ")}
    beat = lines["- Beat their single-task models"]
    assert beat.endswith("mtan + fixed (+4.00 ± 1.00), cgc + famo (+3.50 ± 1.00), hard_sharing + dwa (+1.00 ± 0.50), "
                         "cgc + dwa (+0.50 ± 0.00).")
    assert lines["- Lose to them (mean plus std below 0)"].endswith("cgc + upgrad (-2.00 ± 1.00).")
    assert lines["- Neither, within seed noise of them"].endswith("hard_sharing + fixed (+0.00 ± 1.00).")
    best = next(v for k, v in lines.items() if k.startswith("- The best mean"))
    assert "is mtan + fixed (+4.00 ± 1.00). It does not beat (within seed noise of it): cgc + famo (+3.50 ± 1.00). " \
           "It beats: hard_sharing + dwa" in best
    assert lines["- A std of 0 over 3 seeds is not a real noise estimate"].endswith("cgc + dwa (+0.50 ± 0.00).")
    assert "mtan + cagrad (3 seeds, 2 with a finite delta_m)" in lines["- Not judged yet"]
    assert "cgc + nash_mtl (1 seed, 1 with a finite delta_m)" in lines["- Not judged yet"]
    assert "No configuration has 3 seeds" in mtl.findings({("mtan", "fixed"): {"delta_m": [1.0, nan, nan]}})


def test_rescore_reproduces_a_row_from_its_best_checkpoint_and_scores_another(tiny_mnist, tmp_path):
    """benchmarks/rescore.py: best.pt gives back the row's own test metrics (the same scoring), last.pt
    a row naming it, without the validation fields of the other checkpoint; the original stays."""
    from zoo.bench import main as bench

    res = tmp_path / "res"
    assert bench(["--task", "foreground", "--encoder", "scratch", "--quick", "--epochs", "2", "--data-root",
                  str(tiny_mnist), "--out", str(res), "--quiet", "--no-figures", "--no-speed", "--device", "cpu"]) == 0
    script = load_script("rescore")
    (row,) = load_rows(res)
    before = (res / "results.json").read_text()
    with pytest.raises(SystemExit):
        script.main([str(res), "--out", str(res)])
    for ckpt in ("best.pt", "last.pt"):
        assert script.main([str(res), "--checkpoint", ckpt, "--out", str(tmp_path / ckpt)]) == 0
        (new,) = load_rows(tmp_path / ckpt)
        assert new["scored_checkpoint"] == ckpt and row_key(new) == row_key(row)
        assert "best_epoch" not in new and not any(k.startswith("val_") for k in new)
        if ckpt == "best.pt":
            assert {k: new[k] for k in ("iou", "iou_dice")} == {k: row[k] for k in ("iou", "iou_dice")}
    assert (res / "results.json").read_text() == before


def test_foreground_errors_split_a_joint_rows_iou_into_false_positives_and_negatives(tiny_mnist, tmp_path):
    """benchmarks/foreground_errors.py scores the mask head's stream alone and gives back the row's IoU;
    its pixel counts are the IoU's own (IoU = (true - FN) / (true + FP))."""
    from zoo.bench import main as bench

    res = tmp_path / "res"
    assert bench(["--task", "joint", "--encoder", "scratch", "--quick", "--no-baselines", "--encoder-arg", "width=4",
                  "--data-root", str(tiny_mnist), "--out", str(res), "--quiet", "--no-figures", "--no-speed",
                  "--device", "cpu"]) == 0
    script = load_script("foreground_errors")
    (row,) = load_rows(res)
    r = script.mask_errors(str(Path(row["run_dir"]) / "best.pt"))
    assert round(r["iou"], 4) == row["iou"]
    # (a tiny run's threshold head may already be exact here: the split is checked, not its size)
    assert r["false_pos"] >= 0 and r["false_neg"] >= 0 and r["errors"] == r["false_pos"] + r["false_neg"]
    assert r["true_pixels"] > 0
    assert r["iou"] == pytest.approx(100 * (r["true_pixels"] - r["false_neg"]) / (r["true_pixels"] + r["false_pos"]))
    assert bench(["--task", "circlization", "--encoder", "scratch", "--quick", "--encoder-arg", "width=4", "--data-root",
                  str(tiny_mnist), "--out", str(tmp_path / "c"), "--quiet", "--no-figures", "--no-speed",
                  "--device", "cpu"]) == 0
    with pytest.raises(SystemExit, match="no binary iou metric"):
        script.mask_errors(str(Path(load_rows(tmp_path / "c")[0]["run_dir"]) / "best.pt"))


def test_tables_show_the_budget_and_label_smoke_rows(tmp_path):
    """A quick row sits beside a real one only with its budget named and marked as a smoke run, in the
    Markdown and in the terminal table."""
    from rich.console import Console

    from zoo.runs.results import print_table

    base = {"task": "foreground", "encoder": "scratch", "weighting": "fixed", "seed": 0}
    rows = [{**base, "budget_mode": "default", "iou": 99.7}, {**base, "budget_mode": "quick", "iou": 41.0},
            {**base, "budget_mode": "custom-quick-1a2b3c4d", "iou": 40.0}]
    write_results(tmp_path, rows, "h")
    md = (tmp_path / "results.md").read_text()
    assert "| encoder | weighting | budget |" in md
    assert "| scratch | fixed | default |" in md and "| scratch | fixed | quick (smoke) |" in md
    assert "| custom-quick-1a2b3c4d (smoke) |" in md
    console = Console(record=True, width=200)
    print_table(load_rows(tmp_path), "t", console)
    assert "quick (smoke)" in console.export_text()


def test_a_nan_delta_m_says_why():
    """A baseline that scored 0 (a smoke run can) makes delta_m undefined: the row names the baseline and
    the reason, and a later baseline that scored drops it."""
    from zoo.runs.gain import REASON, add_gain

    base = {"encoder": "scratch", "weighting": "fixed", "budget_mode": "quick", "seed": 0}
    rows = [{**base, "task": "circlization", "accuracy": 13.0, "gated_iou": 0.0, "parameters": 10, "train_seconds": 1.0}]
    joint = {**base, "task": "joint", "accuracy": 12.0, "gated_iou": 1.0}
    baselines = {"accuracy": "circlization.accuracy", "gated_iou": "circlization.gated_iou"}
    assert add_gain(joint, baselines, rows) == []
    assert joint["delta_m"] != joint["delta_m"]  # NaN
    assert "baseline circlization.gated_iou is 0" in joint[REASON]
    rows[0]["gated_iou"] = 50.0
    add_gain(joint, baselines, rows)
    assert REASON not in joint and joint["delta_m"] == pytest.approx(100 * ((12 - 13) / 13 + (1 - 50) / 50) / 2, abs=1e-3)


def test_scenes_grid_driver_runs_its_configurations_resumes_and_goes_on_past_a_failure(tmp_path):
    """benchmarks/scenes_grid.sh as a user runs it (smoke budgets, tiny scenes, no baselines): each strategy group
    trains and the table is written with its paragraph; run again, it starts nothing; a group that fails (an
    unknown strategy) does not stop the groups after it, and the exit status says it failed."""
    tiny = ["--no-baselines", "--task-arg", "size=[32, 32]", "--task-arg", "train_size=8", "--task-arg", "val_size=4",
            "--task-arg", "test_size=4"]
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path / "res"), "SMOKE": "1", "JOBS": "1",
           "SCENE_ARCHS": "hard_sharing", "SCENE_SEEDS": "0", "SCENE_STRATS": "nonsense,fixed fixed,uncertainty"}

    def drive() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(ROOT / "benchmarks/scenes_grid.sh"), *tiny], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    first = drive()
    assert first.returncode == 1, first.stderr[-2000:]  # the unknown strategy's group failed ...
    assert "nonsense" in first.stderr
    rows = load_rows(tmp_path / "res")
    assert sorted(r["weighting"] for r in rows) == ["fixed", "uncertainty"]  # ... and the next group still ran
    readme = (tmp_path / "res" / "README.md").read_text()
    assert "| hard_sharing | fixed | 1 |" in readme and "**What the table shows**" in readme
    env["SCENE_STRATS"] = "fixed,uncertainty"
    again = drive()
    assert again.returncode == 0, again.stderr[-2000:]
    assert "start scenes" not in again.stdout + again.stderr  # finished rows are skipped
    assert len(load_rows(tmp_path / "res")) == 2


def test_scenes_class_iou_on_a_hand_made_case():
    """benchmarks/scenes_class_iou.py's per-class IoU: class 0 2 of 3 pixels, class 1 1 of 2, the absent others 0."""
    import torch

    script = load_script("scenes_class_iou")
    true = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 0, 0, 1]])
    assert script.class_iou(pred, true) == pytest.approx([200 / 3, 50.0, 0.0, 0.0, 0.0, 0.0])
