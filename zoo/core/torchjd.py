"""TorchJD's multi-task methods as zoo weighting strategies: one adapter per kind.

``Scalarized`` wraps a ``torchjd.scalarization`` scalarizer (loss-based: UW, DWA, FAMO, STCH,
IMTL-L, ...): it combines the heads' losses into one scalar and runs a plain backward.
``Aggregated`` wraps a ``torchjd.aggregation`` aggregator (gradient-based: UPGrad, MGDA,
IMTL-G, Nash-MTL, ...): ``autojac.backward`` puts one Jacobian row per head into ``.jac`` of
every shared (encoder) parameter, and ``jac_to_grad`` turns the rows into one update.

The maths stays in TorchJD; these adapters only add what a trainer needs around it:
- the method is named in ``registry.yaml`` (``method: UPGrad``) with its settings; settings
  the method needs and was not given, or does not know, are errors listing the valid ones;
  ``shape``/``n_tasks`` are filled in from the number of heads, list settings become tensors;
- under torchrun every rank reads the same numbers: Jacobians are averaged over ranks before
  aggregation, loss values before scalarization (``zoo.core.distributed.global_value``), so weights
  and state are identical on every rank and equal those of one process on the global batch;
- under a GradScaler the Jacobian is unscaled before aggregation (aggregators are not scale
  invariant) and the update scaled back, so the scaler still finds overflows and skips steps;
- DWA's ``step()`` runs at each epoch's end, FAMO's ``update()`` after each optimizer step;
- ``weights()`` reports the weight each head's loss got in the last update.
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any

import torch
from torch import nn

from zoo.core import distributed as dist
from zoo.core.weighting import Scale, Weighting, identity

# Settings the adapter fills in itself (from the number of heads).
_FILLED = ("shape", "n_tasks")
# Settings given as YAML lists that TorchJD takes as tensors.
_TENSORS = ("weights", "pref_vector", "min_losses", "reference")


class _TorchJD(Weighting):
    kind = ""
    module = ""

    def __init__(self, names: list[str], weights: dict[str, float], method: str, rows: int | None = None,
                 **settings: Any) -> None:
        super().__init__(names, weights)
        cls = getattr(importlib.import_module(self.module), method, None)
        if not inspect.isclass(cls):
            raise ValueError(f"TorchJD has no {self.kind} {method!r} (module {self.module})")
        self.method_name = method
        self.method = self._build(cls, settings, len(names) if rows is None else rows)
        self._weights: torch.Tensor | None = None  # on the device: read only when weights() is asked

    def _build(self, cls: type, settings: dict[str, Any], n: int) -> nn.Module:
        params = {k: p for k, p in inspect.signature(cls).parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        own = [k for k in params if k not in _FILLED]
        unknown = sorted(set(settings) - set(own))
        if unknown:
            raise ValueError(f"{self.method_name}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(own) or '(none)'}")
        # a required preference vector (COSMOS, PBI, Constant) defaults to equal weights: the
        # YAML head weights already scale the losses
        if "weights" in own and params["weights"].default is inspect.Parameter.empty and "weights" not in settings:
            settings = {**settings, "weights": [1.0] * n}
        missing = [k for k in own if params[k].default is inspect.Parameter.empty and k not in settings]
        if missing:
            raise ValueError(f"{self.method_name} needs setting(s) {', '.join(map(repr, missing))}: give them in "
                             f"registry.yaml or as --weighting-arg {missing[0]}=VALUE")
        args = {k: (torch.as_tensor(v, dtype=torch.float32) if k in _TENSORS and v is not None else v)
                for k, v in settings.items()}
        args.update({k: n for k in _FILLED if k in params})
        try:
            return self._wrap(cls(**args))  # TorchJD checks values (e.g. mu > 0): fails here, before training
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.method_name} with settings {settings}: {exc}") from None

    def _wrap(self, method: nn.Module) -> nn.Module:
        return method

    def weights(self) -> dict[str, float]:
        if self._weights is None:
            return dict(self.base)
        return {n: self.base[n] * float(v) for n, v in zip(self.names, self._weights.float().cpu())}

    def _record(self, w: torch.Tensor) -> None:
        self._weights = w.detach()  # no host read per step (weights() reads it once per epoch)


class Scalarized(_TorchJD):
    """A TorchJD scalarizer over the heads' (YAML-weighted) losses."""

    kind = "scalarizer"
    module = "torchjd.scalarization"

    def __init__(self, names: list[str], weights: dict[str, float], method: str, **settings: Any) -> None:
        super().__init__(names, weights, method, **settings)
        self.wants_losses_after_step = callable(getattr(self.method, "update", None))

    def _values(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return dist.global_value(torch.stack([self.base[n] * losses[n].float() for n in self.names]))

    def backward(self, losses, shared, scale: Scale = identity, task_params=None):
        # d total / d value_i is the weight the update gives head i: read through a zero
        # probe added to the values (a tiny backward through the scalarizer alone)
        probe = torch.zeros(len(self.names), device=losses[self.names[0]].device, requires_grad=True)
        total = self.method(self._values(losses) + probe)
        (w,) = torch.autograd.grad(total, probe, retain_graph=True)
        self._record(w)
        scale(total).backward()
        return total.detach()

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        self.method.update(self._values(losses).detach())

    def epoch_end(self, mean_losses: dict[str, float]) -> None:
        if callable(getattr(self.method, "step", None)):
            self.method.step()  # DWA: close the epoch's loss average

    def get_extra_state(self) -> dict[str, Any]:
        # TorchJD keeps running state in plain attributes (DWA's averages, FAMO's Adam):
        # checkpoint them so a resumed run continues the same weighting.
        state = {k: v for k, v in vars(self.method).items() if k.startswith("_") and not k.startswith("_modules")
                 and k not in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_optimizer")
                 and not callable(v) and not isinstance(v, (dict, set))}
        opt = getattr(self.method, "_optimizer", None)
        state["_optimizer_state"] = opt.state_dict() if opt is not None else None
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        opt_state = state.pop("_optimizer_state", None)
        for k, v in state.items():
            setattr(self.method, k, v)
        if opt_state is not None:
            self.method._optimizer = torch.optim.Adam([self.method._w], lr=self.method.lr,
                                                      weight_decay=self.method.weight_decay)
            self.method._optimizer.load_state_dict(opt_state)


class Aggregated(_TorchJD):
    """A TorchJD aggregator of the heads' gradients on the shared encoder.

    ``gramian``: aggregate from the Gramian summed parameter by parameter, never holding the
    whole Jacobian as one matrix (TorchJD's ``optimize_gramian_computation``; only for
    aggregators that weight by the Gramian). ``None`` uses it wherever it applies.
    """

    kind = "aggregator"
    reads_shared_gradients = True
    module = "torchjd.aggregation"

    def _wrap(self, method: nn.Module) -> nn.Module:
        # methods TorchJD ships only as a Gramian weighting (MoDo, SDMGrad) become aggregators
        from torchjd.aggregation import Aggregator, GramianWeightedAggregator
        return method if isinstance(method, Aggregator) else GramianWeightedAggregator(method)

    def __init__(self, names: list[str], weights: dict[str, float], method: str, gramian: bool | None = None,
                 leave_out: list[str] | None = None, **settings: Any) -> None:
        if method == "NashMTL":
            # cvxpy warns on every solve that the problem is not DPP: harmless, and it floods the log
            warnings.filterwarnings("ignore", message=".*(DPP|Solution may be inaccurate).*")
        leave_out = list(leave_out or [])
        unknown = [n for n in leave_out if n not in names]
        if unknown or len(set(leave_out)) >= len(names):
            raise ValueError(f"leave_out must name some, not all, of the heads {names}; got {leave_out}")
        # the heads whose encoder gradient is aggregated (a left-out head still trains its own parameters)
        self.aggregated = [n for n in names if n not in leave_out]
        super().__init__(names, weights, method, rows=len(self.aggregated), **settings)
        from torchjd.aggregation import GramianWeightedAggregator
        supports = isinstance(self.method, GramianWeightedAggregator)
        if gramian and not supports:
            raise ValueError(f"{method} does not weight by the Gramian, so gramian=true cannot apply; "
                             "leave gramian unset (or false)")
        self.gramian = supports if gramian is None else bool(gramian)

    def weights(self) -> dict[str, float]:
        """Each head's weight in the encoder's last update; a left-out head's is 0 (its loss reaches only
        its own parameters)."""
        if self._weights is None:
            return {n: (self.base[n] if n in self.aggregated else 0.0) for n in self.names}
        got = dict(zip(self.aggregated, self._weights.float().cpu().tolist()))
        return {n: self.base[n] * got[n] if n in got else 0.0 for n in self.names}

    def backward(self, losses, shared, scale: Scale = identity, task_params=None):
        from torchjd.autojac import backward as jac_backward, jac_to_grad
        from torchjd.aggregation import WeightedAggregator
        shared = [p for p in shared if p.requires_grad]
        # float32 rows: under bf16 autocast some losses are bf16 and TorchJD's Jacobian backward
        # seeds every row with one dtype (on CUDA: "Expected grad_output to have type BFloat16")
        weighted = [self.base[n] * losses[n].float() for n in self.names]
        # the GradScaler's factor (a host read, only under a scaler: fp16 without bf16)
        factor = 1.0 if scale is identity else float(scale(torch.ones((), device=weighted[0].device)))
        scaled = [scale(w) for w in weighted]
        # Heads get their own loss's plain gradient. The encoder gets one Jacobian row per head.
        # Not mtl_backward: it differentiates through `features` as if they were independent,
        # and an encoder's multi-scale outputs are chained (each level is computed from the
        # one above), which gives wrong Jacobians (checked against autograd.grad: up to 0.07
        # off on a 2-level toy); autojac.backward differentiates the whole graph per head.
        ids = {id(p) for p in shared}
        heads = [p for p in (task_params if task_params is not None else _leaves(scaled))
                 if p.requires_grad and id(p) not in ids]
        if heads:
            torch.autograd.backward(sum(scaled), inputs=heads, retain_graph=bool(shared))
        if not shared:  # a frozen encoder (--freeze-encoder-epochs): no Jacobian to aggregate
            return sum(w.detach() for w in weighted)
        rows = [scaled[self.names.index(n)] for n in self.aggregated]
        # one backward per row (parallel_chunk_size=1): the vmapped backward fails on graphs
        # recorded under autocast, where bf16 and float32 ops mix ("expected scalar type
        # BFloat16 but found Float"; tests/test_mtl_ddp.py)
        jac_backward(rows, inputs=shared, parallel_chunk_size=1)
        with_jac = [p for p in shared if getattr(p, "jac", None) is not None]
        # the global, unscaled Jacobian on every rank (one all-reduce; one device sync for the check)
        for p, jac in zip(with_jac, dist.mean_all([p.jac for p in with_jac])):
            p.jac = jac / factor
        finite = bool(torch.stack([torch.isfinite(p.jac).all() for p in with_jac]).all())
        if not finite:
            # an overflow under the GradScaler: pass it on so the scaler skips this step
            for p in with_jac:
                p.grad = p.jac.sum(0) * factor
                del p.jac
            return sum(w.detach() for w in weighted)
        plain = not isinstance(self.method, WeightedAggregator)
        w = jac_to_grad(with_jac, self.method, retain_jac=plain, optimize_gramian_computation=self.gramian)
        if plain:
            w = self._least_squares_weights(with_jac)
        self._record(w)
        if factor != 1.0:
            for p in with_jac:
                p.grad.mul_(factor)
        return sum(w.detach() for w in weighted)

    @staticmethod
    def _least_squares_weights(params: list[nn.Parameter]) -> torch.Tensor:
        """For aggregators without weights (GradDrop, ConFIG): w with J^T w closest to the update."""
        gram, jg = 0.0, 0.0
        for p in params:
            j = p.jac.flatten(1).float()
            gram = gram + j @ j.T
            jg = jg + j @ p.grad.flatten().float()
            del p.jac
        eye = torch.eye(gram.shape[0], device=gram.device)
        return torch.linalg.solve(gram + 1e-12 * gram.diagonal().mean().clamp(min=1e-30) * eye, jg)


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The leaf tensors that require grad and feed ``tensors`` (when the caller names no head parameters)."""
    seen, out, stack = set(), [], [t.grad_fn for t in tensors]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            out.append(fn.variable)
        stack.extend(f for f, _ in fn.next_functions)
    return out
