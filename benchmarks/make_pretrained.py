"""Turn the best checkpoints of reference runs into the models shipped in ``zoo/pretrained/``.

    python benchmarks/make_pretrained.py benchmarks/results/pretrained --out zoo/pretrained
    python benchmarks/make_pretrained.py benchmarks/results/mtl/default_budget --only task=joint \
        --only architecture=mtan --only weighting=fixed --only seed=0

For each row of ``RESULTS/results.json`` (default budget only; ``--only KEY=VALUE`` keeps the rows
whose field KEY has that value, e.g. one joint configuration and seed of an MTL table), the run's
``best.pt`` becomes
``<task>-<encoder>.safetensors`` with its metadata record in the safetensors header, and
``index.json`` lists every record. The test metrics are the row's (the run that trained the
weights); ``tests/test_pretrained.py`` checks the shipped weights reproduce them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from safetensors.torch import save

from zoo.core.files import atomic_write_bytes, atomic_write_text
from zoo.engine.config import parse_kv
from zoo.engine.build import load_registry
from zoo.use.load import create_model
from zoo.use.pretrained import record_of_row
from zoo.runs.keys import row_architecture
from zoo.runs.results import load_rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("results", help="a results folder whose rows have run_dir/best.pt")
    p.add_argument("--out", default="zoo/pretrained")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only rows whose field KEY is VALUE (YAML value; repeatable; budget_mode=default "
                        "unless given)")
    a = p.parse_args(argv)
    try:
        only = {"budget_mode": "default", **parse_kv(a.only, "--only")}
    except ValueError as e:
        p.error(str(e))
    rows = [r for r in load_rows(Path(a.results)) if not r.get("status")
            and all((row_architecture(r) if k == "architecture" else r.get(k)) == v for k, v in only.items())]
    files = [f"{r['task']}-{r['encoder']}.safetensors" for r in rows]
    if not rows:
        p.error(f"no finished row of {a.results} has {only}")
    twice = sorted({f for f in files if files.count(f) > 1})
    if twice:  # one name per task and encoder: say which run ships, never let the last one win
        p.error(f"several rows would be shipped as {', '.join(twice)}; choose one with --only (e.g. seed=0, "
                "architecture=..., weighting=...)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    registry = load_registry()
    for row, file in zip(rows, files):
        ckpt = Path(row["run_dir"]) / "best.pt"
        model = create_model(row["task"], row["encoder"], pretrained=ckpt)
        meta = record_of_row(row, model, registry).replace(file=file).to_dict()
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        data = save(state, metadata={"zoo": json.dumps(meta)})
        atomic_write_bytes(out / file, data)
        index[meta["name"]] = {**meta, "file_size_mb": round(len(data) / 2**20, 3),
                               "sha256": hashlib.sha256(data).hexdigest()}
        print(f"{meta['name']}: {file} ({len(data) / 2**20:.2f} MB), {meta['metrics']}")
    atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
