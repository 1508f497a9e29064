"""Which decoder serves which encoder, and at what size and cost: no training, every pair built.

    python benchmarks/decoder_cost.py [--size 56] [--out benchmarks/results/decoders/cost.md]

For every registered decoder x encoder (the decoder table's three, scratch as the table trains it,
and the transformer path: ViT-Tiny's blocks 2, 5, 8, 11 and Swin-Tiny), the one-head 11-class
segmentation model on a 1-channel ``--size`` image (the semantic task's 56x56 composites): its
parameters and forward GFLOPs per image (torch's FLOP counter, a multiply-add counts 2), or the
decoder's one-line refusal. Each encoder is built with the settings that let the most decoders
read it (a dilated ResNet for the DeepLab decoders is another row). Written as one markdown file.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

import zoo
from zoo.core.files import atomic_write_text
from zoo.core.registry import RegistryError
from zoo.use.speed import gflops_per_image

# label -> (encoder, its settings)
ENCODERS = {
    "scratch": ("scratch", {"input_skip": True}),
    "resnet18": ("resnet18", {}),
    "resnet18 (output_stride 16)": ("resnet18", {"output_stride": 16}),
    "mobilenetv3_large_100": ("mobilenetv3_large_100", {}),
    "mobilenetv3_large_100 (output_stride 16)": ("mobilenetv3_large_100", {"output_stride": 16}),
    "vit_tiny (blocks 2, 5, 8, 11)": ("timm:vit_tiny_patch16_224", {"out_indices": [2, 5, 8, 11]}),
    "swin_tiny": ("timm:swin_tiny_patch4_window7_224", {}),
}


def cell(encoder: str, settings: dict, decoder: str, size: int) -> str:
    try:
        model = zoo.build_model(encoder, {"seg": {"head": "segmentation", "settings": {
            "num_classes": 11, "decoder": decoder}}}, encoder_settings=settings)
    except RegistryError as exc:  # the refusal, shortened to its reason
        return "no: " + str(exc).split("): ", 1)[-1].split(";")[0].split(" (")[0]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gflops = gflops_per_image(model, torch.rand(1, size, size), ["seg"])
    return f"{params:.1f} M / {gflops:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--out", default=None, help="the markdown file to write (default: print it)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    decoders = zoo.load_registry().names("decoders")
    lines = ["| decoder | " + " | ".join(ENCODERS) + " |", "|---|" + "---|" * len(ENCODERS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for d in decoders:
            lines.append(f"| {d} | " + " | ".join(cell(e, s, d, args.size) for e, s in ENCODERS.values()) + " |")
            print(lines[-1], flush=True)
    command = "python benchmarks/decoder_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# Decoders x encoders: parameters and forward GFLOPs, or why not", "",
        f"Command: `{command.strip()}` ({time.perf_counter() - t0:.0f} s). No training: each model is built with "
        f"random weights and one 1-channel {args.size}x{args.size} image is counted (torch's FLOP counter, a "
        "multiply-add = 2 FLOPs), for the one-head 11-class segmentation model. Cells: parameters (millions) / "
        "GFLOPs per image, or `no:` and the decoder's refusal. torch " + torch.__version__ + ".", ""] + lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
