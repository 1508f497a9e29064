"""The model-zoo README: rankings per task and accuracy-vs-cost plots from a grid's result rows.

    python benchmarks/zoo_table.py --results benchmarks/results/zoo --speed benchmarks/results/zoo/speed \
        --memory benchmarks/results/zoo/memory

Rows come from ``python -m zoo.bench --task all --encoder all --out <results>``; speed columns
(GFLOPs, inference images/s) from ``benchmarks/speed.py`` measured on the GPU with nothing else
running, merged by (task, encoder), because the training runs shared one GPU and their own
timings would measure the sharing. The training peak memory comes from one ``speed.py
--no-timing`` pass (``--memory``) for every row alike: the tensors two training steps hold at the
task's batch size, in float32. Joint rows get delta_m against
the same encoder's single-task rows (LibMTL's definition, zoo.runs.gain). Rerun after the grid gains
rows: the README and plots are rebuilt from what the folder holds.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from zoo.core.registry import Registry
from zoo.engine.build import load_registry, task_spec
from zoo.runs.gain import refresh_gains
from zoo.runs.results import load_rows, locked, write_rows
from zoo.tasks.base import TaskSpec

# not peak_memory_mb: speed.py did not reset CUDA's peak between combinations in the 2026-11-28
# GPU session, so those rows carry the largest peak measured so far (training memory: --memory)
SPEED = ("gflops", "infer_img_s_b1", "infer_img_s_b1_std", "infer_img_s_beval", "infer_img_s_beval_std", "eval_batch")
HEADER = ("Model-zoo grid: every registered encoder x reference task at the task's default budget "
          "(benchmarks/results/zoo/README.md).")


def merge(results: Path, speed: Path, memory: Path, registry: Registry | None = None) -> list[dict]:
    """Speed and memory columns and joint delta_m into the grid's rows (rewritten under the folder's lock)."""
    registry = registry or load_registry()
    speeds = {(r["task"], r["encoder"]): r for r in load_rows(speed)}
    memories = {(r["task"], r["encoder"]): r for r in load_rows(memory)}
    with locked(results):
        rows = load_rows(results)
        for r in rows:
            if "architecture" in r:  # the speed script measures hard sharing: no other architecture's columns
                continue
            s = speeds.get((r["task"], r["encoder"]))
            if s and not r.get("status"):
                # (a several-stream task's own columns, e.g. the joint task's, are in its speed row:
                # zoo.use.speed.task_columns, the stream named in speed_stream)
                r.update({k: v for k, v in s.items() if k.startswith(SPEED) or k == "speed_stream"})
                r["speed_source"] = "benchmarks/speed.py, idle GPU"
            m = memories.get((r["task"], r["encoder"]))
            if m and not r.get("status"):
                r["train_peak_memory_mb"], r["train_peak_memory_source"] = m["train_peak_memory_mb"], (
                    f"benchmarks/speed.py --no-timing, batch {m['train_batch']}, {m['device']}")
        refresh_gains(rows, registry)  # every joint row against the baselines there now, never a stale one
        write_rows(results, rows, HEADER)
    return rows


def fmt(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def task_order(rows: list[dict], specs: dict[str, TaskSpec]) -> list[str]:
    """The tasks the rows hold, single-task ones first, in the order a several-task task's baselines name
    them (the order its delta_m compares them in), then the several-task ones (the registry's ``baselines``)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    named = [b.split(".")[0] for t in tasks for b in specs[t].baselines.values()]
    singles = [t for t in dict.fromkeys(named) if t in tasks]
    singles += [t for t in tasks if t not in singles and not specs[t].baselines]
    return singles + [t for t in tasks if specs[t].baselines]


def metric_columns(spec: TaskSpec, rows: list[dict]) -> list[str]:
    """A task's metric columns: its validation monitor(s) first (what ranks it), then its other metrics that
    the rows hold as a column of that name."""
    others = [m.name for m in spec.metrics if m.name not in spec.monitor and any(m.name in r for r in rows)]
    return [*spec.monitor, *others]


def score(r: dict, spec: TaskSpec) -> float:
    """What a task's ranking sorts by: its monitor, as the checkpoint was chosen (several: their mean)."""
    return sum(float(r[m]) for m in spec.monitor) / len(spec.monitor)


def plot(rows: list[dict], out: Path, specs: dict[str, TaskSpec]) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encoders = sorted({r["encoder"] for r in rows})
    colors = {e: plt.cm.tab10(i % 10) for i, e in enumerate(encoders)}  # one colour per encoder in every panel

    tasks = [t for t in task_order(rows, specs) if any(r["task"] == t and not r.get("status") for r in rows)]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 7.5), squeeze=False)
    for j, task in enumerate(tasks):
        done = [r for r in rows if r["task"] == task and not r.get("status") and "gflops" in r]
        monitor = specs[task].monitor
        label = monitor[0] if len(monitor) == 1 else f"mean of {len(monitor)} metrics"
        for i, (x, xlabel) in enumerate((("gflops", "GFLOPs per image"),
                                          ("infer_img_s_beval", "inference images/s (eval batch, H200)"))):
            ax = axes[i][j]
            pts = [(float(r[x]), score(r, specs[task])) for r in done]
            span_x = (max(p[0] for p in pts) - min(p[0] for p in pts)) or 1.0
            span_y = (max(p[1] for p in pts) - min(p[1] for p in pts)) or 1.0
            placed: list[tuple[float, float]] = []
            for r, (px, py) in zip(done, pts):
                ax.scatter(px, py, s=30, color=colors[r["encoder"]])
                # a label near one already placed (two encoders at about the same cost and score) goes below
                near = any(abs(px - qx) < 0.12 * span_x and abs(py - qy) < 0.06 * span_y for qx, qy in placed)
                ax.annotate(r["encoder"].replace("mobilenetv3_", "mnv3_"), (px, py), fontsize=7,
                            xytext=(3, -9 if near else 3), textcoords="offset points")
                placed.append((px, py))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"test {label} (%)")
            ax.set_title(task)
            ax.grid(alpha=0.3)
    fig.suptitle("zoo: test metric against cost (train: 5,000 MNIST digits; default budgets; seed 0)")
    fig.tight_layout()
    path = out / "accuracy_vs_cost.png"
    fig.savefig(path, dpi=110)
    return path


