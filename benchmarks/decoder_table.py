"""The decoder table (issue 37): each decoder x encoder's task metric against its cost, from a grid's rows.

    python benchmarks/decoder_table.py --results benchmarks/results/decoders

Rows come from ``python -m zoo.bench --registry benchmarks/decoders/registry.yaml --task foreground,semantic
--encoder E --decoder all --out benchmarks/results/decoders`` (the grid resumes: rerun this after it gains
rows). Writes ``README.md`` (``--intro`` first, then a ranking per task and the combinations that have no row
yet) and ``metric_vs_gflops.png`` (one panel per task, colour = decoder, marker = encoder) into the folder.
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from zoo.core.files import atomic_write_text
from zoo.engine.build import load_registry, task_spec
from zoo.heads.smp_decoders import SMP_TWIN
from zoo.runs.plan import budget_of
from zoo.runs.results import load_rows

REGISTRY = Path(__file__).resolve().parent / "decoders" / "registry.yaml"
ENCODERS = ("scratch", "resnet18", "mobilenetv3_large_100")  # the table's columns (issue 37)
MARKERS = {"scratch": "o", "resnet18": "s", "mobilenetv3_large_100": "^"}


def monitor(task: str) -> str:
    """The task's one monitor metric (the decoder tasks have one)."""
    return task_spec(task, registry()).monitor[0]


@functools.lru_cache(maxsize=None)
def registry():
    return load_registry([REGISTRY])


def encoder_args(decoder: str, encoder: str) -> dict[str, Any]:
    """The encoder settings the table trains this pair with, beyond the task's: on the timm encoders, those
    smp's ``create_model`` builds that decoder's encoder with (``SMP_TWIN``: DeepLabV3 dilated to output stride 8,
    DeepLabV3+ and PAN to 16, PSPNet cut at stride 8), so each row is the model an smp user gets there; on
    scratch, none (zoo's own encoder, read as it is). ``--plan`` gives them to the grid as ``--encoder-arg``."""
    return {} if encoder == "scratch" else dict(SMP_TWIN.get(decoder, ({}, {}))[0])


@functools.lru_cache(maxsize=None)  # asked once per row and per (decoder, encoder) pair: built once per pair
def levels(task: str, encoder: str, args: str = "{}") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The encoder's channels and strides as the task's budget builds it for that encoder (its encoder settings,
    e.g. ``input_skip``, and ``args``, JSON), on the meta device (no memory): what a row's decoder read."""
    import torch

    settings = budget_of(task_spec(task, registry()), False, encoder).get("encoder_settings") or {}
    with torch.device("meta"):
        enc = registry().build("encoders", encoder, **{**settings, **json.loads(args)})
    return tuple(enc.out_channels), tuple(enc.reductions)


def read_levels(task: str, decoder: str, encoder: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The levels the table's row of this pair reads (``encoder_args``); None when the decoder refuses them.
    The decoder's settings may not fit an encoder it refuses anyway (DPT's ViT blocks, ``out_indices`` 2..11, on a
    5-stage CNN): that build error means no row only when the decoder also refuses the encoder as it is; any other
    build error is a real fault and is raised, not shown as a missing row."""
    refuse = registry().entry("decoders", decoder).obj.refuse
    try:
        got = levels(task, encoder, json.dumps(encoder_args(decoder, encoder), sort_keys=True))
    except Exception:
        if refuse(*levels(task, encoder)) is not None:
            return None
        raise
    return got if refuse(*got) is None else None


def output_stride(task: str, decoder: str, encoder: str) -> int:
    """The stride of the decoder's output on the row's encoder: the decoder's own declaration."""
    import torch

    with torch.device("meta"):
        return registry().entry("decoders", decoder).obj(*read_levels(task, decoder, encoder)).out_reduction


