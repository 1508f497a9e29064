"""The training loop: plain functions read top to bottom (torchvision reference style).

``fit`` builds everything from a :class:`RunConfig` (``zoo.setup``), then alternates
``train_one_epoch`` and ``evaluate``, keeps the best checkpoint on the validation ``monitor``
metric, stops early when it stalls, and finally scores the best weights on the test split.
It returns the trained model and its setup with the numbers, so callers (figures, tables)
never rebuild them.
"""
from __future__ import annotations

import itertools
import math
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from zoo import distributed as dist
from zoo.checkpoint import load_checkpoint, save_checkpoint
from zoo.config import RunConfig
from zoo.data.partial import labelled
from zoo.evaluate import autocast, evaluate, evaluate_checkpoint
from zoo.model import MultiTaskModel
from zoo.rundir import check_resumable, hold
from zoo.tblog import TensorBoardLog
from zoo.setup import HeadPlan, Setup, make_loaders, seed_everything, select_device, set_epoch, setup, streams, to_device

__all__ = ["RunConfig", "RunResult", "evaluate", "evaluate_checkpoint", "fit", "make_loaders", "select_device",
           "setup", "train_one_epoch"]


@dataclass
class RunResult:
    """What one run produced, with the trained model (best weights on validation) and its setup."""

    config: RunConfig
    test: dict[str, float]
    val: dict[str, float]
    info: dict[str, Any]
    epochs: int
    best_epoch: int
    train_seconds: float
    train_samples: int
    parameters: int
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    setup: Setup | None = field(default=None, repr=False)

    @property
    def model(self) -> MultiTaskModel | None:
        return self.setup.model if self.setup is not None else None


# ----------------------------------------------------------------------------- loops
def train_one_epoch(model: MultiTaskModel, weighting, loaders: dict[str, DataLoader], plans: list[HeadPlan],
                    optimizer: torch.optim.Optimizer, scheduler, scaler, device: torch.device, cfg: RunConfig,
                    progress: Progress | None = None) -> tuple[dict[str, float], int]:
    """One pass over the longest stream (shorter streams cycle). Returns mean losses and samples seen."""
    model.train()
    by_stream = streams(plans)
    steps = max(len(loaders[s]) for s in by_stream)
    iters = {s: (iter(loaders[s]) if len(loaders[s]) == steps else itertools.cycle(loaders[s])) for s in by_stream}
    shared = [p for p in model.encoder.parameters() if p.requires_grad]
    task_params = [p for p in model.heads.parameters() if p.requires_grad]
    # the weighting's own learnable parameters (uncertainty, IMTL-L) are averaged over ranks too
    params = [p for p in list(model.parameters()) + list(weighting.parameters()) if p.requires_grad]
    sums = {p.name: 0.0 for p in plans}
    sums["total"] = 0.0
    seen = 0
    bar = progress.add_task("train", total=steps, loss=float("nan")) if progress else None
    scale = scaler.scale if scaler is not None else (lambda t: t)
    for _ in range(steps):
        batches = {stream: to_device(next(iters[stream]), device, cfg.channels_last) for stream in by_stream}
        with autocast(device, cfg.amp):
            losses = step_losses(model, batches, by_stream)
        seen += sum(len(b["image"]) for b in batches.values())
        optimizer.zero_grad(set_to_none=True)
        total = weighting.backward(losses, shared, scale, task_params=task_params)
        dist.all_reduce_grads(params)
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {float(total)}; try a lower --lr (now {cfg.lr})")
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if weighting.wants_losses_after_step:
            weighting.after_step(_losses_after_step(model, batches, by_stream, device, cfg))
        if scheduler is not None and cfg.schedule in ("onecycle", "cosine"):
            scheduler.step()
        for name, l in losses.items():
            sums[name] += float(l.detach())
        sums["total"] += float(total)
        if progress is not None:
            progress.update(bar, advance=1, loss=float(total))
    if progress is not None:
        progress.remove_task(bar)
    return {k: v / steps for k, v in sums.items()}, seen * dist.world_size()


def step_losses(model: MultiTaskModel, batches: dict[str, dict], by_stream: dict[str, list[HeadPlan]]
                ) -> dict[str, torch.Tensor]:
    """Each head's loss on its stream's batch.

    A sample whose target for a head is missing (``batch["valid"][target]`` False: partial
    labels) is left out of that head's loss; a batch with no labelled sample gives the head a
    zero loss (no gradient) rather than a NaN.
    """
    losses = {}
    for stream, heads in by_stream.items():
        batch = batches[stream]
        out = model(batch["image"], heads=[h.name for h in heads])
        for h in heads:
            keep = labelled(batch, (h.target,))
            if keep is None:
                losses[h.name] = h.loss(out[h.name], batch[h.target])
            elif bool(keep.any()):
                losses[h.name] = h.loss(out[h.name][keep], batch[h.target][keep])
            else:
                losses[h.name] = out[h.name].sum() * 0.0
    return losses


