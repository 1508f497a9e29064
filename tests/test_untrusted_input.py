"""Untrusted files and values that used to end in a traceback, a raw library message or a runaway
allocation: each is one line naming the input, through the CLI a user would run."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from test_bad_input import assert_clear, run_cli

from zoo.data.__main__ import main as data_cli

RECURSIVE = "encoders: &a\n  x: *a\n"  # a mapping that contains itself


def data_export(args: list[str], capsys) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = data_cli(["export", *args])
    return rc, capsys.readouterr().err.replace("\n", " ")


def test_a_recursive_alias_in_a_registry_file(tiny_mnist, tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text(RECURSIVE)
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "o"),
                       "--registry", str(f)], capsys)
    assert_clear(rc, err, f"registry file {f}", "a recursive alias")
    rc, err = data_export(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "d"),
                           "--registry", str(f)], capsys)
    assert_clear(rc, err, f"registry file {f}", "a recursive alias")


@pytest.mark.parametrize("flag,value", [("--task-arg", "augment=&a [*a]"),
                                        ("--architecture-arg", "detach=&a [*a]"),
                                        ("--encoder-arg", "width=&a {w: *a}")])
def test_a_recursive_alias_in_a_setting_names_the_argument(tiny_mnist, tmp_path, capsys, flag, value):
    rc, err = run_cli(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path), flag, value],
                      capsys)
    assert_clear(rc, err, f"{flag} {value!r}: cannot parse the value as YAML", "a recursive alias")


def test_data_export_out_must_be_a_folder(tiny_mnist, tmp_path, capsys):
    f = tmp_path / "taken.txt"
    f.write_text("mine")
    rc, err = data_export(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(f)], capsys)
    assert_clear(rc, err, f"--out {f} is a file, not a folder")
    assert f.read_text() == "mine"
    rc, err = data_export(["--task", "foreground", "--data-root", str(tiny_mnist), "--out", str(tmp_path / "d"),
                           "--n", "3"], capsys)
    assert rc == 0 and len(list((tmp_path / "d" / "Masks").glob("*.png"))) == 3, err


def test_an_npz_of_object_arrays_names_the_file_and_array(tmp_path, capsys):
    images = np.empty(3, dtype=object)
    images[:] = [np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), np.zeros((8, 8), np.uint8)]
    path = tmp_path / "ragged.npz"
    np.savez(path, images=images, masks=np.zeros((3, 8, 8), np.uint8))
    rc, err = run_cli(["--task", "npz", "--data-root", str(path), "--out", str(tmp_path / "o")], capsys)
    assert_clear(rc, err, f"{path}: array 'images' holds Python objects (dtype object)", "never unpickles")
