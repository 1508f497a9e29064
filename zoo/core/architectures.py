"""Multi-task architectures: how the heads share the encoder's multi-level features.

An architecture sits between the shared encoder and the heads. ``forward(features, head)`` turns the
encoder's feature list into the list that head reads, with the same channels and strides, so every
head and every registered encoder work with every architecture. It declares which of its parameters
are shared by all heads (they join the encoder's in the gradient-based strategies' Jacobian) and
which belong to one head (trained by that head's loss alone).

- ``HardSharing``: every head reads the encoder's features as they are (no parameters).
- ``MTAN`` (Liu, Johns & Davison, CVPR 2019): per head and level, a soft attention mask in [0, 1]
  over the shared features, computed from them and from that head's attended features one level up.
- ``CGC`` (Tang et al., PLE, RecSys 2020): per level, shared experts and each head's own experts,
  mixed by that head's gate. With no task experts it is MMoE (Ma et al., KDD 2018).

Levels that carry the raw input (an encoder built with ``input_skip``) pass through unchanged:
heads that read the image need its intensities.

Every architecture takes ``detach: [HEAD, ...]``: those heads read the encoder's features through a
stop-gradient, so their losses train the head (and the architecture's modules it uses) but never the
encoder. It is the loss-based methods' counterpart of the Jacobian methods' ``leave_out``: for a head
that reads the input and barely needs the encoder (the threshold head), e.g.
``--architecture-arg 'detach=[mask]'``.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.layers import global_pool, positive_int

DEFAULT_ARCHITECTURE = "hard_sharing"  # what a run, a row or a checkpoint without one used


def valid_detach(detach: object, heads: list[str]) -> bool:
    """``detach`` lists some, not all, of ``heads``, each once (the one rule: the model's and the CLI's check)."""
    return (isinstance(detach, (list, tuple)) and all(isinstance(n, str) and n in heads for n in detach)
            and len(set(detach)) == len(detach) < len(heads))


class Architecture(nn.Module):
    """Base class: ``forward(features, head) -> features`` (same channels and strides)."""

    def __init__(self, channels: list[int], reductions: list[int], heads: list[str], raw_levels: int = 0,
                 detach: list[str] | None = None) -> None:
        super().__init__()
        if not heads:
            raise ValueError("an architecture needs at least one head")
        self.channels, self.reductions, self.head_names = list(channels), list(reductions), list(heads)
        self.levels = list(range(raw_levels, len(channels)))  # the levels an architecture may change
        detach = [] if detach is None else detach
        if not valid_detach(detach, list(heads)):
            raise ValueError(f"detach must list some, not all, of the heads {list(heads)}; got {detach!r}")
        # read by MultiTaskModel.forward, so an architecture that overrides only forward still honours it
        self.detach = list(detach)

    def forward(self, features: list[torch.Tensor], head: str) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def task_modules(self, head: str) -> list[nn.Module]:
        """The modules that only ``head`` uses."""
        return []

    def task_parameters(self) -> Iterator[nn.Parameter]:
        for name in self.head_names:
            for m in self.task_modules(name):
                yield from m.parameters()

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        own = {id(p) for p in self.task_parameters()}
        yield from (p for p in self.parameters() if id(p) not in own)


class HardSharing(Architecture):
    """Every head reads the shared encoder's features as they are."""

    def forward(self, features: list[torch.Tensor], head: str) -> list[torch.Tensor]:
        return features


def _conv_bn(c_in: int, c_out: int, k: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, act if act is not None else nn.ReLU(inplace=True))


