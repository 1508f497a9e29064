"""Result rows and tables: terminal (rich), Markdown, CSV and JSON, written atomically.

Rows are keyed by :data:`KEY` (task, encoder, weighting, budget, seed, the world size of a
torchrun run, and the architecture when it is not hard sharing): running the grid in
pieces into one folder accumulates rows, a ``--quick`` run or another seed adds its own row,
and re-running the same combination replaces its row. Merges hold an exclusive lock on the
folder, so concurrent runs into one ``--out`` never lose each other's rows.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Iterable

import torch
from rich.console import Console
from rich.table import Table

from zoo.core.files import atomic_write_text
from zoo.engine.config import is_smoke
from zoo.data.config import SPLITS, is_count, split_counts
from zoo.runs.gain import GAIN_SUMMARY, is_gain_detail
from zoo.runs.keys import KEY, OPTIONAL_KEY, row_architecture, row_key

LEAD = ["task", "encoder", "weighting", "heads", "parameters", "epochs", "best_epoch", "train_seconds",
        "train_samples_per_s"]
COUNTS = [c for unit in ("digits", "samples") for c in split_counts(dict.fromkeys(SPLITS, 0), unit)]  # (composites last)
TAIL = ["status", "error", "note", "budget_mode", "baseline_mode", "budget_hash", "data_source", "input_conversion",
        "validation", "invalid_pixels", *COUNTS, "device", "machine", "torch",
        "seed", "world_size", "global_batch_size", "run_dir", "log", "launcher", "slurm_job", "command"]


def machine() -> str:
    """A short description of the machine a run used."""
    # the cores this process may use (a container's share), where the OS says so
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = f"{cores} CPU cores ({platform.machine()})"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} + {cpu}"
    return cpu


SPEED_PREFIXES = ("gflops", "infer_img_s_", "eval_batch", "peak_memory_mb", "speed_stream")  # speed_stream: what the rates measure


def is_speed(column: str) -> bool:
    return column.startswith(SPEED_PREFIXES)


def metric_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every column that is not a lead, speed or tail column, in first-seen order."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in LEAD and k not in TAIL and k != "architecture" and k not in cols and not is_count(k) \
                    and not is_gain_detail(k) and not is_speed(k):
                cols.append(k)
    return cols


def speed_columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r if is_speed(k)))


def arch_column(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The architecture column, only where a row has one (tables of hard-sharing rows are as they were)."""
    return ["architecture"] if any("architecture" in r for r in rows) else []


def columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = [k for r in rows for k in r if (is_count(k) and k not in TAIL) or is_gain_detail(k)]
    return LEAD[:3] + arch_column(rows) + LEAD[3:] + metric_columns(rows) + speed_columns_of(rows) + TAIL + \
        sorted(set(extra))


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged = {row_key(r): r for r in old}
    for r in new:
        merged[row_key(r)] = r
    return list(merged.values())


_HELD: set[Path] = set()  # folders whose lock this process holds: a read inside a read-merge-write needs no second


@contextlib.contextmanager
def locked(out: Path):
    """An exclusive lock on ``out`` (``fcntl.flock`` on ``out/.results.lock``) for a read-merge-write.
    Re-entrant within a process (a second ``flock`` on a new descriptor would wait for ourselves)."""
    key = Path(out).resolve()
    if key in _HELD:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".results.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_json(out: Path) -> tuple[list[dict[str, Any]], str | None]:
    path = out / "results.json"
    if not path.is_file():
        return [], None
    try:
        data = json.loads(path.read_text())
        rows, header = list(data["rows"]), data.get("header")
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} exists but is not a zoo results file; move it away or pick another --out") from None
    for i, r in enumerate(rows):  # a foreign row would be rendered as an empty line and merged as a key of Nones
        missing = [k for k in KEY if k not in OPTIONAL_KEY and (not isinstance(r, dict) or k not in r)]
        if missing:
            raise ValueError(f"{path}: row {i + 1} is not a zoo result row (no {', '.join(missing)}); remove it, or "
                             "move the file away and pick another --out")
    return rows, header if isinstance(header, str) else None


def load_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.json``, the source of truth. When ``results.csv`` disagrees with it (a run
    killed, or a disk that filled, between the writes), both views are rebuilt from it."""
    out = Path(out)
    rows, header = _read_json(out)
    if header is not None and not _csv_agrees(out, rows):
        with contextlib.suppress(OSError):  # a folder we cannot write (a shipped table) is read as it is
            with locked(out):
                rows, header = _read_json(out)  # what the lock's last holder wrote
                if header is not None and not _csv_agrees(out, rows):
                    _write_views(out, rows, header)
    return rows


def _csv(rows: list[dict[str, Any]], fieldnames: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _csv_agrees(out: Path, rows: list[dict[str, Any]]) -> bool:
    """Whether ``results.csv`` holds exactly ``rows``, read in its own columns (a table written by an older
    zoo, whose renderer differed, still agrees). The CSV is written last, so when it agrees the Markdown
    written before it does too."""
    path = out / "results.csv"
    if not path.is_file():
        return False
    text = path.read_bytes().decode("utf-8", "replace")  # not newline-translated: its lines end in \r\n
    header = next(csv.reader(io.StringIO(text)), [])
    return _csv(rows, header) == text


def _views(rows: list[dict[str, Any]], header: str) -> dict[str, str]:
    """``results.md`` and ``results.csv`` as ``rows`` render them, in the order they are written."""
    return {"results.md": markdown(rows, header), "results.csv": _csv(rows, columns(rows))}


def _write_views(out: Path, rows: list[dict[str, Any]], header: str) -> None:
    for name, text in _views(rows, header).items():
        try:
            atomic_write_text(out / name, text)
        except OSError as exc:  # the JSON holds the rows: say where they are, and that this view catches up
            raise OSError(exc.errno, f"{exc.strerror or exc} (results.json holds every row; {name} is rebuilt from it "
                                     "on the next read or write)", str(out / name)) from None


def budget_label(row: dict[str, Any]) -> str:
    """The row's budget for a table; a quick (smoke) run says so, so its numbers are never read as results."""
    mode = str(row.get("budget_mode") or "")
    return f"{mode} (smoke)" if is_smoke(mode) else mode


