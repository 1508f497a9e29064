"""The README run as written: its custom-head example (files and commands as printed, figures included) and every Python block."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_blocks() -> dict[str, str]:
    """The code blocks of the README's registry section, by what they are."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The registry"):]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    code = next(b for lang, b in blocks if lang == "python" and "class CountHead" in b)
    yaml = next(b for lang, b in blocks if lang == "yaml" and "foreground_count" in b)
    bash = next(b for lang, b in blocks if lang == "bash" and "--registry my.yaml" in b)
    return {"my_heads.py": code, "my.yaml": yaml, "commands": bash}


def test_readme_custom_head_example_runs_verbatim(tiny_mnist, tmp_path):
    blocks = readme_blocks()
    (tmp_path / "my_heads.py").write_text(blocks["my_heads.py"])
    (tmp_path / "my.yaml").write_text(blocks["my.yaml"])
    env = {**os.environ, "ZOO_DATA": str(tiny_mnist)}
    for command in blocks["commands"].strip().splitlines():
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
    rows = json.loads((tmp_path / "runs" / "results.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["foreground_count"] and rows[0]["heads"] == "count+mask"
    assert rows[0]["count_mae"] >= 0.0  # the declared metric is a column of the row
    run = tmp_path / rows[0]["run_dir"]  # relative to where the command ran
    assert (run / "figure.png").stat().st_size > 1000 and (run / "best.pt").is_file()


def python_blocks() -> list[tuple[int, str]]:
    """Every Python block of the README, with its line number."""
    text = (ROOT / "README.md").read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S)]


def test_the_readme_has_the_python_blocks_this_file_runs():
    blocks = [b for _, b in python_blocks()]
    assert len(blocks) >= 4 and any("zoo.run_config" in b for b in blocks) and any("class CountHead" in b for b in blocks)


@pytest.mark.parametrize("line,code", python_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else None)
def test_every_python_block_of_the_readme_runs_as_written(tiny_mnist, tmp_path, line, code):
    """Each block as printed, in a fresh interpreter in an empty folder (the MNIST it trains on is the
    tests' tiny copy, through ZOO_DATA as a user's own would be)."""
    env = {**os.environ, "ZOO_DATA": str(tiny_mnist)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"README line {line}:\n{proc.stderr[-3000:]}"
