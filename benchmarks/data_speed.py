"""Samples per second of each reference task's data pipeline (one process, no model).

    python benchmarks/data_speed.py --data-root ../shared/data/mnist [--n 3000] [--out benchmarks/results/data_speed.md]

Measures the training datasets exactly as the trainer builds them (with their augmentation)
and, for comparison, the training throughput of the default scratch model on this machine
is in the result tables (train_samples_per_s): data must be well above it.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from zoo.engine.build import load_registry, task_spec
from zoo.core.files import atomic_write_text
from zoo.runs.results import machine
from zoo.tasks.base import DataConfig


def measure(ds, n: int) -> float:
    n = min(n, len(ds))
    ds[0]
    t0 = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default=None)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    reg = load_registry()
    lines = ["| task | stream | samples/s (train, augmented) | samples/s (test, no augmentation) |", "|---|---|---|---|"]
    for task in ("foreground", "circlization", "semantic", "joint"):
        spec = task_spec(task, reg)
        data = spec.task.datasets(DataConfig(root=a.data_root))
        for stream, ds in data.train.items():
            lines.append(f"| {task} | {stream} | {measure(ds, a.n):,.0f} | {measure(data.test[stream], a.n):,.0f} |")
    text = "\n".join(["Data pipeline throughput, one process, one thread: "
                      f"`python benchmarks/data_speed.py --data-root {a.data_root} --n {a.n}` on {machine()}, "
                      f"Python {platform.python_version()}, torch {torch.__version__}.", ""] + lines) + "\n"
    print(text)
    if a.out:
        atomic_write_text(a.out, text)


if __name__ == "__main__":
    main()
