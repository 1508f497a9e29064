"""Training throughput of each reference task, the old data path and the new one side by side.

    python benchmarks/throughput.py --device cpu [--steps 40] [--compile] [--out benchmarks/results/throughput]
    python benchmarks/throughput.py --device cpu --task scenes,scenes_seg --engines device   # rendered scenes

For each reference task (foreground, circlization, semantic, joint; scratch encoder, the task's
default budget: batch size, augmentation, encoder settings) on the run's device, and each engine:

- ``loader``: the per-sample path (OpenCV augmentation sample by sample in a ``DataLoader``,
  then collation and a copy to the device), what every run used before device-resident data;
- ``device``: the split on the device, batches gathered and augmented there in batched ops;
- ``device+compile`` (with ``--compile``): the same, the model under ``torch.compile``;

it measures, in samples per second (a joint step counts its digits and its composites):

- ``render`` (rendered tasks, ``scenes``): the renderer alone, one training batch of new scenes at a
  time on the device (what a split too large to keep there costs per step), and ``render / model``;
- ``data``: the loaders alone, as the training loop draws them (every stream each step);
- ``model``: training steps on batches built beforehand and already on the device;
- ``end_to_end``: training steps drawing their batches as a run does;
- ``ratio`` = end_to_end / model: 1 means the model never waits for its data.

The same number of steps of each, after a warm-up; model-only and end-to-end steps alternate in
chunks of ``--chunk`` steps and each kind keeps its median chunk, so a burst of other work on a
shared machine slows one chunk rather than one kind.
Ends with one line per task for the new engine:
``TASK data=<samples/s> model=<samples/s> end_to_end=<samples/s> ratio=<end_to_end/model>``, and
writes ``<out>/<device>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from zoo.engine.build import load_registry, task_spec
from zoo.engine.build_run import Setup, setup
from zoo.core.files import atomic_write_text
from zoo.engine.config import RunConfig
from zoo.engine.train import build_optimizer, build_scaler, train_one_epoch
from zoo.runs.results import machine
from zoo.use.speed import sync

TASKS = ("foreground", "circlization", "semantic", "joint")


class Take:
    """The first ``n`` batches of a loader, as a loader (``len`` and a fresh iteration each pass)."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)), self.n)


def _timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def samples_per_step(batches: dict[str, list[dict]]) -> float:
    """Samples a training step sees: one batch of every stream."""
    return sum(len(b[0]["image"]) for b in batches.values())


def render_rate(s: Setup, steps: int) -> float | None:
    """Scenes per second of a rendered task's renderer (``None`` for stored data): ``steps`` training
    batches of scenes drawn anew on the run's device."""
    rendered = {k: ds for k, ds in s.data.train.items() if hasattr(ds, "render")}
    if not rendered:
        return None
    dev, n = s.device, 0
    gen = torch.Generator().manual_seed(0)

    def go() -> None:
        nonlocal n
        for ds in rendered.values():
            for _ in range(steps):
                index = torch.randint(len(ds), (s.cfg.batch_size,), generator=gen).to(dev)
                n += len(ds.render(index)["image"])

    go()  # warm-up: first-call allocations
    n = 0
    seconds = _timed(go, dev)
    return n / seconds