@torch.no_grad()
def _losses_after_step(model, batches, by_stream, device, cfg) -> dict[str, torch.Tensor]:
    """The step's losses on the same batches after the update (FAMO), leaving BatchNorm's running
    statistics as they were (this forward is a measurement, not a training step)."""
    saved = [b.clone() for b in model.buffers()]
    with autocast(device, cfg.amp):
        losses = step_losses(model, batches, by_stream)
    for b, s in zip(model.buffers(), saved):
        b.copy_(s)
    return {k: v.float() for k, v in losses.items()}


# ----------------------------------------------------------------------------- fit
def _scheduler(optimizer, cfg: RunConfig, steps_per_epoch: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.3, patience=2)
    return None


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class _State:
    """What a checkpoint carries between epochs (and across a resume)."""

    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    samples: int = 0


class Trainer:
    """The objects one run trains with, and its checkpoint files (rank 0 writes them)."""

    def __init__(self, cfg: RunConfig, s: Setup, run_dir: Path | None) -> None:
        self.cfg, self.s, self.run_dir = cfg, s, run_dir
        self.train_loaders = make_loaders(s.data.train, cfg, train=True)
        self.val_loaders = make_loaders(s.data.val, cfg, train=False)
        steps = max(len(self.train_loaders[h.stream]) for h in s.plans)
        self.optimizer = torch.optim.AdamW(list(s.model.parameters()) + list(s.weighting.parameters()), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = _scheduler(self.optimizer, cfg, steps)
        use_scaler = cfg.amp and s.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.state = _State()
        self.best_weights: dict[str, torch.Tensor] | None = None

    def resume(self, path: str | Path) -> None:
        saved = load_checkpoint(path)
        if "optimizer" not in saved:
            raise ValueError(f"checkpoint {path} holds the trained model only (a best.pt), not the optimizer state "
                             "training needs; resume from the run's last.pt")
        check_resumable(RunConfig.from_dict(saved["config"]), self.cfg, path)
        self.s.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.s.weighting.load_state_dict(saved["weighting"])
        if self.scheduler is not None and saved.get("scheduler"):
            self.scheduler.load_state_dict(saved["scheduler"])
        self.state = _State(saved["epoch"], saved["best"], saved["best_epoch"], saved["stale"], list(saved["history"]),
                            saved["train_seconds"], saved["samples"])

    def save(self, name: str, resumable: bool = True) -> None:
        """``last.pt`` is resumable (optimizer and scheduler state); ``best.pt`` is the trained model
        only, a third of the size with AdamW (its two moments are each as big as the weights)."""
        if self.run_dir is None or not dist.is_main():
            return
        st = self.state
        state = {"model": self.s.model.state_dict(), "weighting": self.s.weighting.state_dict(), "epoch": st.epoch,
                 "best": st.best, "best_epoch": st.best_epoch, "stale": st.stale, "history": st.history,
                 "train_seconds": st.train_seconds, "samples": st.samples, "config": self.cfg.to_dict(),
                 "info": self.s.data.info}
        if resumable:
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict() if self.scheduler is not None else None
        save_checkpoint(self.run_dir / name, state)

    def epoch(self, epoch: int, progress: Progress | None) -> tuple[dict[str, Any], bool]:
        """Train one epoch, validate, keep the best checkpoint; returns the history row and whether it improved."""
        s, st, cfg = self.s, self.state, self.cfg
        seed_everything(cfg.seed * 1000 + epoch)
        set_epoch(self.train_loaders, epoch, cfg.seed)
        t0 = time.perf_counter()
        losses, n = train_one_epoch(s.model, s.weighting, self.train_loaders, s.plans, self.optimizer, self.scheduler,
                                    self.scaler, s.device, cfg, progress)
        if s.device.type == "cuda":
            torch.cuda.synchronize()
        st.train_seconds += time.perf_counter() - t0
        st.samples += n
        s.weighting.epoch_end({k: v for k, v in losses.items() if k != "total"})
        dist.sync_buffers(s.model)
        val = evaluate(s.model, self.val_loaders, s.plans, s.metrics, s.metric_streams, s.device, cfg)
        score = sum(val[m] for m in s.task.monitor) / len(s.task.monitor)
        if self.scheduler is not None and cfg.schedule == "plateau":
            self.scheduler.step(score)
        # NaN (e.g. no foreground class in a tiny validation split) never beats a number, but
        # the first epoch always gives a best checkpoint.
        improved = st.best_epoch == 0 or score > st.best or (math.isnan(st.best) and not math.isnan(score))
        st.epoch = epoch
        if improved:
            st.best, st.best_epoch, st.stale = score, epoch, 0
        else:
            st.stale += 1
        row = {"epoch": epoch, "train_loss": losses["total"], "losses": losses, "val": val,
               "weights": s.weighting.weights(), "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": st.train_seconds}
        st.history.append(row)
        if improved:
            self.save("best.pt", resumable=False)
            if self.run_dir is None:
                self.best_weights = {k: v.detach().clone() for k, v in s.model.state_dict().items()}
        self.save("last.pt")
        return row, improved

    def load_best(self) -> None:
        """The best weights on validation (never the test set) are the ones scored on test."""
        dist.barrier()
        if self.run_dir is not None and (self.run_dir / "best.pt").is_file():
            self.s.model.load_state_dict(load_checkpoint(self.run_dir / "best.pt")["model"])
        elif self.best_weights is not None:
            self.s.model.load_state_dict(self.best_weights)


def _progress(console: Console, show: bool) -> Progress | None:
    if not (show and dist.is_main()):
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=console, transient=True)


