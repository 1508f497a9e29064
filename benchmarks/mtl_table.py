"""The MTL table: every (architecture, strategy) pair's joint runs over seeds, as mean +- std, with delta_m.

    python benchmarks/mtl_table.py --results benchmarks/results/mtl [--intro F] [--outro F] [--task scenes]

Below the table, a paragraph computed from it (``findings``): which configurations beat their single-task
models by mean minus std over 3 seeds, and which are within seed noise of each other.

Any multi-task task (``--task``, default ``joint``): its metric columns (its monitor, then the other metrics
its delta_m compares) and its single-task baselines come from its registry entry (``monitor``,
``baselines``), never from names written here.

delta_m (LibMTL's definition, ``zoo.runs.gain.add_gain``) is computed per seed against the single-task
rows (same encoder, hard sharing, fixed weighting) of the same seed and budget in the same folder,
then averaged.
Step time is each run's training seconds over the hard-sharing ``fixed`` run's of the same seed
(the runs of a seed ran side by side on the same machine), then averaged; peak memory likewise
relative to it (each run's process peak; CPU: peak RSS). Runs that shared a machine with other
work time their neighbours as much as themselves: ``--step-time`` takes those two columns from
``benchmarks/mtl_step.py``'s side-by-side measurement instead (its JSON: every configuration timed
in one process, taking turns), with its peak tensor memory.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from zoo.core.architectures import DEFAULT_ARCHITECTURE
from zoo.core.files import atomic_write_text
from zoo.engine.build import load_registry, task_spec
from zoo.runs.gain import add_gain
from zoo.runs.keys import row_architecture
from zoo.runs.results import load_rows
from zoo.tasks.base import TaskSpec


def metric_columns(spec: TaskSpec, rows: list[dict]) -> list[str]:
    """The multi-task task's metric columns: its validation monitor(s) first, then the other metrics its
    delta_m compares (its ``baselines``), those the rows hold."""
    names = dict.fromkeys([*spec.monitor, *spec.baselines])
    return [m for m in names if any(m in r for r in rows)]


def baseline_metrics(spec: TaskSpec) -> dict[str, list[str]]:
    """Each single-task baseline's task -> its metrics that delta_m reads, in the order ``baselines`` names them."""
    out: dict[str, list[str]] = {}
    for ref in spec.baselines.values():
        task, metric = ref.split(".", 1)
        out.setdefault(task, [])
        if metric not in out[task]:
            out[task].append(metric)
    return out


def column(metric: str, spec: TaskSpec) -> str:
    """A metric's header: percentages, but an error (better lower) is in its own unit."""
    return f"{metric} (lower is better)" if metric in spec.lower_is_better else f"{metric} (%)"


def ms(values: list[float], digits: int = 2) -> str:
    """mean ± std; a NaN (delta_m against a baseline of 0) is counted, never averaged."""
    nan = sum(1 for v in values if not math.isfinite(v))
    values = [v for v in values if math.isfinite(v)]
    note = f" ({nan} NaN)" if nan else ""
    if not values:
        return "-" + note
    if len(values) == 1:
        return f"{values[0]:.{digits}f}" + note
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}" + note


def table(rows: list[dict], step: dict | None = None, task: str = "joint",
          registry: list[str] | None = None) -> tuple[str, dict]:
    """The table's text and its per-configuration numbers; ``step``: mtl_step.py's JSON, whose side-by-side
    ratios replace the per-run step-time and memory columns. ``task``: the multi-task rows to tabulate
    (a variant of ``joint`` registered in a ``registry`` file, compared with its own entry's baselines)."""
    reg = load_registry(registry)
    spec = task_spec(task, reg)
    singles = {(r["task"], r["seed"], r["budget_mode"]): r for r in rows if r["task"] != task
               and r.get("weighting") == "fixed" and "architecture" not in r and not r.get("status")}
    joint = [r for r in rows if r["task"] == task and not r.get("status")]
    metrics = metric_columns(spec, joint)
    reference = {(r["seed"], r["budget_mode"]): r for r in joint
                 if r["weighting"] == "fixed" and row_architecture(r) == DEFAULT_ARCHITECTURE}
    by = defaultdict(list)
    for r in joint:
        by[(row_architecture(r), r["weighting"])].append(r)
    stats = {}
    for name, rs in by.items():
        dm, rel, rel_mem = [], [], []
        for r in rs:
            scored = dict(r)  # delta_m against this seed's single-task rows, by zoo.runs.gain's one rule
            if not add_gain(scored, spec.baselines, rows, spec.lower_is_better, reg):
                dm.append(float(scored["delta_m"]))
            ref = reference.get((r["seed"], r["budget_mode"]))
            if ref and float(ref["train_seconds"]) > 0:  # (a smoke run can round its seconds to 0)
                rel.append(float(r["train_seconds"]) / float(ref["train_seconds"]))
                if r.get("peak_memory_mb") and ref.get("peak_memory_mb"):
                    rel_mem.append(float(r["peak_memory_mb"]) / float(ref["peak_memory_mb"]))
        stats[name] = {"n": len(rs), "metrics": {m: [float(r[m]) for r in rs if m in r] for m in metrics},
                       "delta_m": dm, "rel_time": rel, "rel_memory": rel_mem,
                       "peak": [float(r["peak_memory_mb"]) for r in rs if r.get("peak_memory_mb") is not None]}
    def rank(n: tuple) -> float:
        finite = [v for v in stats[n]["delta_m"] if math.isfinite(v)]
        return -statistics.fmean(finite) if finite else 0.0

    order = sorted(stats, key=rank)
    head = ["architecture", "strategy", "seeds", *[column(m, spec) for m in metrics], "delta_m (%)"]
    if step is None:
        head += ["step time / hard+fixed", "peak memory / hard+fixed", "peak MB"]
    else:
        head += ["step time / hard+fixed (side by side)", "peak tensor memory / hard+fixed", "peak tensor MB"]
        measured = {(r["architecture"], r["weighting"]): r for r in step["rows"]}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in order:
        s = stats[n]
        if step is None:
            cost = [ms(s["rel_time"]), ms(s["rel_memory"]), ms(s["peak"], 0)]
        else:
            m = measured.get(n)
            cost = [f"{m['relative']:.2f}", f"{m['relative_memory']:.2f}", f"{m['peak_mb']:.1f}"] if m else ["-"] * 3
        lines.append("| " + " | ".join([*n, str(s["n"]), *[ms(s["metrics"][m]) for m in metrics], ms(s["delta_m"], 3),
                                        *cost]) + " |")
    singles_line = []
    for t, names in baseline_metrics(spec).items():
        rs = [r for (task, _, _), r in singles.items() if task == t]
        ms_ = {m: [float(r[m]) for r in rs if m in r] for m in names}
        singles_line.append(f"{t}: " + ", ".join(f"{m} {ms(v)}" for m, v in ms_.items() if v) + f" ({len(rs)} seeds)")
    return "\n".join(lines) + "\n\nSingle-task baselines (same budget and seeds): " + "; ".join(singles_line) + "\n", \
        stats