def _cell(row: dict[str, Any], column: str) -> str:
    if column == "architecture":
        return _fmt(row_architecture(row), column)
    if column == "budget":
        return budget_label(row)
    return _fmt(row.get(column, ""), column)


def _fmt(v: Any, column: str = "") -> str:
    if isinstance(v, float):  # GFLOPs per image are small: 3 significant digits
        return "nan" if math.isnan(v) else f"{v:.3g}" if column.startswith("gflops") else f"{v:.2f}"
    return str(v)


def write_results(out: str | Path, rows: list[dict[str, Any]], header: str) -> list[Path]:
    """Write results.json, results.csv and results.md into ``out`` (atomically, under the folder's lock),
    merged with what is there."""
    out = Path(out)
    with locked(out):
        return write_rows(out, merge_rows(load_rows(out), rows), header)


def write_rows(out: Path, rows: list[dict[str, Any]], header: str) -> list[Path]:
    """Write exactly ``rows`` (the caller holds the folder's lock and merged them).

    ``results.json`` is the source of truth, written first (atomically); ``results.md`` and then
    ``results.csv`` are views rendered from it. A kill or a full disk after the JSON leaves the CSV behind
    it, never ahead, and the next read (``load_rows``) rebuilds both views; a full disk during the JSON
    changes nothing."""
    atomic_write_text(out / "results.json", json.dumps({"header": header, "columns": columns(rows), "rows": rows},
                                                       indent=2))
    _write_views(out, rows, header)
    return [out / "results.json", out / "results.csv", out / "results.md"]


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    """One Markdown table per task (each task has its own metrics), then the provenance."""
    parts = [header, ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        trs = [r for r in rows if r["task"] == task]
        cols = ["encoder", "weighting", *arch_column(trs), "budget", "parameters", "epochs", "train_seconds",
                "train_samples_per_s"] + metric_columns(trs)
        cols += [c for c in speed_columns_of(trs) if "_std" not in c]
        cols += [c for c in GAIN_SUMMARY if any(c in r for r in trs) and c not in cols]
        parts += [f"### {task}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        parts += ["| " + " | ".join(_cell(r, c) for c in cols) + " |" for r in trs]
        prov = trs[0]
        unit = "digits" if "train_digits" in prov else "samples"
        data = (f"data: {prov.get('data_source')} (train {prov.get('train_' + unit)}, val {prov.get('val_' + unit)}, "
                f"test {prov.get('test_' + unit)} {unit}); " if prov.get("data_source") else "")
        parts += ["", f"{data}device: {prov.get('device')}; machine: {prov.get('machine')}; "
                  f"torch {prov.get('torch')}; seed {prov.get('seed')}", "",
                  f"command: `{prov.get('command')}`", ""]
    return "\n".join(parts)


def rich_table(rows: list[dict[str, Any]], title: str, width: int = 120) -> Table:
    """One row per run; transposed (one column per run) when that would not fit ``width``."""
    cols = ["task", "encoder", "weighting", *arch_column(rows), "budget", "parameters", "epochs", "train_seconds"] + \
        [c for c in metric_columns(rows) if c != "wall_seconds"] + \
        [c for c in speed_columns_of(rows) if c.startswith(("gflops", "infer_img_s_b1")) and "_std" not in c] + \
        [c for c in GAIN_SUMMARY[3:] if any(c in r for r in rows)]
    table = Table(title=title)
    if len(cols) * 11 <= width:
        for c in cols:  # fold, never truncate: a narrow terminal must still show every name
            table.add_column(c.replace("_", " "), overflow="fold",
                             justify="left" if c in ("task", "encoder", "weighting", "architecture") else "right")
        for r in rows:
            table.add_row(*(_cell(r, c) for c in cols))
        return table
    table.add_column("", style="bold", overflow="fold")
    for r in rows:
        arch = f" / {r['architecture']}" if r.get("architecture") else ""
        table.add_column(f"{r.get('encoder')} / {r.get('weighting')}{arch}", justify="right", overflow="fold")
    for c in cols:
        table.add_row(c, *(_cell(r, c) for r in rows))
    return table


def print_table(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    console = console or Console()
    for task in dict.fromkeys(r["task"] for r in rows):
        console.print(rich_table([r for r in rows if r["task"] == task], f"{task}: {title}", console.width))
