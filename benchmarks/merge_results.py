"""Merge results folders (e.g. runs done in parallel) into one and fill in delta_m.

    python benchmarks/merge_results.py --out benchmarks/results/joint DIR1 DIR2 ...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from zoo.engine.build import load_registry
from zoo.runs.gain import refresh_gains
from zoo.runs.results import load_rows, merge_rows, write_results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--header", default="")
    p.add_argument("folders", nargs="+")
    a = p.parse_args()
    rows: list[dict] = []
    header = a.header
    for folder in a.folders:
        rows = merge_rows(rows, load_rows(Path(folder)))
        if not header and (Path(folder) / "results.json").is_file():
            header = json.loads((Path(folder) / "results.json").read_text()).get("header", "")
    refresh_gains(rows, load_registry())
    for row in rows:
        if row.get("task") == "joint" and not row.get("status") and "delta_m" not in row:
            print(f"{row['task']}/{row['encoder']}/{row['weighting']}: no baseline rows for its delta_m")
    write_results(Path(a.out), rows, header)
    print(f"{len(rows)} rows -> {a.out}")


if __name__ == "__main__":
    main()
