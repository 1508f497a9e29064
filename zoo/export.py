"""``python -m zoo.export MODEL --format onnx|torchscript|exported-program --out FILE``.

The exported graph takes ``image`` ``[B, C, H, W]`` (float in [0, 1], the task's input size, any
batch size) and returns one raw output per head, named after the head, as ``forward`` does. The
hard predictions are post-processing done outside the graph, as ``model.predict`` does it; each
head says which (``Head.export_note``), and a ``FILE.json`` beside the export lists the outputs,
their shapes and that post-processing.

``--format hub --out DIR`` writes the model as a Hugging Face-layout folder instead (config.json,
model.safetensors and a README.md model card; ``zoo.save_pretrained``), and ``--push ORG/NAME`` uploads it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from zoo.core.cli import run_main
from zoo.core.files import atomic_write_text, check_writable_file, publish
from zoo.core.model import MultiTaskModel
from zoo.use.hub import push_to_hub, save_pretrained
from zoo.engine.record import model_summary
from zoo.use.load import load_model

FORMATS = ("onnx", "torchscript", "exported-program", "hub")  # hub: a Hugging Face-layout folder (zoo.save_pretrained)


class Graph(nn.Module):
    """The model with a tuple of outputs in head order (what exporters and ONNX want)."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.heads)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(out[n] for n in self.names)


def example_input(model: MultiTaskModel, size: tuple[int, int] | None = None, batch: int = 2) -> torch.Tensor:
    """A batch of the model's input: the task's input size unless ``size`` is given."""
    record = model.record
    mode, task_size = record.input_spec if record is not None and record.input_spec else ("keep", None)
    size = size or task_size
    if size is None:
        raise ValueError("this task keeps each image's size: give the export size with --size H W")
    return torch.rand(batch, record.in_channels if record is not None else 1, *size)


# ONNX keeps a graph and its weights in one protobuf up to 2 GB; bigger weights go to external data
ONNX_INLINE_BYTES = 1_800_000_000


def exported_files(out: str | Path) -> list[Path]:
    """The files an export to ``out`` consists of: ``out``, its external data if any, and ``out.json``;
    copy all of them to use the export elsewhere (the JSON lists them too)."""
    out = Path(out)
    info = out.with_name(out.name + ".json")
    extra = json.loads(info.read_text()).get("files", []) if info.is_file() else []
    return [out, *(out.with_name(f) for f in extra if f != out.name), info]


def export(model: MultiTaskModel, fmt: str, out: str | Path, size: tuple[int, int] | None = None) -> Path:
    """Export ``model`` to ``out`` with a dynamic batch size; writes ``out`` and ``out.json`` (and, for an
    ONNX model over 2 GB, ``out.data`` beside it, named in ``out.json``: ``exported_files``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "hub":
        return save_pretrained(model, out)
    out = check_writable_file(out)
    graph = Graph(model.eval()).eval()
    x = example_input(model, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    weight_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    # written into a temp folder beside ``out`` under its final name (an exporter names external data after
    # the file it writes), then renamed into place, data first: a failed export (or a full disk) leaves what
    # was there, and no file ever refers to a temporary name
    tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    tmp = tmp_dir / out.name
    try:
        with torch.no_grad():
            if fmt == "onnx":
                with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps on stdout
                    torch.onnx.export(graph, (x,), str(tmp), input_names=["image"], output_names=graph.names,
                                      dynamic_shapes={"image": {0: batch}}, dynamo=True, verbose=False,
                                      external_data=weight_bytes > ONNX_INLINE_BYTES)
            elif fmt == "torchscript":
                torch.jit.save(torch.jit.trace(graph, x, check_trace=False), str(tmp))
            else:
                torch.export.save(torch.export.export(graph, (x,), dynamic_shapes={"image": {0: batch}}), str(tmp))
            outputs = graph(x)
        extra = sorted(p.name for p in tmp_dir.iterdir() if p.name != out.name)
        for name in extra:
            os.replace(tmp_dir / name, out.with_name(name))
        publish(str(tmp), out)  # the mode a plain open gives
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    info = {"format": fmt, "files": [out.name, *extra],
            "input": {"name": "image", "shape": ["batch", *x.shape[1:]], "dtype": "float32",
                      "range": [0.0, 1.0], "preprocessing": model.record.input_spec if model.record else None},
            "outputs": [{"name": n, "shape": ["batch", *o.shape[1:]], "postprocessing": model.heads[n].export_note}
                        for n, o in zip(graph.names, outputs)],
            "model": model_summary(model.record) if model.record else {}}
    atomic_write_text(out.with_name(out.name + ".json"), json.dumps(info, indent=2))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a shipped model (e.g. circlization/scratch), a zoo model file / checkpoint, a model "
                                 "folder or hf-hub:ORG/NAME")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="the exported file (e.g. model.onnx); for --format hub, a folder")
    p.add_argument("--push", metavar="ORG/NAME", help="with --format hub: upload the folder to this Hub repo (online)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the task's)")
    p.add_argument("--registry", action="append", default=None, metavar="FILE",
                   help="a registry file with the model's task, heads or encoder (a model never names its own)")
    args = p.parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)

    def run() -> int:
        if args.push and args.format != "hub":
            raise ValueError("--push uploads a model folder: use it with --format hub")
        path = export(load_model(args.model, args.registry), args.format, args.out, tuple(args.size) if args.size else None)
        if args.push:
            err.print(f"pushed {path} to {args.push}: {escape(push_to_hub(path, args.push))}")
        if args.format == "hub":
            err.print(f"saved {args.model} -> {path} ({', '.join(sorted(p.name for p in path.iterdir()))})")
        else:
            files = exported_files(path)
            err.print(f"exported {args.model} ({args.format}, dynamic batch) -> {', '.join(map(str, files))} "
                      f"(copy all {len(files)} to use it elsewhere)" if len(files) > 2 else
                      f"exported {args.model} ({args.format}, dynamic batch) -> {path} (+ {path.name}.json)")
        return 0

    return run_main(run, err, args.out, kept="; nothing was replaced")  # the export is published whole or not at all


if __name__ == "__main__":
    sys.exit(main())
