"""Training step time of each registered decoder, zoo's model against smp's own, side by side.

    python benchmarks/decoder_step.py --device cpu [--steps 10] [--size 128] [--out benchmarks/results/decoders/step]

For each decoder, the one-head segmentation model on ``tu-resnet18`` (3 input channels, 5 classes,
random weights) built twice: ``smp.create_model(arch, encoder_name="tu-resnet18", ...)`` and
``zoo.build_model("resnet18", {"seg": {"head": "segmentation", "settings": {"decoder": ...}}})``
with the encoder and decoder settings that make them the same model (smp's output stride and depth;
``tests/test_decoders.py`` checks that they are, parameter for parameter). DPT has no CNN form: it
runs on ``tu-vit_tiny_patch16_224`` (smp's with ``decoder_readout="ignore"``, zoo's on blocks 2, 5,
8, 11). One training step: forward, cross-entropy, backward, an AdamW step, on the same batch.

Both models of a decoder alternate in chunks of ``--chunk`` steps after a warm-up, and each keeps
its median chunk, so a burst of other work on a shared machine slows one chunk rather than one
model. ``ratio`` = zoo's step time / smp's (the target: <= 1.05). Writes ``<out>/<device>.md``
and ``.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import write_report  # noqa: E402  (the benchmarks' one report writer)

import zoo  # noqa: E402
from zoo.heads.smp_decoders import SMP_TWIN  # noqa: E402
from zoo.use.speed import sync  # noqa: E402

# arch -> (zoo encoder settings, zoo decoder settings) that make zoo's model smp's default one
CLASSES = 5


def pair(decoder: str) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(zoo's model, smp's model, the encoder) for one decoder."""
    import segmentation_models_pytorch as smp

    enc_settings, dec_settings = SMP_TWIN[decoder]
    if decoder == "dpt":
        ref = smp.create_model("dpt", encoder_name="tu-vit_tiny_patch16_224", encoder_weights=None, in_channels=3,
                               classes=CLASSES, decoder_readout="ignore", dynamic_img_size=True)
        encoder = "timm:vit_tiny_patch16_224"
    else:
        ref = smp.create_model(decoder, encoder_name="tu-resnet18", encoder_weights=None, in_channels=3,
                               classes=CLASSES)
        encoder = "resnet18"
    model = zoo.build_model(encoder, {"seg": {"head": "segmentation", "settings": {
        "num_classes": CLASSES, "decoder": decoder, "decoder_settings": dec_settings}}}, in_channels=3,
        encoder_settings=enc_settings)
    return model, ref, encoder


def stepper(model: torch.nn.Module, zoo_model: bool, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        out = model(x)
        loss = F.cross_entropy(out["seg"] if zoo_model else out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def chunk_seconds(step, n: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n


def measure(decoder: str, steps: int, chunk: int, size: int, batch: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model, ref, encoder = pair(decoder)
    model, ref = model.to(device), ref.to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, CLASSES, (batch, size, size), device=device)
    steps_of = {"zoo": stepper(model, True, x, y), "smp": stepper(ref, False, x, y)}
    for step in steps_of.values():  # warm-up: allocator, cudnn autotune, AdamW's state
        chunk_seconds(step, 2, device)
    times: dict[str, list[float]] = {"zoo": [], "smp": []}
    for i in range(max(1, steps // chunk)):
        for name in (("zoo", "smp") if i % 2 == 0 else ("smp", "zoo")):  # neither always goes first
            times[name].append(chunk_seconds(steps_of[name], chunk, device))
    zoo_s, smp_s = statistics.median(times["zoo"]), statistics.median(times["smp"])
    return {"decoder": decoder, "encoder": encoder, "batch": batch, "size": size,
            "parameters_zoo": sum(p.numel() for p in model.parameters()),
            "parameters_smp": sum(p.numel() for p in ref.parameters()),
            "zoo_ms": round(1000 * zoo_s, 2), "smp_ms": round(1000 * smp_s, 2), "ratio": round(zoo_s / smp_s, 3)}


def table(rows: list[dict]) -> list[str]:
    out = ["| decoder | encoder | zoo ms/step | smp ms/step | zoo / smp |", "|---|---|---|---|---|"]
    out += [f"| {r['decoder']} | {r['encoder']} | {r['zoo_ms']:.1f} | {r['smp_ms']:.1f} | {r['ratio']:.3f}x |"
            for r in rows]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--decoder", default="all", help="comma-separated decoders, or all")
    p.add_argument("--steps", type=int, default=12, help="timed training steps of each model")
    p.add_argument("--chunk", type=int, default=2, help="steps per timed chunk (the two models alternate)")
    p.add_argument("--size", type=int, default=128, help="input height and width")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's own)")
    p.add_argument("--out", default=None, help="folder for <device>.md and <device>.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(SMP_TWIN) if args.decoder == "all" else args.decoder.split(",")
    unknown = [n for n in names if n not in SMP_TWIN]
    if unknown:
        p.error(f"--decoder: unknown {unknown}; valid: {', '.join(SMP_TWIN)} or all")
    device = torch.device(args.device)
    t0, rows = time.perf_counter(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            rows.append(measure(name, args.steps, args.chunk, args.size, args.batch, device))
            r = rows[-1]
            print(f"{name} zoo={r['zoo_ms']:.1f}ms smp={r['smp_ms']:.1f}ms ratio={r['ratio']:.3f}", flush=True)
    if args.out:
        command = "python benchmarks/decoder_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_report(args.out, args.device, command, time.perf_counter() - t0, rows,
                     "Training step time, zoo / smp, per decoder",
                     f"batch {args.batch} of {args.size}x{args.size} RGB, 5 classes; the two models alternate in "
                     f"chunks of {args.chunk} steps, {args.steps} steps each, median chunk", table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