def _log_line(cfg: RunConfig, row: dict[str, Any], improved: bool) -> str:
    vals = " ".join(f"{k}={v:.2f}" for k, v in row["val"].items())
    ws = " ".join(f"{k}={v:.3g}" for k, v in row["weights"].items())
    return (f"epoch {row['epoch']}/{cfg.epochs}  train_loss={row['train_loss']:.4f}  val: {vals}  weights: {ws}  "
            f"lr={row['lr']:.2e}  {'*' if improved else ''}")


def fit(cfg: RunConfig, out_dir: str | Path | None = None, resume: str | Path | None = None,
        console: Console | None = None, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
        show_progress: bool = True) -> RunResult:
    """Train ``cfg``. With ``out_dir`` (a run directory of its own) ``last.pt``, ``best.pt`` and
    ``log.txt`` go there; ``resume`` continues from a ``last.pt`` of the same run."""
    console = console or Console(stderr=True, soft_wrap=True)
    run_dir = Path(out_dir) if out_dir is not None else None
    if cfg.tensorboard and run_dir is None:
        raise ValueError("tensorboard logs go into the run's folder: give fit an out_dir")
    with ExitStack() as held:
        if run_dir is not None and dist.is_main():
            if resume is None and any((run_dir / f).exists() for f in ("best.pt", "last.pt")):
                raise ValueError(f"{run_dir} already holds another run's checkpoints; give a new folder, or continue "
                                 f"that run with resume={run_dir / 'last.pt'}")
            run_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(hold(run_dir))  # until the run is scored: a grid never resumes a live run
        return _fit(cfg, run_dir, resume, console, on_epoch_end, show_progress)


def _fit(cfg: RunConfig, run_dir: Path | None, resume: str | Path | None, console: Console,
         on_epoch_end: Callable[[int, dict[str, Any]], None] | None, show_progress: bool) -> RunResult:
    s = setup(cfg)
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)  # the row's peak memory is this run's
    t = Trainer(cfg, s, run_dir)
    if resume is not None:
        t.resume(resume)
        console.print(f"resumed from {resume} at epoch {t.state.epoch}")
    log = open(run_dir / "log.txt", "a") if run_dir is not None and dist.is_main() else None
    tb = TensorBoardLog(run_dir) if cfg.tensorboard and run_dir is not None and dist.is_main() else None
    progress = _progress(console, show_progress)
    try:
        with progress or nullcontext():
            # a run resumed after its early stop trains no further
            stopped = resume is not None and cfg.patience and t.state.stale >= cfg.patience
            for epoch in range(t.state.epoch + 1, 1 if stopped else cfg.epochs + 1):
                row, improved = t.epoch(epoch, progress)
                if dist.is_main():
                    console.print(line := _log_line(cfg, row, improved))
                    if log is not None:
                        log.write(line + "\n")
                        log.flush()
                    if tb is not None:
                        tb.epoch(row)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, row)
                if cfg.patience and t.state.stale >= cfg.patience:
                    if dist.is_main():
                        console.print(f"early stop: {'+'.join(s.task.monitor)} did not improve for {cfg.patience} epochs")
                    break
    finally:
        if log is not None:
            log.close()
        if tb is not None:
            tb.close()
    t.load_best()
    test = evaluate(s.model, make_loaders(s.data.test, cfg, train=False), s.plans, s.metrics, s.metric_streams,
                    s.device, cfg)
    st = t.state
    val_best = st.history[st.best_epoch - 1]["val"] if st.best_epoch and st.best_epoch <= len(st.history) else {}
    return RunResult(cfg, test, val_best, dict(s.data.info), st.epoch, st.best_epoch, st.train_seconds, st.samples,
                     count_parameters(s.model), str(s.device), st.history, s.weighting.weights(), run_dir, s)