def ranking(rows: list[dict[str, Any]], task: str) -> list[str]:
    key = monitor(task)
    done = sorted((r for r in rows if r["task"] == task), key=lambda r: -r[key])
    lines = [f"### {task} ({key}, % on the test split)", "",
             f"| decoder | encoder | {key} | output stride | GFLOPs / image | parameters (M) | img/s, batch 1 | "
             "img/s, batch eval | train peak MB | train s | epochs | machine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in done:
        def num(k: str, fmt: str) -> str:
            return format(r[k], fmt) if isinstance(r.get(k), (int, float)) else "-"
        stride = output_stride(task, r.get("decoder") or "unet", r["encoder"])
        lines.append(f"| {r.get('decoder') or 'unet'} | {r['encoder']} | {r[key]:.2f} | {stride} | {num('gflops', '.3f')} | "
                     f"{r['parameters'] / 1e6:.2f} | {num('infer_img_s_b1', '.0f')} | {num('infer_img_s_beval', '.0f')} | "
                     f"{num('peak_memory_mb', '.0f')} | {num('train_seconds', '.0f')} | {r['epochs']} | "
                     f"{r.get('machine', '-')} |")
    return lines + [""]


def serves(task: str, decoder: str, encoder: str) -> bool:
    """The decoder's own declaration accepts the encoder's levels, as the table builds the encoder."""
    return read_levels(task, decoder, encoder) is not None


def missing(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """The grid's combinations without a finished row (a decoder that refuses an encoder has none to make)."""
    decoders = registry().names("decoders")
    have = {(r["task"], r["encoder"], r.get("decoder") or "unet") for r in rows}
    out = []
    for task in tasks:
        for enc in ENCODERS:
            left = [d for d in decoders if (task, enc, d) not in have and serves(task, d, enc)]
            if left:
                out.append(f"- {task} / {enc}: {', '.join(left)}")
    return out


def plan(tasks: list[str], encoders: list[str] | None = None, decoders: list[str] | None = None) -> list[str]:
    """The grid as commands' arguments, one line per encoder and its settings: ``ENCODER<tab>DECODER,...<tab>
    key=value ...`` (the ``--encoder-arg`` values; empty for none). gpu_session.sh runs one zoo.bench per line."""
    groups: dict[tuple[str, str], list[str]] = {}
    for enc in encoders or ENCODERS:
        for d in decoders or registry().names("decoders"):
            if any(serves(t, d, enc) for t in tasks):
                args = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                                for k, v in sorted(encoder_args(d, enc).items()))
                groups.setdefault((enc, args), []).append(d)
    return [f"{enc}\t{','.join(ds)}\t{args}" for (enc, args), ds in groups.items()]


def plot(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decoders = sorted({r.get("decoder") or "unet" for r in rows})
    colours = {d: plt.get_cmap("tab20")(i % 20) for i, d in enumerate(decoders)}
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        key = monitor(task)
        for r in (r for r in rows if r["task"] == task and isinstance(r.get("gflops"), (int, float))):
            d = r.get("decoder") or "unet"
            ax.scatter(r["gflops"], r[key], color=colours[d], marker=MARKERS.get(r["encoder"], "x"), s=60)
            ax.annotate(d, (r["gflops"], r[key]), fontsize=7, xytext=(4, 2), textcoords="offset points")
        xs = [r["gflops"] for r in rows if r["task"] == task and isinstance(r.get("gflops"), (int, float))]
        wide = bool(xs) and max(xs) > 5 * min(xs)  # a log axis over a narrow range only crowds its labels
        if wide:
            ax.set_xscale("log")
        ax.set_xlabel("GFLOPs per image" + (" (log)" if wide else ""))
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=m, linestyle="", color="grey", label=e) for e, m in MARKERS.items()]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="benchmarks/results/decoders")
    p.add_argument("--intro", default=None, help="markdown put before the tables (what ran, where, how)")
    p.add_argument("--plan", action="store_true", help="print the grid's zoo.bench arguments (see plan) and exit")
    p.add_argument("--encoder", default=None, help="with --plan: these encoders only (comma-separated)")
    p.add_argument("--decoder", default=None, help="with --plan: these decoders only (comma-separated)")
    a = p.parse_args(argv)
    if a.plan:
        split = lambda v: v.split(",") if v else None  # noqa: E731
        print("\n".join(plan(["foreground", "semantic"], split(a.encoder), split(a.decoder))))
        return 0
    out = Path(a.results)
    rows = [r for r in load_rows(out) if not r.get("status") and r.get("budget_mode") == "default"]
    tasks = [t for t in ("foreground", "semantic") if any(r["task"] == t for r in rows)]
    text = [Path(a.intro).read_text().rstrip() + "\n"] if a.intro else []
    for task in tasks:
        text += ranking(rows, task)
    left = missing(rows, ["foreground", "semantic"])
    if left:
        text += ["### Combinations without a row yet", "", *left, ""]
    text += ["![metric against GFLOPs](metric_vs_gflops.png)", ""]
    atomic_write_text(out / "README.md", "\n".join(text))
    if tasks:
        plot(rows, tasks, out / "metric_vs_gflops.png")
    print(f"{out / 'README.md'}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
