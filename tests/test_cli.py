"""zoo.core.cli's ``run_main``, the one wrapper of every command line, and zoo.core.errors' ``one_line``:
which errors become one ``error:`` line and which exit code, told the same way by all four commands."""
from __future__ import annotations

import errno
import io

import pytest
from rich.console import Console

from zoo.core import distributed as dist
from zoo.core.cli import run_main
from zoo.core.errors import one_line
from zoo.core.registry import RegistryError
from zoo.data.idx import DataError


def told(exc: BaseException, **kw) -> tuple[int, str]:
    """The exit code and the stderr line of a command whose body raises ``exc``."""
    buf = io.StringIO()

    def body() -> int:
        raise exc

    rc = run_main(body, Console(file=buf, soft_wrap=True), "OUT", **kw)
    return rc, buf.getvalue()


def test_a_body_that_ends_gives_its_own_exit_code():
    assert run_main(lambda: 0, Console(file=io.StringIO()), "OUT") == 0
    assert run_main(lambda: 1, Console(file=io.StringIO()), "OUT") == 1  # a grid with failed rows


@pytest.mark.parametrize("exc", [RegistryError("task 'x' [red]?"), DataError("bad mask"), ValueError("bad value"),
                                 FileNotFoundError(errno.ENOENT, "No such file or directory", "in.png")])
def test_a_users_error_is_its_message_and_exit_2(exc):
    rc, err = told(exc)
    assert rc == 2 and err == f"error: {exc}\n"  # rich markup in a message is printed, not read


def test_a_commands_own_errors_are_told_as_users_errors_and_others_are_not_caught():
    assert told(dist.StalledRanks("rank 1 stopped"), errors=(dist.StalledRanks,)) == (2, "error: rank 1 stopped\n")
    with pytest.raises(dist.StalledRanks):
        told(dist.StalledRanks("rank 1 stopped"))
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        told(RuntimeError("boom"))


@pytest.mark.parametrize("exc", [MemoryError(), OSError(errno.ENOMEM, "Cannot allocate memory")])
def test_the_machines_memory_is_not_a_full_disk(exc):
    rc, err = told(exc, smaller="use a smaller --batch-size")
    assert rc == 2 and err == "error: out of memory on this machine; use a smaller --batch-size or a machine with " \
                              "more memory\n"


def test_a_failed_write_names_the_file_or_the_output_and_what_is_kept():
    full = OSError(errno.ENOSPC, "No space left on device", "OUT/results.json")
    assert told(full, kept="; files written before are unchanged") == \
        (2, "error: cannot write OUT/results.json: No space left on device; files written before are unchanged\n")
    assert told(OSError(errno.EIO, "Input/output error")) == (2, "error: cannot write OUT: Input/output error\n")


def test_ctrl_c_is_exit_130_with_how_to_go_on():
    assert told(KeyboardInterrupt()) == (130, "interrupted\n")
    assert told(KeyboardInterrupt(), interrupted="run it again") == (130, "interrupted: run it again\n")


def test_one_line_joins_cuts_and_names_an_empty_message():
    exc = ValueError("while parsing\n  a flow mapping\n\tin line 3")
    assert one_line(exc) == "while parsing a flow mapping in line 3"
    assert one_line(exc, 13) == "while parsing" and one_line(exc, 9, tail=True) == "in line 3"
    assert one_line(ValueError("x" * 500)) == "x" * 200 and one_line(ValueError("x" * 500), None) == "x" * 500
    assert one_line(KeyError()) == "KeyError"