def beats(a: tuple[float, float], b_mean: float) -> bool:
    """The project's rule for a claim that A beats B: A's mean minus its std is above B's mean (over seeds)."""
    return a[0] - a[1] > b_mean


def findings(stats: dict, min_seeds: int = 3) -> str:
    """What the table shows, computed from its numbers (never written by hand, so it cannot go stale), by one
    rule (:func:`beats`): which configurations beat their single-task models (delta_m 0 by definition), which
    lose to them (the mirror: mean plus std below 0), and which the best configuration does not beat (within
    seed noise of it). A configuration is judged once ``min_seeds`` of its seeds have a finite delta_m."""
    def finite(n: tuple) -> list[float]:
        return [x for x in stats[n]["delta_m"] if math.isfinite(x)]

    def band(n: tuple) -> tuple[float, float]:
        return statistics.fmean(finite(n)), statistics.stdev(finite(n))

    def name(n: tuple) -> str:
        m, sd = band(n)
        return f"{n[0]} + {n[1]} ({m:+.2f} ± {sd:.2f})"

    def listed(ns: list) -> str:
        return ", ".join(name(n) for n in sorted(ns, key=lambda n: -band(n)[0])) or "none"

    judged = [n for n in stats if len(finite(n)) >= min_seeds]

    def seeds(k: int) -> str:
        return f"{k} seed" + "s" * (k != 1)

    waiting = sorted(f"{n[0]} + {n[1]} ({seeds(len(stats[n]['delta_m']))}, {len(finite(n))} with a finite delta_m)"
                     for n in stats if n not in judged)
    lines = [f"**What the table shows** (computed by `benchmarks/mtl_table.py` from the rows above; delta_m in %, "
             f"mean ± std over seeds; a configuration is judged once {min_seeds} seeds have a finite delta_m, and A "
             "beats B when A's mean minus its std is above B's mean):", ""]
    if judged:
        beat = [n for n in judged if beats(band(n), 0.0)]
        lose = [n for n in judged if band(n)[0] + band(n)[1] < 0]
        even = [n for n in judged if n not in beat and n not in lose]
        best = max(judged, key=lambda n: (band(n)[0], -band(n)[1]))
        near = [n for n in judged if n != best and not beats(band(best), band(n)[0])]
        below = [n for n in judged if n != best and n not in near]
        lines += [f"- Beat their single-task models: {listed(beat)}.",
                  f"- Lose to them (mean plus std below 0): {listed(lose)}.",
                  f"- Neither, within seed noise of them: {listed(even)}.",
                  f"- The best mean is {name(best)}. It does not beat (within seed noise of it): {listed(near)}. "
                  f"It beats: {listed(below)}."]
        zero = [n for n in judged if band(n)[1] == 0]
        if zero:
            lines.append(f"- A std of 0 over {min_seeds} seeds is not a real noise estimate: {listed(zero)}.")
    else:
        lines.append(f"- No configuration has {min_seeds} seeds with a finite delta_m yet.")
    if waiting:
        lines.append(f"- Not judged yet: {', '.join(waiting)}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="benchmarks/results/mtl")
    p.add_argument("--intro", default=None)
    p.add_argument("--outro", default=None)
    p.add_argument("--task", default="joint", help="the multi-task rows to tabulate (default joint)")
    p.add_argument("--registry", action="append", default=None, metavar="YAML",
                   help="a registry file that defines --task (repeatable)")
    p.add_argument("--step-time", default=None, metavar="JSON",
                   help="benchmarks/mtl_step.py's JSON: its side-by-side step time and memory replace the per-run columns")
    args = p.parse_args()
    out = Path(args.results)
    step = json.loads(Path(args.step_time).read_text()) if args.step_time else None
    text, stats = table(load_rows(out), step, args.task, args.registry)
    parts = [Path(args.intro).read_text()] if args.intro else []
    parts += [text, findings(stats)]
    if args.outro:
        parts.append(Path(args.outro).read_text())
    atomic_write_text(out / "README.md", "\n".join(parts))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
