"""Start-up time of the COCO tasks on a synthetic annotation file the size of COCO's train2017.

    python benchmarks/coco_startup.py [--images 118287] [--annotations 860001] [--out benchmarks/results/coco_startup.md]

Writes an instances JSON with that many images and polygon annotations (80 categories, 8-24
points a polygon, a few invalid polygons and unknown categories as real files have), then times
what a run does with it before the first step: parsing, the image-entry checks (ids, file names
inside the image folder) and counting skipped annotations (from their structure, no mask decoded).
Reading each image's header to check its size is left out: it scales with the image files, which
this benchmark does not write.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from zoo.core.files import atomic_write_text
from zoo.runs.results import machine
from zoo.tasks.coco import CocoSemanticTask


def synthesize(root: Path, n_images: int, n_anns: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "height": 480, "width": 640} for i in range(n_images)]
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 91) if c % 9]  # 80 of 1..90, as COCO's ids skip
    owners = rng.integers(1, n_images + 1, n_anns)
    points = rng.integers(4, 13, n_anns) * 2
    anns = []
    for k in range(n_anns):
        poly = np.round(rng.uniform(0, 480, points[k]), 2).tolist()
        if k % 997 == 0:
            poly = poly[:4]  # a 2-point polygon, dropped and counted
        anns.append({"id": k + 1, "image_id": int(owners[k]), "category_id": cats[k % 80]["id"] if k % 5003 else 999,
                     "segmentation": [poly], "area": 1000.0, "bbox": [0, 0, 10, 10], "iscrowd": 0})
    path = root / "annotations" / "instances_train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=118287)
    p.add_argument("--annotations", type=int, default=860001)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = synthesize(Path(tmp), a.images, a.annotations)
        made = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, images, by_image, _, _, skipped = CocoSemanticTask().read_split(Path(tmp), "train")
        seconds = time.perf_counter() - t0
    line = (f"{a.images:,} images, {a.annotations:,} polygon annotations ({size / 2**20:,.0f} MB JSON): start-up "
            f"{seconds:.1f} s ({skipped} annotations skipped; {len(caught)} warning)")
    print(line)
    if a.out:
        shown = sys.argv[1:] if argv is None else argv
        atomic_write_text(a.out, f"# COCO start-up\n\nCommand: `python benchmarks/coco_startup.py"
                                 f"{' ' + ' '.join(shown) if shown else ''}`\n\nMachine: {machine()}\n\n{line}; "
                                 f"writing the file took {made:.0f} s.\n\n"
                                 f"Warning: {caught[0].message if caught else '(none)'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
