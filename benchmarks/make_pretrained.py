"""Turn the best checkpoints of reference runs into the models shipped in ``zoo/pretrained/``.

    python benchmarks/make_pretrained.py benchmarks/results/pretrained --out zoo/pretrained

For each row of ``RESULTS/results.json`` (default budget only), the run's ``best.pt`` becomes
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
from zoo.use.pretrained import create_model, record
from zoo.runs.results import load_rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("results", help="a results folder whose rows have run_dir/best.pt")
    p.add_argument("--out", default="zoo/pretrained")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    for row in load_rows(Path(a.results)):
        if row.get("budget_mode") != "default":
            continue
        ckpt = Path(row["run_dir"]) / "best.pt"
        model = create_model(row["task"], row["encoder"], pretrained=ckpt)
        file = f"{row['task']}-{row['encoder']}.safetensors"
        meta = {**record(row, model), "file": file}
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        data = save(state, metadata={"zoo": json.dumps(meta)})
        atomic_write_bytes(out / file, data)
        index[meta["name"]] = {**meta, "file_size_mb": round(len(data) / 2**20, 3),
                               "sha256": hashlib.sha256(data).hexdigest()}
        print(f"{meta['name']}: {file} ({len(data) / 2**20:.2f} MB), {meta['metrics']}")
    atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
