"""zoo.core.files: an --out that is a file or cannot be written is refused in one line before any run."""
from __future__ import annotations

import os
from pathlib import Path

from conftest import assert_clear, run_cli


def test_out_that_is_a_file_or_not_writable(tiny_mnist, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", str(f)], capsys)
    assert_clear(rc, err, f"--out {f} is a file")
    rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", str(f / "sub")], capsys)
    assert_clear(rc, err, f"--out {f / 'sub'} is not writable")
    if os.geteuid() != 0:  # a read-only folder (root writes anywhere)
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", str(ro)], capsys)
        assert_clear(rc, err, f"--out {ro} is not writable")
    if Path("/sys").is_dir():  # read-only for everyone, root included
        rc, err = run_cli(["--task", "foreground", "--quick", "--data-root", str(tiny_mnist), "--out", "/sys/zoo-out"],
                          capsys)
        assert_clear(rc, err, "--out /sys/zoo-out is not writable")
