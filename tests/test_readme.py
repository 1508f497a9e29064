"""The README's custom-head example, run verbatim (files and commands as printed), figures included."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

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
    run = tmp_path / rows[0]["run_dir"]  # relative to where the command ran
    assert (run / "figure.png").stat().st_size > 1000 and (run / "best.pt").is_file()
