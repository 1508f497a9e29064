"""Speed columns for any encoder x task, without training: parameters, GFLOPs per image, inference
images/s at batch 1 and at the evaluation batch size (mean and std), inference peak memory, and
the tensor memory two training steps at the task's batch size hold at most (train_peak_memory_mb:
CUDA max allocated; on CPU from the profiler's allocation events, float32).

    python benchmarks/speed.py --task all --encoder all --out benchmarks/results/speed
    python benchmarks/speed.py --task all --encoder all --no-timing   # memory and GFLOPs only (a busy CPU)

Each combination is built exactly as a run of its task's default budget would build it (data-derived
settings included), with untrained weights: speed does not depend on the weights. Rows go into
``--out`` like ``zoo.bench`` rows, with ``budget_mode: untrained``. On CPU there is no peak-memory
column: the process's peak RSS would add up every combination measured before (a training run's
row has it, one process per run).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from zoo.engine.build import load_registry, task_spec
from zoo.engine.config import run_config, add_run_options
from zoo.runs.plan import budget_of, expand
from zoo.runs.results import machine, print_table, write_results
from zoo.engine.build_run import setup
from zoo.engine.loaders import eval_batch_size
from zoo.use.speed import speed_columns, train_peak_memory_mb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="all")
    p.add_argument("--encoder", default="scratch")
    p.add_argument("--out", default="runs/speed")
    p.add_argument("--repeats", type=int, default=10, help="timed forward passes per measurement")
    p.add_argument("--no-timing", action="store_true",
                   help="parameters, GFLOPs and training peak memory only (timings on a busy machine mean nothing)")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    add_run_options(p)
    args = p.parse_args(argv)
    registry = load_registry(args.registry)
    tasks = ([t for t in registry.names("tasks") if getattr(registry.entry("tasks", t).obj, "in_all", True)]
             if args.task == "all" else expand("tasks", args.task, registry))
    encoders = registry.names("encoders") if args.encoder == "all" else expand("encoders", args.encoder, registry)
    command = "python benchmarks/speed.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    rows = []
    for task in tasks:
        for encoder in encoders:
            cfg = run_config(args, task, encoder, "fixed", budget_of(task_spec(task, registry), quick=False, encoder=encoder))
            s = setup(cfg)
            if s.device.type == "cuda":  # each combination's own peak, not the largest one measured so far
                torch.cuda.reset_peak_memory_stats(s.device)
            row = {"task": task, "encoder": encoder, "weighting": "-", "budget_mode": "untrained", "seed": cfg.seed,
                   "heads": "+".join(h.name for h in s.task.heads),
                   "parameters": sum(p.numel() for p in s.model.parameters())}
            row.update(speed_columns(s.model, s.data.test, s.plans, s.device, eval_batch_size(cfg.batch_size), args.repeats,
                                     timing=not args.no_timing, speed_stream=s.task.spec.task.speed_stream))
            if s.device.type != "cuda":  # peak RSS is the whole process's, over every combination so far
                row.pop("peak_memory_mb", None)
            # last: these steps train the model
            row["train_peak_memory_mb"] = round(train_peak_memory_mb(cfg, s), 1)
            row["train_batch"] = cfg.batch_size
            row.update({"device": str(s.device), "machine": machine(), "torch": torch.__version__, "command": command})
            write_results(Path(args.out), [row], "Speed of untrained models (benchmarks/speed.py); no metrics.")
            rows.append(row)
    print_table(rows, f"speed -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
