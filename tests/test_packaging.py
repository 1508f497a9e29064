"""The wheel, installed without dependencies into a fresh venv on top of the dev environment, works from
another folder: the registry YAML, every subpackage and the bundled MNIST are inside, and ``heads`` is
``zoo.heads``, never a global module."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_installs_and_runs_from_another_folder(tiny_mnist, tmp_path):
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
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_DATA")}
    where = run([str(py), "-c", "import zoo, zoo.heads, zoo.registry as r; print(zoo.__file__); "
                 "print(r.builtin_registry_path()); import importlib.util as u; print(u.find_spec('heads'))"],
                cwd=elsewhere, env=env).stdout.split()
    assert where[0].startswith(str(purelib)) and where[1] == str(purelib / "zoo" / "registry.yaml")
    assert where[2] == "None", "heads must not be a global top-level module"
    listed = run([str(py), "-m", "zoo.bench", "--list"], cwd=elsewhere, env=env).stdout
    assert "circlization" in listed and "threshold_mask" in listed
    out = run([str(py), "-m", "zoo.bench", "--task", "foreground", "--encoder", "scratch", "--data-root",
               str(tiny_mnist), "--epochs", "1", "--train-limit", "32", "--test-limit", "16", "--quiet"],
              cwd=elsewhere, env=env)
    assert (elsewhere / "runs" / "results.json").is_file(), out.stderr[-2000:]
