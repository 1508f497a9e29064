"""Which run a result row, a run folder, a grid job and a log are: one typed owner.

A run is named by its task, encoder, weighting, architecture, decoder, budget mode, seed and process
count. Its row key (``zoo.runs.keys.KEY``), the fields its row holds, the label a grid prints, the
prefix of its run folder and the key of the single-task row it is compared with all derive from
:class:`RunIdentity`, so the defaults that are left out (hard sharing, the task's own decoder, one
process) are decided here and nowhere else.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.core.architectures import DEFAULT_ARCHITECTURE
from zoo.runs.keys import row_key

if TYPE_CHECKING:
    from zoo.engine.config import RunConfig


def launched_world() -> int | None:
    """The number of processes torchrun (or a Slurm job's tasks) started, None for one process."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    return n if n > 1 else None


@dataclass(frozen=True)
class RunIdentity:
    task: str
    encoder: str
    weighting: str = "fixed"
    budget_mode: str = "default"
    seed: int = 0
    architecture: str = DEFAULT_ARCHITECTURE
    decoder: str | None = None  # None: each dense head's own decoder (the task entry's)
    world_size: int | None = None  # None: one process

    @classmethod
    def of(cls, cfg: "RunConfig", mode: str, world_size: int | None = None) -> "RunIdentity":
        """The identity of a run of ``cfg`` under budget mode ``mode`` (``zoo.engine.config.budget_mode``)."""
        return cls(cfg.task, cfg.encoder, cfg.weighting, mode, cfg.seed, cfg.architecture,
                   getattr(cfg, "decoder", None), world_size if world_size and world_size > 1 else None)

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> "RunIdentity":
        """The identity a result row holds (absent optional fields are their defaults)."""
        return cls(row.get("task"), row.get("encoder"), row.get("weighting"), row.get("budget_mode"), row.get("seed"),
                   row.get("architecture") or DEFAULT_ARCHITECTURE, row.get("decoder"), row.get("world_size"))

    def named(self) -> dict[str, Any]:
        """The optional fields a row names: the architecture unless hard sharing, the decoder unless the task's
        own (rows from before architectures and decoders have neither, and keep their keys)."""
        return {**({} if self.architecture == DEFAULT_ARCHITECTURE else {"architecture": self.architecture}),
                **({} if self.decoder is None else {"decoder": self.decoder})}

    @property
    def fields(self) -> dict[str, Any]:
        """The fields that key this run's row (``zoo.runs.keys.KEY``), as its row holds them."""
        return {"task": self.task, "encoder": self.encoder, "weighting": self.weighting,
                "budget_mode": self.budget_mode, "seed": self.seed, "world_size": self.world_size, **self.named()}

    @property
    def key(self) -> tuple:
        return row_key(self.fields)

    @property
    def label(self) -> str:
        """``task | encoder | weighting[ | architecture][ | decoder]``: what a grid prints for the run."""
        extra = "".join(f" | {v}" for v in self.named().values())
        return f"{self.task} | {self.encoder} | {self.weighting}{extra}"

    @property
    def folder(self) -> str:
        """The prefix of the run's folders (``zoo.runs.rundir``) and of its grid log: the process count is not in
        it (a checkpoint records the world size it was written by)."""
        extra = "".join(f"-{v}" for v in self.named().values())
        return f"{self.task}-{self.encoder.replace(':', '_')}-{self.weighting}{extra}-{self.budget_mode}-s{self.seed}"

    def baseline(self, task: str, mode: str | None = None, decoder: str | None = None) -> "RunIdentity":
        """The single-task run a joint run is compared with: ``task``, fixed weighting, hard sharing, the same
        encoder, seed and process count, under ``mode`` (the joint row's ``baseline_mode``) or its own, with
        ``decoder`` (``zoo.runs.gain.baseline_decoder``: the joint run's, where the task has a dense head)."""
        return dataclasses.replace(self, task=task, weighting="fixed", architecture=DEFAULT_ARCHITECTURE,
                                   budget_mode=mode or self.budget_mode, decoder=decoder)
