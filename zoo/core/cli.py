"""The one wrapper of zoo's command lines (``python -m zoo.bench``, ``zoo.predict``, ``zoo.export``,
``zoo.data``): an error a user can act on ends the command with one ``error:`` line and an exit code,
never a traceback, and the four agree on which errors those are and how each is told."""
from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape


def run_main(body: Callable[[], int], err: Console, out: str | Path, *, kept: str = "",
             smaller: str = "use smaller inputs", interrupted: str = "",
             errors: tuple[type[BaseException], ...] = ()) -> int:
    """``body()``'s exit code; an error a user can act on is one ``error:`` line on ``err`` and exit 2.

    - ``ValueError`` (``RegistryError`` and ``DataError`` are ValueErrors), ``FileNotFoundError`` and the
      command's own ``errors``: their message.
    - The machine's memory (``MemoryError``, ``ENOMEM``): says so, then ``smaller`` (what to shrink).
    - Any other ``OSError`` is a write that failed (a full or vanished disk): the file (``out`` when the
      error names none), the reason, then ``kept`` (what is still whole: zoo writes each file atomically).
    - Ctrl-C: ``interrupted``, then the ``interrupted`` hint when given (how to go on); exit 130, as a
      shell gives.
    """
    try:
        return body()
    except (ValueError, FileNotFoundError, *errors) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except (MemoryError, OSError) as exc:
        if isinstance(exc, MemoryError) or exc.errno == errno.ENOMEM:  # the machine's memory, not the disk
            err.print(f"[bold red]error:[/] out of memory on this machine; {escape(smaller)} or a machine with more "
                      "memory")
            return 2
        err.print(f"[bold red]error:[/] cannot write {escape(str(exc.filename or out))}: "
                  f"{escape(exc.strerror or str(exc))}{escape(kept)}")
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]" + (f": {escape(interrupted)}" if interrupted else ""))
        return 130
