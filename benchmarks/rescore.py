"""Score another checkpoint of every run in a results folder (e.g. its last epoch's) on the test split.

    python benchmarks/rescore.py benchmarks/results/mtl/small_data --checkpoint last.pt \
        --out benchmarks/results/mtl/small_data_last

A row's metrics are those of the checkpoint that scored best on validation (``best.pt``). With a
small validation split that choice is itself noisy: 60 validation digits put most runs' accuracy
at 100 % for most epochs, and a run whose best validation epoch comes early can be one that
generalises worse. Re-scoring another checkpoint of the same runs (the last epoch: no choice made
at all) says how much of a table's spread is that choice.

Each row whose ``run_dir`` holds CHECKPOINT is copied into OUT with its test metrics replaced by
that checkpoint's (``zoo.engine.evaluate.evaluate_checkpoint``: the run's own config, test split),
``scored_checkpoint`` naming it, and its validation metrics and ``best_epoch`` dropped (they
describe the other checkpoint). delta_m is recomputed from the re-scored single-task rows
(``refresh_gains``), so a table builds from OUT as from the original (``mtl_table.py --results
OUT``). Rows without the file are left out and listed. OUT must not be the original folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.engine.build import load_registry
from zoo.engine.evaluate import evaluate_checkpoint
from zoo.runs.gain import GAIN_SUMMARY, SINGLE, refresh_gains
from zoo.runs.keys import row_architecture
from zoo.runs.results import load_rows, write_results


def rescore(row: dict, checkpoint: Path, data_root: str | None, registry: list[str] | None = None) -> dict:
    """``row`` with the test metrics of ``checkpoint`` (same run, same test split)."""
    scores = evaluate_checkpoint(checkpoint, "test", registry, **({"data_root": data_root} if data_root else {}))
    new = {k: v for k, v in row.items() if not k.startswith(("val_", SINGLE)) and k not in GAIN_SUMMARY
           and k not in ("best_epoch", "delta_m")}
    missing = [k for k in scores if k not in row]
    if missing:  # a metric the row never had: the checkpoint is of another kind of run
        raise ValueError(f"{checkpoint}: scores {missing}, which its row does not have")
    return {**new, **{k: round(float(v), 4) for k, v in scores.items()}, "scored_checkpoint": checkpoint.name}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="a results folder whose rows name their run_dir")
    p.add_argument("--checkpoint", default="last.pt", help="file name in each run_dir (default last.pt)")
    p.add_argument("--out", required=True, help="a new results folder for the re-scored rows")
    p.add_argument("--data-root", default=None, help="where the runs' data is, if not where their configs say")
    p.add_argument("--registry", action="append", default=None, metavar="FILE",
                   help="registry file(s) the runs were trained with (a checkpoint's own list is never read)")
    a = p.parse_args(argv)
    src, out = Path(a.results).resolve(), Path(a.out).resolve()
    if src == out:
        p.error("--out must be a new folder: the original rows stay as they are")
    rows, skipped = [], []
    for row in load_rows(src):
        ckpt = Path(row.get("run_dir") or "") / a.checkpoint
        if row.get("status") or not row.get("run_dir") or not ckpt.is_file():
            skipped.append(f"{row.get('task')}/{row.get('weighting')}/{row_architecture(row)}/s{row.get('seed')}")
            continue
        rows.append(rescore(row, ckpt, a.data_root, a.registry))
        print(f"{ckpt.parent.name}: " + ", ".join(f"{k} {row[k]:.2f} -> {rows[-1][k]:.2f}"
                                                   for k in ("iou", "accuracy", "gated_iou", "dice") if k in row),
              file=sys.stderr, flush=True)
    refresh_gains(rows, load_registry(a.registry))
    write_results(out, rows, f"{a.checkpoint} of the runs of {a.results}, re-scored on their test splits "
                             f"(python benchmarks/rescore.py {' '.join(argv if argv is not None else sys.argv[1:])})")
    print(f"{len(rows)} rows -> {out}" + (f"; no {a.checkpoint}: {', '.join(skipped)}" if skipped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
