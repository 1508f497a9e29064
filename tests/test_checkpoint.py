"""zoo.engine.checkpoint: checkpoints are written atomically (a full disk mid-run leaves the earlier files
byte for byte) and loaded safely (no pickled code; a bad .safetensors file is one line naming it), a run
folder is held by one training process at a time, and a checkpoint resumes under its own process count."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import run_cli
from zoo.engine.checkpoint import check_world_size, hold, in_use, load_checkpoint, read_weights, save_checkpoint


class _Code:  # a pickle that would run code when loaded
    def __reduce__(self):
        return (print, ("loaded",))


def test_a_checkpoint_round_trips_and_a_foreign_pickle_is_refused(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "config": {"task": "foreground"}}
    save_checkpoint(tmp_path / "run" / "last.pt", state)
    back = load_checkpoint(tmp_path / "run" / "last.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["epoch"] == 2
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["last.pt"]  # no temp file left behind
    torch.save({**state, "hook": _Code()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="code.pt cannot be loaded"):
        load_checkpoint(tmp_path / "code.pt")
    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare.pt is missing \['epoch', 'config'\]; is it a zoo checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights(tmp_path / "none.pt")


def test_a_run_folder_is_held_by_one_process_at_a_time(tmp_path):
    assert not in_use(tmp_path)
    with hold(tmp_path):
        assert in_use(tmp_path)  # another open file's lock: what a second process sees
        with pytest.raises(ValueError, match="is being trained by another process right now"):
            with hold(tmp_path):
                pass
    assert not in_use(tmp_path)  # released when the holder ends


def test_a_checkpoint_resumes_only_under_the_process_count_that_wrote_it():
    check_world_size({"world_size": 2}, "last.pt", 2)
    check_world_size({}, "last.pt", 4)  # written before the count was recorded
    with pytest.raises(ValueError, match=r"last.pt was written by a run of one process and this run has 2 "
                                         r"processes \(torchrun\).*resume it without torchrun"):
        check_world_size({"world_size": 1}, "last.pt", 2)


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
