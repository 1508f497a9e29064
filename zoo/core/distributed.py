"""Data parallelism through torch.distributed, for runs started by ``torchrun``.

Each rank trains on its shard of every epoch and gradients are averaged across ranks
after each backward (one flat all-reduce), which is what DistributedDataParallel does;
doing it by hand keeps every weighting strategy (including gradient surgery that calls
``autograd.grad``) and multi-stream tasks (two forwards per step) correct. BatchNorm
statistics are averaged across ranks before every evaluation and checkpoint. Evaluation
shards the split without padding and sums metric states, so results equal a
single-process evaluation.
"""
from __future__ import annotations

import functools
import gc
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

#: seconds a rank waits for the others in one collective before the run stops with a clear error
#: (a rank that stalls or dies would otherwise leave the rest waiting forever); ZOO_DIST_TIMEOUT sets it
DEFAULT_TIMEOUT = 600.0
_where = "start-up"


class StalledRanks(RuntimeError):
    """A collective (or joining the group) did not complete: another rank stalled past the timeout,
    died or diverged."""


def timeout_seconds() -> float:
    value = os.environ.get("ZOO_DIST_TIMEOUT", str(DEFAULT_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"ZOO_DIST_TIMEOUT must be a number of seconds > 0, got {value!r}")
    return seconds


_published = (0.0, "")  # when this rank last told the others where it is, and the phase it named


def at(where: str) -> None:
    """Where this rank is (e.g. ``epoch 3, step 120``): named by the error if a collective times out.
    Ranks also leave it in the process group's key-value store (a host write, no device sync), so the
    rank that times out can say where each of the others was last: at each new phase (an epoch, an
    evaluation), and within one at most once a second."""
    global _where, _published
    _where = where
    phase = where.split(", step")[0]
    if active() and (phase != _published[1] or time.monotonic() - _published[0] >= 1.0):
        _published = (time.monotonic(), phase)
        try:
            _store().set(f"zoo/where/{rank()}", where)
        except Exception:  # the store is a convenience for the message, never a reason to stop
            pass


def _store():
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


def _others_last_seen() -> str:
    """``rank 1 was last at epoch 2, step 7 of 40; ...`` from the store (what each rank published)."""
    seen = []
    try:
        store = _store()
        for r in range(world_size()):
            key = f"zoo/where/{r}"
            if r != rank() and store.check([key]):
                seen.append(f"rank {r} was last at {store.get(key).decode()}")
    except Exception:
        return ""
    return "; ".join(seen)


def _detail(exc: BaseException) -> str:
    """The backend's error in a few words: gloo's begins with its C++ source path and ends in advice."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if text.startswith("[") and "] " in text:  # "[.../gloo/transport/tcp/pair.cc:545] Read error ..."
        text = text.split("] ", 1)[1]
    text = text.split(". This is typically caused by")[0]
    return f"{type(exc).__name__}: {text[:160]}"


def _timed_out(exc: BaseException, seconds: float) -> bool:
    """Whether ``exc`` ended a wait of ``seconds`` at the timeout, rather than a rank that went away (gloo
    reports a dead peer at once: "Connection reset by peer", "Connection closed by peer")."""
    text = str(exc).lower()
    return seconds >= 0.9 * timeout_seconds() or "timed out" in text or "timeout" in text


def _peers(world: int, me: int) -> str:
    return f"rank {1 - me}" if world == 2 else "another rank"


def _collective(fn):
    """A collective whose failure is one line naming this rank, where it waited, and what happened:
    the timeout (a rank stalled) or a rank that went away (it died or exited)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:  # (torch's DistError and gloo/nccl timeouts are RuntimeErrors)
            if not active() or isinstance(exc, StalledRanks):
                raise
            waited = time.monotonic() - t0
            others = _others_last_seen()
            seen = f" ({others})" if others else ""
            if _timed_out(exc, waited):
                raise StalledRanks(f"rank {rank()} of {world_size()} waited more than {timeout_seconds():g} s for the "
                                   f"other ranks at {_where}{seen}: one of them stalled, died or diverged "
                                   f"({_detail(exc)}); ZOO_DIST_TIMEOUT sets the limit") from None
            # A killed rank is seen at once (its sockets close): saying "waited 600 s" would send the
            # user after a stall that never happened.
            raise StalledRanks(f"rank {rank()} of {world_size()} lost {_peers(world_size(), rank())} at {_where} after "
                               f"{waited:.1f} s{seen}: it died or exited ({_detail(exc)}); its own output, or "
                               "torchrun's summary, says why") from None
    return wrapped


def init() -> tuple[int, int]:
    """Join the process group when launched by torchrun, with a finite timeout; returns (rank, world size).
    A rank that does not join in time, or a start-up that fails, is a :class:`StalledRanks` error."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # torch.distributed.nn.functional takes ``group.WORLD`` as default arguments, read when it is first
        # imported; torch._dynamo imports it, and timm imports torch._dynamo when a model is built. Imported
        # after the group exists, those defaults keep the group alive past destroy_process_group, so its
        # gloo threads run on into interpreter exit, where one still releasing the last collective's
        # tensors dies taking the GIL: "terminate called without an active exception", and torchrun
        # exits 1 although the run finished. Imported now, the defaults are None.
        import torch.distributed.nn  # noqa: F401

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        me, t0 = int(os.environ.get("RANK", "0")), time.monotonic()
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
        except RuntimeError as exc:  # DistStoreError, DistNetworkError (torch's, both RuntimeErrors)
            if _timed_out(exc, time.monotonic() - t0):
                who, which = (_peers(world, me), "it") if world == 2 else ("the other ranks", "one of them")
                raise StalledRanks(f"rank {me} of {world} waited more than {timeout_seconds():g} s for {who} to join "
                                   f"the process group at start-up: {which} stalled, died or never started "
                                   f"({_detail(exc)}); ZOO_DIST_TIMEOUT sets the limit") from None
            raise StalledRanks(f"rank {me} of {world} could not join the process group at start-up: "
                               f"{_peers(world, me)} or torchrun's store went away ({_detail(exc)})") from None
    return rank(), world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


@_collective
def all_reduce_grads(params: list[nn.Parameter]) -> None:
    """Average gradients across ranks (one flat buffer)."""
    if not active():
        return
    grads = mean_all([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
    for p, g in zip(params, grads):
        p.grad = g


@_collective
def mean_all(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's mean over ranks, in one flat all-reduce (copies; the tensors themselves when
    not distributed)."""
    if not active():
        return tensors
    flat = torch.cat([t.detach().flatten() for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    out, i = [], 0
    for t in tensors:
        out.append(flat[i : i + t.numel()].view_as(t).clone())
        i += t.numel()
    return out


@_collective
def sync_buffers(module: nn.Module) -> None:
    """Average floating buffers (BatchNorm running stats) across ranks."""
    if not active():
        return
    for b in module.buffers():
        if b.dtype.is_floating_point:
            dist.all_reduce(b)
            b /= world_size()


@_collective
def sum_tensor(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a (metric-state) tensor across ranks."""
    if not active():
        return t
    out = t.to(device)
    dist.all_reduce(out)
    return out.cpu()


@_collective
def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group once every rank is done (a rank gone by then is a one-line error)."""
    if active():
        at("the end of the run")
        # every rank waits for rank 0's writing (rows, delta_m) before the group is torn down
        barrier()
        dist.destroy_process_group()


def leave() -> None:
    """Leave the process group at once, on the way out of a failed run (no barrier: the other ranks may
    be gone or stalled). Left to interpreter exit, the group's gloo threads can abort the process after
    its one-line error (std::terminate, a C++ exception and its stack from a thread, exit -6)."""
    if active():
        dist.destroy_process_group()
        # the failed collective's frames, kept in reference cycles by its traceback, still hold the
        # group: collected now, its threads are joined here rather than during interpreter exit
        gc.collect()


@_collective
def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. the run directory rank 0 created)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@_collective
def mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over ranks (a copy; ``t`` itself when not distributed)."""
    if not active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def global_value(t: torch.Tensor) -> torch.Tensor:
    """``t`` with the value of its mean over ranks and the gradient of the local ``t``.

    A loss-based strategy that reads it computes the same weights on every rank (the ones of
    the global batch), while the backward still runs through this rank's graph; the gradient
    all-reduce then averages the local gradients into the global one.
    """
    if not active():
        return t
    return t + (mean(t) - t.detach())
