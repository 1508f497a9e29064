"""zoo.engine.checkpoint: model files are read safely (a bad .safetensors file is one line naming it), and
checkpoints are written atomically (a full disk mid-run leaves the earlier files byte for byte)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import run_cli


@pytest.mark.parametrize("make,expect", [
    (lambda p: p.write_bytes(b""), "is not a readable .safetensors file"),
    (lambda p: p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"), "is not a readable .safetensors file"),
    (lambda p: p.write_bytes((2**40).to_bytes(8, "little") + b"{}"), "is not a readable .safetensors file"),
    (lambda p: p.write_bytes(b"not a model at all"), "is not a readable .safetensors file"),
], ids=["empty", "corrupt-header", "oversized-header", "garbage"])
def test_bad_safetensors_files(tmp_path, capsys, make, expect):
    from zoo.predict import main as predict_main

    model = tmp_path / "m.safetensors"
    make(model)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((28, 28), np.uint8))
    assert predict_main([str(model), str(img), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert expect in err and str(model) in err and "Traceback" not in err


def test_truncated_safetensors_file(tmp_path, capsys):
    from safetensors.torch import save_file

    from zoo.predict import main as predict_main

    model = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1000)}, str(model), metadata={"zoo": "{}"})
    model.write_bytes(model.read_bytes()[:-100])
    assert predict_main([str(model), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "is not a readable .safetensors file" in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["checkpoint", "results"])
def test_a_full_disk_mid_run_leaves_earlier_files_byte_identical(tiny_mnist, tmp_path, capsys, monkeypatch, where):
    """torch.save's 'unexpected pos' on a full disk, or ENOSPC while rewriting results.json: one line,
    exit 2, and the results of the run before are byte for byte what they were."""
    import errno

    import zoo.core.files as files
    import zoo.engine.checkpoint as ckpt

    args = ["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path), "--epochs", "1",
            "--encoder-arg", "width=4", "--no-speed"]
    assert run_cli(args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("results.*")}
    if where == "checkpoint":
        monkeypatch.setattr(ckpt.torch, "save", lambda *a, **k: (_ for _ in ()).throw(
            RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                         "data/3: file write failed; unexpected pos 1408 vs 1296")))
    else:
        real = files.atomic_write_bytes

        def full(path, data):
            if Path(path).name.startswith("results."):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real(path, data)

        monkeypatch.setattr(files, "atomic_write_bytes", full)
    rc, err = run_cli([*args, "--seed", "1"], capsys)
    assert rc == 2 and "Traceback" not in err and "error: cannot write" in err, err
    assert ("the disk may be full" if where == "checkpoint" else "No space left on device") in err
    assert {p.name: p.read_bytes() for p in tmp_path.glob("results.*")} == before
    runs = [d for d in tmp_path.iterdir() if d.is_dir() and d.name.startswith("foreground-")]
    assert all(any(f.name != ".run.lock" for f in d.iterdir()) for d in runs), "no empty run folder is left behind"
