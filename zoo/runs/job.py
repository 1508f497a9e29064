"""One run of a grid as data: its configuration, its identity and how it reports, serialised as JSON.

Both launchers hand a run this record and nothing else: the local grid writes it to a file that
``python -m zoo.bench --job FILE`` reads, a Slurm job gets it as the argument of its callable
(``zoo.runs.slurm``). No launcher edits a command line, so no launcher knows the CLI's flags.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from zoo.core.files import atomic_write_text
from zoo.engine.config import RunConfig
from zoo.runs.identity import RunIdentity
from zoo.tasks.base import TaskSpec

#: the version of the serialised form: a job file of another version is refused, never half-read
VERSION = 1


@dataclass
class Job:
    cfg: RunConfig
    mode: str  # its budget mode (zoo.engine.config.budget_mode)
    # the budget mode of the single-task rows this job's row is compared with (its own mode, unless the
    # command gives strategy or architecture settings, which baselines are trained without)
    base_mode: str = ""
    world_size: int | None = None  # processes it runs as (a Slurm job's tasks); None: one
    out: str = "runs"
    command: str = ""  # the command the user typed, the row's provenance
    resume: str | None = None  # a last.pt to continue
    figures: bool = True
    speed: bool = True
    quiet: bool = False
    # built once by the plan with the job's --task-arg values; not serialised (rebuilt from cfg by the reader)
    spec: TaskSpec | None = field(default=None, compare=False, repr=False)

    @property
    def ident(self) -> RunIdentity:
        return RunIdentity.of(self.cfg, self.mode, self.world_size)

    @property
    def key(self) -> tuple:
        return self.ident.key

    @property
    def label(self) -> str:
        return self.ident.label

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("cfg", "spec")}
        return {"version": VERSION, "config": self.cfg.to_dict(), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Job":
        if not isinstance(d, dict) or d.get("version") != VERSION:
            raise ValueError(f"not a zoo job of version {VERSION} (written by another zoo?)")
        known = {f.name for f in fields(cls)} - {"cfg", "spec"}
        return cls(cfg=RunConfig.from_dict(d["config"]), **{k: v for k, v in d.items() if k in known})

    def write(self, folder: Path) -> Path:
        """This job as a new JSON file in ``folder`` (never another job's: a unique name, written atomically)."""
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{self.ident.folder}-", suffix=".job.json", dir=folder)
        os.close(fd)
        atomic_write_text(name, json.dumps(self.to_dict(), indent=1))
        return Path(name)

    @classmethod
    def read(cls, path: str | Path) -> "Job":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--job {path}: cannot read it as a zoo job ({exc})") from None