def trained_on(r: dict) -> str:
    """The machine a row was trained on, short: the GPU's name, or the CPU."""
    name = str(r.get("machine", "?"))
    return name.split(" + ")[0].replace("NVIDIA ", "") if str(r.get("device", "")).startswith("cuda") else name


def ranking(rows: list[dict], spec: TaskSpec) -> str:
    """The task's table: its rows ranked by ``score``, then its failed rows."""
    task = spec.name
    done = sorted((r for r in rows if r["task"] == task and not r.get("status")), key=lambda r: score(r, spec),
                  reverse=True)
    metrics = metric_columns(spec, [r for r in rows if r["task"] == task])
    cols = metrics + (["delta_m"] if spec.baselines else [])
    head = ["rank", "encoder", *cols, "val " + metrics[0], "epochs", "params (M)", "GFLOPs", "infer img/s (b1)",
            "infer img/s (eval batch)", "train peak MB", "train s", "train samples/s", "wall s", "trained on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(done, 1):
        lines.append("| " + " | ".join([
            str(i), r["encoder"], *[fmt(r.get(c)) for c in cols], fmt(r.get("val_" + metrics[0])),
            str(r.get("epochs", "-")), fmt(r["parameters"] / 1e6), fmt(r.get("gflops"), 4), fmt(r.get("infer_img_s_b1"), 0),
            fmt(r.get("infer_img_s_beval"), 0), fmt(r.get("train_peak_memory_mb"), 0), fmt(r.get("train_seconds"), 0),
            fmt(r.get("train_samples_per_s"), 0), fmt(r.get("wall_seconds"), 0), trained_on(r)]) + " |")
    for r in rows:
        if r["task"] == task and r.get("status"):
            lines.append(f"| - | {r['encoder']} | **{r['status']}**: {r.get('error', '')} |" + " |" * (len(head) - 3))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="benchmarks/results/zoo")
    p.add_argument("--speed", default="benchmarks/results/zoo/speed")
    p.add_argument("--memory", default="benchmarks/results/zoo/memory")
    p.add_argument("--intro", default=None, help="a Markdown file whose text goes above the tables")
    p.add_argument("--outro", default=None, help="a Markdown file whose text goes below the tables")
    args = p.parse_args()
    results = Path(args.results)
    registry = load_registry()
    rows = merge(results, Path(args.speed), Path(args.memory), registry)
    specs = {t: task_spec(t, registry) for t in dict.fromkeys(r["task"] for r in rows)}  # (the registry's metrics)
    png = plot(rows, results, specs)
    parts = [Path(args.intro).read_text()] if args.intro else []
    for task in task_order(rows, specs):
        parts.append(f"### {task}\n\n{ranking(rows, specs[task])}\n")
    parts.append(f"![test metric against GFLOPs and inference speed]({png.name})\n")
    if args.outro:
        parts.append(Path(args.outro).read_text())
    (results / "README.md").write_text("\n".join(parts))
    print(f"wrote {results / 'README.md'} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
