"""Multi-task loss weighting strategies, each a registered class.

Every strategy is called once per step as ``backward(losses, shared, scale, task_params)``: it
writes the gradients (``.grad``) of all parameters and returns the weighted total loss
(detached) for logging. ``shared`` are the encoder's parameters, where tasks meet; ``scale``
wraps a loss before ``backward`` (the AMP grad scaler, or identity); ``task_params`` are the
heads' parameters. ``weights()`` gives the weights in force, logged each epoch; ``epoch_end``
receives the epoch's mean losses; ``after_step`` receives the same batch's losses recomputed after the optimizer step, for the
strategies that declare ``wants_losses_after_step`` (FAMO).

This module owns the two strategies TorchJD does not have (``fixed``, ``gradnorm``); every
other strategy is a TorchJD method behind one of the two adapters in ``zoo.core.torchjd``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from zoo.core import distributed as dist


Scale = Callable[[torch.Tensor], torch.Tensor]


def identity(t: torch.Tensor) -> torch.Tensor:
    """The loss scale of a run without a gradient scaler (float32, bf16): the loss as it is."""
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

    wants_losses_after_step = False
    # weighs the heads' gradients on the shared parameters (GradNorm, the Jacobian methods): a head
    # that the architecture detaches from the encoder would enter them as a zero gradient
    reads_shared_gradients = False

    def backward(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter], scale: Scale = identity,
                 task_params: list[nn.Parameter] | None = None) -> torch.Tensor:
        total = self.total(losses)
        scale(total).backward()
        return total.detach()

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        """Called with each head's mean training loss of the epoch just ended."""

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        """Called with the step's batch losses recomputed after the update (if wanted)."""


class Fixed(Weighting):
    """The weighted sum with the weights from ``registry.yaml``."""


class GradNorm(Weighting):
    """GradNorm (Chen et al. 2018): learnable weights w_i whose gradient norms on the last
    shared layer, ||grad_W w_i L_i||, are pulled toward mean_norm * (r_i)^alpha, with r_i
    the relative inverse training rate L_i(t) / L_i(0) over its mean. Weights renormalise
    to sum to the number of tasks after each step."""

    reads_shared_gradients = True

    def __init__(self, names: list[str], weights: dict[str, float], alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(names, weights)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(names)))
        self.lr = float(lr)
        self.register_buffer("initial", torch.zeros(len(names)))

    def weights(self) -> dict[str, float]:
        return {n: self.base[n] * float(v) for n, v in zip(self.names, self.w.detach())}

    def backward(self, losses, shared, scale=identity, task_params=None):
        names = [n for n in self.names if n in losses]
        idx = [self.names.index(n) for n in names]
        trainable = [p for p in shared if p.requires_grad]
        if not trainable:  # a frozen encoder (--freeze-encoder-epochs): nothing to balance, the weights hold
            total = sum(self.base[n] * self.w[i].detach() * losses[n].float() for n, i in zip(names, idx))
            scale(total).backward()
            return total.detach()
        last = trainable[-1]
        L = torch.stack([self.base[n] * losses[n].float() for n in names])
        # L_i(0): the global batch's losses at a head's first step, the same on every rank (kept on
        # the device: no host read per step)
        now = dist.mean(L.detach())
        self.initial[idx] = torch.where(self.initial[idx] == 0, now, self.initial[idx])
        w = self.w[idx]
        # sqrt(|g|^2 + eps): the plain norm's gradient is NaN where a head's gradient on that
        # layer is zero (a threshold head reading the input skip)
        grads = [torch.autograd.grad(w[k] * L[k], last, retain_graph=True, create_graph=True, allow_unused=True)[0]
                 for k in range(len(names))]
        norms = torch.stack([(g.pow(2).sum() + 1e-20).sqrt() if g is not None else w[k] * 0.0
                             for k, g in enumerate(grads)])
        ratio = now / self.initial[idx].clamp(min=1e-12)
        target = (norms.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        gn_loss = (norms - target).abs().sum()
        (gw,) = torch.autograd.grad(gn_loss, self.w, retain_graph=True)
        gw = dist.mean(gw)  # every rank steps its weights by the same (global) gradient
        total = (w.detach() * L).sum()
        scale(total).backward()
        with torch.no_grad():
            # a head whose loss is not twice differentiable (the grid head's second-order
            # gradient can be NaN) gives a non-finite gw: keep the weights for that step
            self.w -= self.lr * torch.nan_to_num(gw, nan=0.0, posinf=0.0, neginf=0.0)
            self.w.clamp_(min=1e-3)
            self.w *= len(self.names) / self.w.sum()
        self.w.grad = None
        return total.detach()