def _bottleneck(channels: int, ratio: int) -> int:
    return max(channels // ratio, 4)


class MTAN(Architecture):
    """MTAN's task attention over the shared levels (the ResNet form of LibMTL's MTAN).

    For head ``t`` and level ``j``: ``mask = sigmoid(g([f_j, p_t]))`` and the head reads
    ``mask * f_j``, where ``g`` is conv1x1-BN-ReLU-conv1x1-BN and ``p_t`` is the head's attended
    features of level ``j-1`` through conv3x3-BN-ReLU, resized to level ``j`` (none at the first
    level). ``ratio`` sets the bottleneck width (channels / ratio).
    """

    def __init__(self, channels: list[int], reductions: list[int], heads: list[str], raw_levels: int = 0,
                 ratio: int = 4, detach: list[str] | None = None) -> None:
        super().__init__(channels, reductions, heads, raw_levels, detach)
        ratio = positive_int("ratio", ratio)
        self.attention = nn.ModuleDict()
        self.carry = nn.ModuleDict()
        for name in heads:
            att, carry = nn.ModuleList(), nn.ModuleList()
            for i, j in enumerate(self.levels):
                c, prev = channels[j], (_bottleneck(channels[j], ratio) if i else 0)
                att.append(nn.Sequential(_conv_bn(c + prev, _bottleneck(c, ratio)),
                                         _conv_bn(_bottleneck(c, ratio), c, act=nn.Sigmoid())))
                if i + 1 < len(self.levels):
                    nxt = channels[self.levels[i + 1]]
                    carry.append(_conv_bn(c, _bottleneck(nxt, ratio), k=3))
            self.attention[name], self.carry[name] = att, carry

    def task_modules(self, head: str) -> list[nn.Module]:
        return [self.attention[head], self.carry[head]]

    def masks(self, features: list[torch.Tensor], head: str) -> list[torch.Tensor]:
        """The head's attention mask at each level it attends (values in [0, 1])."""
        out, prev = [], None
        for i, j in enumerate(self.levels):
            f = features[j]
            mask = self.attention[head][i](f if prev is None else torch.cat([f, prev], 1))
            out.append(mask)
            if i + 1 < len(self.levels):
                size = features[self.levels[i + 1]].shape[-2:]
                prev = F.adaptive_max_pool2d(self.carry[head][i](mask * f), size)
        return out

    def forward(self, features: list[torch.Tensor], head: str) -> list[torch.Tensor]:
        attended = list(features)
        for j, mask in zip(self.levels, self.masks(features, head)):
            attended[j] = mask * features[j]
        return attended


EXPERT_OBJECT_BYTES = 32 * 1024  # an Expert's Python objects (its 11 layers), measured at about 28 KB


def host_memory() -> int:
    """Bytes of RAM on this machine, where a model is built; 0 where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 0


class Expert(nn.Sequential):
    """A bottleneck conv block (1x1, 3x3, 1x1), the last BatchNorm zero-initialised: an expert starts
    by adding nothing, so training starts from the shared features (as a zero-init residual does)."""

    def __init__(self, channels: int, ratio: int) -> None:
        mid = _bottleneck(channels, ratio)
        super().__init__(_conv_bn(channels, mid), _conv_bn(mid, mid, k=3),
                         nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self[-1].weight)


class CGC(Architecture):
    """Customized Gate Control (PLE's extraction layer) at every level: ``shared_experts`` experts that
    every head may use and ``task_experts`` of each head's own; head ``t`` reads
    ``f_j + sum_i g_ti(f_j) E_i(f_j)`` over the shared experts and its own, with the gate
    ``g_t = softmax(W_t [mean(f_j), max(f_j)])``. ``task_experts: 0`` is MMoE.

    Experts refine the shared level residually (zoo's choice for a shared conv encoder; PLE's experts
    are whole towers), so the heads see the encoder's features at the start of training.
    """

    def __init__(self, channels: list[int], reductions: list[int], heads: list[str], raw_levels: int = 0,
                 shared_experts: int = 2, task_experts: int = 1, ratio: int = 4,
                 detach: list[str] | None = None) -> None:
        super().__init__(channels, reductions, heads, raw_levels, detach)
        shared_experts = positive_int("shared_experts", shared_experts)
        task_experts = positive_int("task_experts", task_experts, minimum=0)
        ratio = positive_int("ratio", ratio)
        self._check_fits(shared_experts, task_experts, ratio)
        self.shared = nn.ModuleList(nn.ModuleList(Expert(channels[j], ratio) for _ in range(shared_experts))
                                    for j in self.levels)
        self.own = nn.ModuleDict({n: nn.ModuleList(nn.ModuleList(Expert(channels[j], ratio)
                                                                 for _ in range(task_experts)) for j in self.levels)
                                  for n in heads})
        self.gates = nn.ModuleDict({n: nn.ModuleList(nn.Linear(2 * channels[j], shared_experts + task_experts)
                                                     for j in self.levels) for n in heads})

    def _check_fits(self, shared: int, task: int, ratio: int) -> None:
        """Refuse, before building, experts that would not fit this machine's memory: the settings come
        from a command line or a model's config.json, and ``shared_experts=10**7`` would otherwise build
        for minutes and end out of memory. Each expert is counted as its tensors (float32) plus the
        Python objects of its layers, which dominate for narrow levels."""
        experts = shared + task * len(self.head_names)
        values = 0
        for j in self.levels:
            with torch.device("meta"):  # one expert's shapes, no memory: the count follows Expert as it changes
                one = Expert(self.channels[j], ratio)
            per_expert = sum(t.numel() for t in (*one.parameters(), *one.buffers()))
            values += experts * per_expert + len(self.head_names) * (2 * self.channels[j] + 1) * (shared + task)
        built = experts * len(self.levels)
        need, have = 4 * values + EXPERT_OBJECT_BYTES * built, host_memory()
        if have and need > have:
            raise ValueError(
                f"{type(self).__name__}: shared_experts={shared}, task_experts={task} ({len(self.head_names)} head(s)) "
                f"make {built:,} experts with {values:,} weights over {len(self.levels)} levels: building them needs "
                f"about {need / 2**30:,.1f} GiB, more than the {have / 2**30:,.1f} GiB of memory here; use fewer "
                "experts (PLE and MMoE use 2 to 8)")

    def task_modules(self, head: str) -> list[nn.Module]:
        return [self.own[head], self.gates[head]]

    def gate(self, features: list[torch.Tensor], head: str) -> list[torch.Tensor]:
        """The head's expert weights at each level, ``[B, experts]`` (each row sums to 1)."""
        return [self.gates[head][i](global_pool(features[j]).float()).softmax(1) for i, j in enumerate(self.levels)]

    def forward(self, features: list[torch.Tensor], head: str) -> list[torch.Tensor]:
        mixed = list(features)
        for i, (j, g) in enumerate(zip(self.levels, self.gate(features, head))):
            f = features[j]
            experts = [e(f) for e in self.shared[i]] + [e(f) for e in self.own[head][i]]
            mix = sum(g[:, k, None, None, None].to(f.dtype) * e for k, e in enumerate(experts))
            mixed[j] = f + mix
        return mixed


class MMoE(CGC):
    """Multi-gate Mixture-of-Experts: CGC with shared experts only (each head its own gate)."""

    def __init__(self, channels: list[int], reductions: list[int], heads: list[str], raw_levels: int = 0,
                 shared_experts: int = 3, ratio: int = 4, detach: list[str] | None = None) -> None:
        super().__init__(channels, reductions, heads, raw_levels, shared_experts=shared_experts, task_experts=0,
                         ratio=ratio, detach=detach)
