"""Run several ``zoo.bench`` configurations in parallel and merge their rows into one JSON.

Used to choose the default budgets on *validation* metrics (``val_*`` columns): the test
split is never looked at for a choice. Usage:

    python benchmarks/sweep.py --out DIR --jobs 8 --data-root MNIST "name: --task foreground ..." ...
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run(name: str, args: str, out: Path, data_root: str, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "zoo.bench", *shlex.split(args), "--data-root", data_root, "--out", str(out / name),
           "--quiet", "--no-figures"]
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, log = p.returncode, p.stderr[-4000:]
    except subprocess.TimeoutExpired as e:
        rc, log = 124, (e.stderr or b"")[-4000:].decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr)
    rows = []
    res = out / name / "results.json"
    if res.is_file():
        rows = json.loads(res.read_text())["rows"]
    return {"name": name, "args": args, "rc": rc, "seconds": round(time.time() - t0, 1), "rows": rows, "log": log}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--data-root", required=True)
    p.add_argument("--timeout", type=int, default=540)
    p.add_argument("configs", nargs="+", help='"name: bench arguments"')
    a = p.parse_args()
    out = Path(a.out)
    configs = [c.split(":", 1) for c in a.configs]
    with ThreadPoolExecutor(a.jobs) as ex:
        results = list(ex.map(lambda c: run(c[0].strip(), c[1], out, a.data_root, a.timeout), configs))
    (out / "sweep.json").write_text(json.dumps(results, indent=1))
    for r in results:
        best = r["rows"][-1] if r["rows"] else {}
        vals = {k: v for k, v in best.items() if k.startswith("val_") or k in ("iou", "accuracy", "gated_iou", "dice", "train_seconds")}
        print(r["name"], r["rc"], r["seconds"], vals, flush=True)


if __name__ == "__main__":
    main()
