"""``python -m zoo.data export --task semantic --split test --n 1000 --out DIR``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from zoo.engine.build import load_registry, task_spec
from zoo.data.export import export_dataset, export_nyuv2
from zoo.data.idx import DataError
from zoo.core.files import check_writable
from zoo.core.cli import run_main
from zoo.data.config import DataConfig

SPLITS = ("train", "val", "test")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.data", description="dataset tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write a task split as Images/ + Masks/ (index PNGs), or a task with depth and "
                                      "normals (scenes) in NYUv2's layout: train -> DIR/train/, val and test -> DIR/val/")
    e.add_argument("--task", required=True)
    e.add_argument("--split", default="test", choices=SPLITS)
    e.add_argument("--n", type=int, default=1000)
    e.add_argument("--out", required=True)
    e.add_argument("--data-root", default=None)
    e.add_argument("--registry", action="append", default=[])
    e.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    console = Console(stderr=True, soft_wrap=True)
    out = Path(args.out)
    # a full disk mid-export, or Images/ being a file: each file is written atomically
    return run_main(lambda: export(args, out, console), console, out, kept="; the images written before it are whole")


def export(args: argparse.Namespace, out: Path, console: Console) -> int:
    """``export``: write ``args.n`` samples of the task's split into ``out``; returns the exit code."""
    check_writable(out)  # a file or an unwritable folder: one line before any data is read
    spec = task_spec(args.task, load_registry(args.registry))
    data = spec.task.datasets(DataConfig(root=args.data_root, seed=args.seed))
    split = getattr(data, args.split)
    if len(split) != 1:
        raise DataError(f"task {args.task!r} has several data streams; export one single-stream task")
    ds = next(iter(split.values()))
    if getattr(ds, "export_layout", "images") == "nyuv2":  # the dataset says which files hold its samples
        n, folder = export_nyuv2(ds, out, args.n, args.split)
        console.print(f"wrote {n} {args.split} scenes to {folder} (image/, label/, depth/, normal/ N.npy: the "
                      f"nyuv2 task's layout; missing depth written as 0)")
        return 0
    if "mask" not in ds[0]:
        raise DataError(f"task {args.task!r} samples have no 'mask' to export")
    n = export_dataset(ds, out, args.n)
    console.print(f"wrote {n} images to {out / 'Images'} and masks to {out / 'Masks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
