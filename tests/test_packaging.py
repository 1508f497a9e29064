"""The wheel, installed without dependencies into a fresh venv on top of the dev environment, works from
another folder: the registry YAML, every subpackage, the bundled MNIST and the shipped models are inside,
and ``heads`` is ``zoo.heads``, never a global module."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    """As a new user on an offline machine: the main command without --data-root, predict on a PNG
    with circlization/scratch, export to ONNX and run it, all from the wheel in another folder."""
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT), "-w", str(wheels)],
        cwd=tmp_path)
    [wheel] = wheels.glob("zoo-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    purelib = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=tmp_path).stdout.strip())
    # the dev environment's packages (torch, timm, ...) underneath; zoo itself only from the wheel
    dev = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "zz_dev_env.pth").write_text("\n".join(sorted(dev)) + "\n")
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(purelib), str(wheel)], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a new user's offline machine: no $ZOO_DATA, an empty cache, no download
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_DATA", "ZOO_NO_BUNDLED")}
    env.update({"XDG_CACHE_HOME": str(tmp_path / "cache"), "ZOO_OFFLINE": "1"})
    where = run([str(py), "-c", "import zoo, zoo.heads, zoo.core.registry as r; print(zoo.__file__); "
                 "print(r.builtin_registry_path()); import importlib.util as u; print(u.find_spec('heads'))"],
                cwd=elsewhere, env=env).stdout.split()
    assert where[0].startswith(str(purelib)) and where[1] == str(purelib / "zoo" / "registry.yaml")
    assert where[2] == "None", "heads must not be a global top-level module"
    listed = run([str(py), "-m", "zoo.bench", "--list"], cwd=elsewhere, env=env).stdout
    assert "circlization" in listed and "threshold_mask" in listed
    # the main command without --data-root (one epoch on a few digits): the bundled subset, said so
    out = run([str(py), "-m", "zoo.bench", "--task", "circlization", "--encoder", "scratch", "--epochs", "1",
               "--train-limit", "32", "--test-limit", "16", "--quiet"], cwd=elsewhere, env=env)
    assert "bundled subset" in out.stderr
    [row] = json.loads((elsewhere / "runs" / "results.json").read_text())["rows"]
    assert "train: 5,000 digits, bundled subset" in row["data_source"] and str(purelib) in row["data_source"]
    # predict on a PNG with the shipped circlization model: the right digit and a circle
    from zoo.data.idx import BUNDLED, load_mnist

    mnist = load_mnist(BUNDLED)
    png = elsewhere / "digit.png"
    cv2.imwrite(str(png), cv2.resize(255 - mnist.test_images[0], (140, 140), interpolation=cv2.INTER_CUBIC))
    run([str(py), "-m", "zoo.predict", "circlization/scratch", str(png), "--out", "pred"], cwd=elsewhere, env=env)
    [pred] = json.loads((elsewhere / "pred" / "predictions.json").read_text())["predictions"]
    assert pred["digit_class"] == int(mnist.test_labels[0]) and 20 < pred["circle_r"] < 80
    assert 30 < pred["circle_cx"] < 110 and 30 < pred["circle_cy"] < 110
    # export to ONNX and run it with onnxruntime, in the wheel's venv
    run([str(py), "-m", "zoo.export", "circlization/scratch", "--format", "onnx", "--out", "m.onnx"], cwd=elsewhere,
        env=env)
    code = ("import numpy as np, onnxruntime as ort; s = ort.InferenceSession('m.onnx'); "
            "o = s.run(None, {'image': np.random.rand(3, 1, 28, 28).astype(np.float32)}); print([x.shape for x in o])")
    assert run([str(py), "-c", code], cwd=elsewhere, env=env).stdout.strip() == "[(3, 10), (3, 1, 28, 28)]"
