"""Multi-task loss weighting strategies, each a registered class.

Every strategy is called once per step as ``backward(losses, shared, scale)``: it writes
the gradients (``.grad``) of all parameters and returns the weighted total loss (detached)
for logging. ``shared`` are the encoder's parameters, where tasks meet; ``scale`` wraps a
loss before ``backward`` (the AMP grad scaler, or identity). ``weights()`` gives the
weights in force, logged each epoch; ``epoch_end`` receives the epoch's mean losses.
"""
from __future__ import annotations

import math
import random
from typing import Callable

import torch
from torch import nn


Scale = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class Weighting(nn.Module):
    """Base: fixed weights from the task's YAML."""

    def __init__(self, names: list[str], weights: dict[str, float]) -> None:
        super().__init__()
        missing = [n for n in names if n not in weights]
        if missing:
            raise ValueError(f"no weight given for head(s) {missing}")
        self.names = list(names)
        self.base = {n: float(weights[n]) for n in names}

    def weights(self) -> dict[str, float]:
        return dict(self.base)

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights()
        return sum(w[n] * losses[n] for n in losses)

    def backward(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter], scale: Scale = _identity) -> torch.Tensor:
        total = self.total(losses)
        scale(total).backward()
        return total.detach()

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        """Called with each head's mean training loss of the epoch just ended."""


class Fixed(Weighting):
    """The weighted sum with the weights from ``registry.yaml``."""


class Uncertainty(Weighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018).

    Learns ``s_i = log sigma_i^2``; loss = sum 0.5 * exp(-s_i) * w_i * L_i + 0.5 * s_i. For a
    constant loss L_i the optimum is s_i = log(w_i L_i): weights fall as the loss (noise) grows.
    """

    def __init__(self, names: list[str], weights: dict[str, float]) -> None:
        super().__init__(names, weights)
        self.log_vars = nn.Parameter(torch.zeros(len(names)))

    def weights(self) -> dict[str, float]:
        return {n: self.base[n] * 0.5 * math.exp(-float(s)) for n, s in zip(self.names, self.log_vars.detach())}

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        out = 0.0
        for n, s in zip(self.names, self.log_vars):
            if n in losses:
                out = out + 0.5 * torch.exp(-s) * self.base[n] * losses[n] + 0.5 * s
        return out


class DWA(Weighting):
    """Dynamic weight average (Liu, Johns & Davison 2019): w_i = K exp(r_i / T) / sum_j exp(r_j / T),
    with r_i = L_i(t-1) / L_i(t-2) the ratio of the last two epochs' mean losses; equal
    weights for the first two epochs. The YAML weights multiply the result."""

    def __init__(self, names: list[str], weights: dict[str, float], temperature: float = 2.0) -> None:
        super().__init__(names, weights)
        self.temperature = float(temperature)
        self.history: list[dict[str, float]] = []
        self.current = {n: 1.0 for n in names}

    def weights(self) -> dict[str, float]:
        return {n: self.base[n] * self.current[n] for n in self.names}

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        self.history = (self.history + [dict(mean_losses)])[-2:]
        if len(self.history) == 2:
            prev, last = self.history
            r = {n: last[n] / max(prev[n], 1e-12) for n in self.names}
            z = sum(math.exp(r[n] / self.temperature) for n in self.names)
            self.current = {n: len(self.names) * math.exp(r[n] / self.temperature) / z for n in self.names}

    def get_extra_state(self):
        return {"history": self.history, "current": self.current}

    def set_extra_state(self, state) -> None:
        self.history, self.current = state["history"], state["current"]


def _flat_grads(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def _assign(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    i = 0
    for p in params:
        n = p.numel()
        g = flat[i : i + n].view_as(p).to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad + g
        i += n


def _head_backward(total: torch.Tensor, shared: list[nn.Parameter], scale: Scale) -> None:
    """Backward through everything except the shared parameters (their grads are set apart)."""
    shared_ids = {id(p) for p in shared}
    graph_params = [p for p in _params_of(total) if id(p) not in shared_ids]
    if graph_params:
        torch.autograd.backward(scale(total), inputs=graph_params)


def _params_of(loss: torch.Tensor) -> list[nn.Parameter]:
    """Leaf tensors that require grad and feed ``loss``."""
    seen, out, stack = set(), [], [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            out.append(fn.variable)
        stack.extend(f for f, _ in fn.next_functions)
    return out


class PCGrad(Weighting):
    """Projecting conflicting gradients (Yu et al. 2020): on the shared parameters, each task's
    gradient loses its component along any other task's gradient it conflicts with (negative
    dot product); the projected gradients are summed. Heads get their plain gradients."""

    def __init__(self, names: list[str], weights: dict[str, float], seed: int = 0) -> None:
        super().__init__(names, weights)
        self._rng = random.Random(seed)

    @staticmethod
    def project(grads: list[torch.Tensor], order: Callable[[list[int]], None] | None = None) -> torch.Tensor:
        """PCGrad's combination of per-task gradient vectors."""
        out = []
        for i, g in enumerate(grads):
            g = g.clone()
            others = [j for j in range(len(grads)) if j != i]
            if order is not None:
                order(others)
            for j in others:
                dot = torch.dot(g, grads[j])
                if dot < 0:
                    g -= dot / grads[j].pow(2).sum().clamp(min=1e-20) * grads[j]
            out.append(g)
        return torch.stack(out).sum(0)

    def backward(self, losses, shared, scale=_identity):
        w = self.weights()
        weighted = {n: w[n] * losses[n] for n in losses}
        shared = [p for p in shared if p.requires_grad]
        grads = [_flat_grads(scale(l), shared) for l in weighted.values()]
        _assign(shared, self.project(grads, self._rng.shuffle))
        total = sum(weighted.values())
        _head_backward(total, shared, scale)
        return total.detach()


class GradNorm(Weighting):
    """GradNorm (Chen et al. 2018): learnable weights w_i whose gradient norms on the last
    shared layer, ||grad_W w_i L_i||, are pulled toward mean_norm * (r_i)^alpha, with r_i
    the relative inverse training rate L_i(t) / L_i(0) over its mean. Weights renormalise
    to sum to the number of tasks after each step."""

    def __init__(self, names: list[str], weights: dict[str, float], alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(names, weights)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(names)))
        self.lr = float(lr)
        self.register_buffer("initial", torch.zeros(len(names)))

    def weights(self) -> dict[str, float]:
        return {n: self.base[n] * float(v) for n, v in zip(self.names, self.w.detach())}

    def backward(self, losses, shared, scale=_identity):
        names = [n for n in self.names if n in losses]
        idx = [self.names.index(n) for n in names]
        last = [p for p in shared if p.requires_grad][-1]
        L = torch.stack([self.base[n] * losses[n].float() for n in names])
        if bool((self.initial[idx] == 0).any()):
            self.initial[idx] = L.detach()
        w = self.w[idx]
        norms = torch.stack([torch.autograd.grad(w[k] * L[k], last, retain_graph=True, create_graph=True)[0].norm()
                             for k in range(len(names))])
        ratio = L.detach() / self.initial[idx].clamp(min=1e-12)
        target = (norms.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        gn_loss = (norms - target).abs().sum()
        (gw,) = torch.autograd.grad(gn_loss, self.w, retain_graph=True)
        total = (w.detach() * L).sum()
        scale(total).backward()
        with torch.no_grad():
            self.w -= self.lr * gw
            self.w.clamp_(min=1e-3)
            self.w *= len(self.names) / self.w.sum()
        self.w.grad = None
        return total.detach()