def measure(task: str, engine: str, steps: int, chunk: int, device: str, data_root: str | None,
            registry: tuple[str, ...] = ()) -> dict[str, Any]:
    reg = load_registry(list(registry))
    spec = task_spec(task, reg)
    budget = {k: v for k, v in spec.budget_for("scratch").items() if k != "epochs"}
    cfg = RunConfig(task=task, encoder="scratch", device=device, data_root=data_root, epochs=1, registry=registry,
                    device_data=engine != "loader", compile=engine.endswith("compile"), **budget)
    torch.manual_seed(0)
    s = setup(cfg)
    train_loaders = s.loaders("train")
    optimizer, scaler = build_optimizer(s.model, s.weighting, cfg, s.device), build_scaler(cfg, s.device)
    dev = s.device

    def train(loaders: dict[str, Any]) -> None:  # no learning-rate schedule: the rate stays where it starts
        train_one_epoch(s.model, s.plans, s.weighting, optimizer, loaders, dev, cfg, scaler=scaler)

    def draw() -> None:
        iters = {k: iter(Take(v, steps)) for k, v in train_loaders.items()}
        for _ in range(steps):
            last = [next(it)["image"].to(dev, non_blocking=True) for it in iters.values()]
        last[0].sum()  # the copies are done when this is

    prebuilt = {k: [{f: (x.to(dev) if torch.is_tensor(x) else x) for f, x in b.items()} for b in Take(v, chunk)]
                for k, v in train_loaders.items()}
    per_step = samples_per_step(prebuilt)
    # first-call costs (allocations, compilation) stay out of the clock
    train({k: Take(v, 3) for k, v in prebuilt.items()})
    train({k: Take(v, 3) for k, v in train_loaders.items()})
    data_s = _timed(draw, dev)
    # model-only and end-to-end alternate in chunks of steps, and each keeps its median chunk: a
    # burst of other work on a shared machine slows one chunk, not one of the two kinds
    model, e2e = [], []
    for _ in range(max(1, steps // chunk)):
        model.append(_timed(lambda: train(prebuilt), dev))
        e2e.append(_timed(lambda: train({k: Take(v, chunk) for k, v in train_loaders.items()}), dev))
    model_s, e2e_s = statistics.median(model), statistics.median(e2e)
    row = {"task": task, "engine": engine, "steps": steps, "batch": per_step, "data": per_step * steps / data_s,
           "model": per_step * chunk / model_s, "end_to_end": per_step * chunk / e2e_s, "ratio": model_s / e2e_s}
    rate = render_rate(s, steps) if engine != "loader" else None
    if rate is not None:
        row.update(render=rate, render_vs_model=rate / row["model"])
    return row


def table(rows: list[dict[str, Any]]) -> list[str]:
    rendered = any("render" in r for r in rows)
    head = ["task", "engine", "samples/step"] + (["render samples/s", "render / model"] if rendered else []) + [
        "data samples/s", "model samples/s", "end-to-end samples/s", "ratio (end-to-end / model)", "end-to-end vs loader"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = {r["task"]: r["end_to_end"] for r in rows if r["engine"] == "loader"}
    for r in rows:
        vs = f"{r['end_to_end'] / base[r['task']]:.2f}x" if r["task"] in base else ""
        render = ([f"{r['render']:,.0f}", f"{r['render_vs_model']:.1f}x"] if "render" in r else ["", ""]) if rendered else []
        cells = [r["task"], r["engine"], f"{r['batch']:.0f}"] + render + [
            f"{r['data']:,.0f}", f"{r['model']:,.0f}", f"{r['end_to_end']:,.0f}", f"{r['ratio']:.3f}", vs]
        out.append("| " + " | ".join(cells) + " |")
    return out


def write_report(out: str | Path, device: str, command: str, wall: float, rows: list[dict[str, Any]], title: str,
                 method: str, lines: list[str]) -> None:
    """``<out>/<device>.json`` (the rows and where they come from) and ``<device>.md`` (title, command,
    machine, how it was measured, the table), each written atomically."""
    out, name = Path(out), device.replace(":", "")
    info = {"command": command, "machine": machine(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "wall_seconds": round(wall, 1), "rows": rows}
    atomic_write_text(out / f"{name}.json", json.dumps(info, indent=1) + "\n")
    md = [f"# {title} on {device}", "", f"Command: `{command}`", "",
          f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; {method}; "
          f"whole run {wall:.0f} s.", ""] + lines
    atomic_write_text(out / f"{name}.md", "\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--task", default=",".join(TASKS), help="comma-separated reference tasks")
    p.add_argument("--steps", type=int, default=20, help="timed training steps of each kind")
    p.add_argument("--chunk", type=int, default=5, help="steps per timed chunk (model-only and end-to-end alternate)")
    p.add_argument("--compile", action="store_true", help="also measure the device engine under torch.compile")
    p.add_argument("--engines", default=None, help="comma-separated: loader, device, device+compile")
    p.add_argument("--data-root", default=None)
    p.add_argument("--registry", action="append", default=[], help="a registry file merged onto the built-in one")
    p.add_argument("--out", default=None, help="folder for <device>.md and <device>.json")
    a = p.parse_args(argv)
    engines = a.engines.split(",") if a.engines else ["loader", "device"] + (["device+compile"] if a.compile else [])
    rows = []
    load0 = os.getloadavg()[0]  # a shared machine: the numbers hold for the load they were measured under
    t0 = time.perf_counter()
    for task in a.task.split(","):
        for engine in engines:
            r = measure(task, engine, a.steps, a.chunk, a.device, a.data_root, tuple(a.registry))
            rows.append(r)
            render = f"render {r['render']:,.0f} ({r['render_vs_model']:.1f}x model) " if "render" in r else ""
            print(f"  {task} {engine}: {render}data {r['data']:,.0f} model {r['model']:,.0f} end-to-end "
                  f"{r['end_to_end']:,.0f} samples/s, ratio {r['ratio']:.3f}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    command = "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.out:
        write_report(a.out, a.device, command, wall, rows, "Training throughput",
                     f"{a.steps} timed steps of each kind, in chunks of {a.chunk} alternating model-only and "
                     f"end-to-end (median chunk of each); load average (1 min) {load0:.1f} at the start, "
                     f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores: above that, other work shared "
                     "them)", table(rows))
    print("\n".join(table(rows)))
    new = "device+compile" if "device+compile" in engines and "device" not in engines else "device"
    for r in rows:
        if r["engine"] == new:
            render = f"render={r['render']:.0f} " if "render" in r else ""
            print(f"{r['task']} {render}data={r['data']:.0f} model={r['model']:.0f} end_to_end={r['end_to_end']:.0f} "
                  f"ratio={r['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
