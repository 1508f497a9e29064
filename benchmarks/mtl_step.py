"""Training step time and peak memory of each MTL architecture x strategy, side by side.

    python benchmarks/mtl_step.py --architecture hard_sharing,mtan,cgc --weighting fixed,famo,uncertainty \
        [--task joint] [--encoder scratch] [--encoder-arg width=8] [--steps 30] [--chunk 5] [--device cpu] [--out DIR]

The MTL tables' step-time column comes from whole runs, and when runs share a machine a run's
time says as much about its neighbours as about itself. This measures every configuration in one
process instead: each one's model, strategy and optimizer are built as a run builds them (the
task's default budget for the encoder, plus ``--encoder-arg``), the batches are built beforehand
and kept on the device, and the configurations take turns, one chunk of ``--chunk`` real training
steps each (``train_one_epoch``), round after round. Each keeps its median chunk, so a burst of
other work slows one chunk of one configuration, not a configuration. Times are reported per step
and relative to hard sharing with fixed weights (the first configuration when that one is not
measured).

Peak memory is ``zoo.use.speed.train_peak_memory_mb`` of each configuration, after its timed
steps: the most tensor memory two training steps hold at once (weights, gradients, optimizer
state, activations; CUDA: max allocated; CPU: the profiler's allocation events), the measure the
zoo table's memory column uses.

Writes ``<out>/<device>.md`` and ``.json``; ends with one line per configuration:
``ARCHITECTURE WEIGHTING ms_per_step=<ms> relative=<ratio> peak_mb=<MB> relative_memory=<ratio>``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Take, write_report  # noqa: E402  (the same chunked-step machinery and report)

from zoo.engine.build import load_registry, task_spec  # noqa: E402
from zoo.engine.build_run import Setup, setup  # noqa: E402
from zoo.engine.config import RunConfig, parse_kv  # noqa: E402
from zoo.engine.train import build_optimizer, build_scaler, train_one_epoch  # noqa: E402
from zoo.use.speed import sync, train_peak_memory_mb  # noqa: E402

REFERENCE = ("hard_sharing", "fixed")


def build(task: str, encoder: str, architecture: str, weighting: str, device: str, chunk: int,
          encoder_settings: dict[str, Any], data_root: str | None,
          train_limit: int | None) -> tuple[Setup, Callable[[dict[str, Any]], Any], dict[str, list[dict]]]:
    """A run's setup, a function training it on given loaders (its optimizer, learning rate held where it
    starts), and ``chunk`` batches of each stream on its device."""
    spec = task_spec(task, load_registry())
    budget = {k: v for k, v in spec.budget_for(encoder).items() if k != "epochs"}
    budget["encoder_settings"] = {**budget.get("encoder_settings", {}), **encoder_settings}
    cfg = RunConfig(task=task, encoder=encoder, architecture=architecture, weighting=weighting, device=device,
                    data_root=data_root, epochs=1, **{**budget, "train_limit": train_limit or budget.get("train_limit")})
    torch.manual_seed(0)
    s = setup(cfg)
    optimizer, scaler = build_optimizer(s.model, s.weighting, cfg, s.device), build_scaler(cfg, s.device)

    def train(loaders: dict[str, Any]) -> Any:  # no learning-rate schedule: a measurement, not a run
        return train_one_epoch(s.model, s.plans, s.weighting, optimizer, loaders, s.device, cfg, scaler=scaler)

    batches = {k: [{f: (x.to(s.device) if torch.is_tensor(x) else x) for f, x in b.items()} for b in Take(v, chunk)]
               for k, v in s.loaders("train").items()}
    return s, train, batches


def measure(configs: list[tuple[str, str]], a: argparse.Namespace) -> list[dict[str, Any]]:
    settings = parse_kv(a.encoder_arg, "--encoder-arg")
    built = {c: build(a.task, a.encoder, *c, a.device, a.chunk, settings, a.data_root, a.train_limit) for c in configs}
    dev = next(iter(built.values()))[0].device
    for _, train, batches in built.values():  # first-call costs (allocations, solver set-up) stay out of the clock
        train({k: Take(v, 3) for k, v in batches.items()})
    times: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    for _ in range(max(1, a.steps // a.chunk)):
        for c, (_, train, batches) in built.items():
            sync(dev)
            t0 = time.perf_counter()
            train(batches)
            sync(dev)
            times[c].append((time.perf_counter() - t0) / a.chunk)
    peaks = {c: train_peak_memory_mb(s.cfg, s) for c, (s, _, _) in built.items()}
    ref = REFERENCE if REFERENCE in times else configs[0]
    ref_s = statistics.median(times[ref])
    rows = []
    for c in configs:
        step = statistics.median(times[c])
        row = {"architecture": c[0], "weighting": c[1], "ms_per_step": 1000 * step, "relative": step / ref_s,
               "chunks": len(times[c]), "spread": (max(times[c]) - min(times[c])) / step,
               "peak_mb": peaks[c], "relative_memory": peaks[c] / peaks[ref]}
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], ref: str) -> list[str]:
    out = [f"| architecture | strategy | ms / step | step time / {ref} | chunk spread (max-min)/median | "
           f"peak MB | peak memory / {ref} |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['architecture']} | {r['weighting']} | {r['ms_per_step']:.1f} | {r['relative']:.2f} | "
                   f"{r['spread']:.2f} | {r['peak_mb']:.1f} | {r['relative_memory']:.2f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="joint")
    p.add_argument("--encoder", default="scratch")
    p.add_argument("--architecture", default="hard_sharing,mtan,cgc", help="comma-separated")
    p.add_argument("--weighting", default="fixed", help="comma-separated")
    p.add_argument("--encoder-arg", action="append", default=[], metavar="KEY=VALUE", help="encoder setting, e.g. width=8")
    p.add_argument("--steps", type=int, default=30, help="timed training steps of each configuration")
    p.add_argument("--chunk", type=int, default=5, help="steps per timed chunk (the configurations take turns)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--train-limit", type=int, default=None,
                   help="training digits to load (set-up time only: the timed batches are the budget's)")
    p.add_argument("--out", default=None, help="folder for <device>.md and <device>.json")
    a = p.parse_args(argv)
    if a.steps < 1 or a.chunk < 1:
        p.error(f"--steps and --chunk must be >= 1 (got {a.steps} and {a.chunk})")
    configs = [(arch, w) for arch in a.architecture.split(",") for w in a.weighting.split(",")]
    t0 = time.perf_counter()
    rows = measure(configs, a)
    wall = time.perf_counter() - t0
    ref = "+".join(REFERENCE) if REFERENCE in configs else "+".join(configs[0])
    command = "python benchmarks/mtl_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = table(rows, ref)
    if a.out:
        write_report(a.out, a.device, command, wall, rows, "MTL training step time and memory",
                     f"{a.steps} timed steps of each configuration in chunks of {a.chunk}, the configurations taking "
                     "turns (median chunk of each)", lines)
    print("\n".join(lines))
    for r in rows:
        print(f"{r['architecture']} {r['weighting']} ms_per_step={r['ms_per_step']:.1f} relative={r['relative']:.3f} "
              f"peak_mb={r['peak_mb']:.1f} relative_memory={r['relative_memory']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
