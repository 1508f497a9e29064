"""Partial labels: a dataset whose samples carry only some of their targets.

Each sample gets ``valid``: target name -> bool. The trainer leaves a sample out of the loss of
every head whose target it lacks, and metrics score only the samples that carry their targets
(``zoo.engine.step.step_losses``, ``zoo.engine.evaluate``), so one model trains on a mix of datasets labelled
for different tasks. A missing target keeps a placeholder of its usual shape so batches stack.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset


def labelled(batch: dict, targets: tuple[str, ...] | list[str]) -> torch.Tensor | None:
    """The samples of ``batch`` that carry every one of ``targets`` (a bool mask), or None when all do."""
    valid = batch.get("valid")
    if not isinstance(valid, dict):
        return None
    keep = None
    for t in targets:
        if t in valid:
            keep = valid[t].bool() if keep is None else keep & valid[t].bool()
    return None if keep is None or bool(keep.all()) else keep


class PartialLabels(Dataset):
    """``dataset`` with the targets ``labelled(index)`` names; the others are marked missing."""

    def __init__(self, dataset: Dataset, targets: tuple[str, ...], labelled: Callable[[int], set[str]]) -> None:
        self.dataset, self.targets, self.labelled = dataset, targets, labelled

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.dataset[i])
        have = self.labelled(i)
        sample["valid"] = {t: torch.tensor(t in have) for t in self.targets}
        return sample

    def device_view(self, device: torch.device, fields: set[str] | None = None):
        """The wrapped dataset's device view, with the per-sample ``valid`` flags on the device too."""
        from zoo.data.device import PartialView, device_view
        inner = device_view(self.dataset, device, fields)
        if inner is None:
            return None
        have = [self.labelled(i) for i in range(len(self))]
        return PartialView(inner, {t: torch.tensor([t in h for h in have], device=device) for t in self.targets})

    def counts(self) -> dict[str, int]:
        """How many samples carry each target."""
        return {t: sum(t in self.labelled(i) for i in range(len(self))) for t in self.targets}

    def __getattr__(self, name: str):  # set_epoch and friends reach the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
