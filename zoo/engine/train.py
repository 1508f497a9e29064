"""The training loop: plain functions read top to bottom (torchvision reference style).

``fit`` builds everything from a :class:`RunConfig` (``zoo.engine.build_run``), then alternates
``train_one_epoch`` and ``evaluate``, keeps the best checkpoint on the validation ``monitor``
metric, stops early when it stalls, and finally scores the best weights on the test split.
It returns the trained model and its setup with the numbers, so callers (figures, tables)
never rebuild them.
"""
from __future__ import annotations

import math
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from zoo.core import distributed as dist
from zoo.engine.checkpoint import check_world_size, hold, load_checkpoint, save_checkpoint
from zoo.engine.config import SCHEDULE_KINDS, RunConfig, check_resumable
from zoo.engine.evaluate import evaluate
from zoo.engine.loaders import set_epoch, to_device
from zoo.engine.step import HeadPlan, autocast, step_losses, streams
from zoo.core.model import MultiTaskModel
from zoo.core.registry import Registry
from zoo.tasks.base import TaskSpec
from zoo.engine.tblog import TensorBoardLog
from zoo.engine.build_run import Setup, seed_everything, setup

if TYPE_CHECKING:  # (annotations only: --list never imports the strategies)
    from zoo.core.weighting import Weighting


@dataclass(kw_only=True)
class RunResult:
    """What one run produced, with the trained model (best weights on validation) and its setup.
    Built by keyword: ten of its fields are numbers or dicts, which a positional call can swap unseen."""

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
#: steps between the progress bar's reads of the loss, and between checks of the non-finite flag:
#: each read waits for the device, so the step loop itself never does
PROGRESS_EVERY = 25
CHECK_EVERY = 200


def _cycle(loader) -> Iterator:
    """A shorter stream starts a new pass (a new order and new augmentation) when it runs out."""
    while True:
        yield from loader


def train_one_epoch(model: MultiTaskModel, plans: list[HeadPlan], weighting: Weighting,
                    optimizer: torch.optim.Optimizer, loaders: dict[str, Any], device: torch.device, cfg: RunConfig,
                    epoch: int = 0, *, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    scaler: torch.amp.GradScaler | None = None, encoder_frozen: bool = False,
                    progress: Progress | None = None) -> tuple[dict[str, float], int]:
    """One pass over the longest stream of ``loaders`` (one per stream; shorter streams start again),
    each step every head of ``plans`` through ``model``, combined by ``weighting``, one ``optimizer``
    step. Returns mean losses and samples seen (all ranks).

    ``cfg`` gives the step's precision and memory format (``amp``, channels_last) and the advice of a
    non-finite loss's error. ``scheduler`` is stepped after every step: give it only for a per-step
    schedule (the caller steps a per-epoch one on the validation score). ``scaler``: float16's loss
    scaling, where bfloat16 is missing. ``encoder_frozen``: the encoder runs in eval mode, so its
    BatchNorm statistics stay as they are (``--freeze-encoder-epochs``; its parameters take no gradient).

    Nothing in the step reads a value back to the host: losses are summed on the device and read
    once at the end, a non-finite loss sets a device flag holding its step (read every
    ``CHECK_EVERY`` steps and at the end), and the progress bar reads the loss every
    ``PROGRESS_EVERY`` steps.
    """
    model.train()
    if encoder_frozen:
        model.encoder.eval()
    by_stream = streams(plans)
    steps = max(len(loaders[k]) for k in by_stream)
    iters = {k: iter(loaders[k]) if len(loaders[k]) == steps else _cycle(loaders[k]) for k in by_stream}
    shared = [p for p in model.shared_parameters() if p.requires_grad]  # the encoder's, the architecture's shared
    task_params = [p for p in model.task_parameters() if p.requires_grad]
    # the weighting's own learnable parameters (uncertainty, IMTL-L) are averaged over ranks too
    params = [p for p in list(model.parameters()) + list(weighting.parameters()) if p.requires_grad]
    names = [p.name for p in plans]
    sums = torch.zeros(len(names) + 1, device=device)
    bad = torch.full((), -1, dtype=torch.long, device=device)  # the first step whose loss was not finite
    seen = 0
    bar = progress.add_task("train", total=steps, loss="-") if progress else None  # no loss before the first step
    from zoo.core.weighting import identity  # (here: --list never imports the strategies)

    scale = scaler.scale if scaler is not None else identity
    channels_last = cfg.uses_channels_last(device)
    for step in range(steps):
        dist.at(f"epoch {epoch}, step {step + 1} of {steps}")  # named if a collective times out
        batches = {k: to_device(next(iters[k]), device, channels_last) for k in by_stream}
        with autocast(device, cfg.amp):
            losses = step_losses(model, batches, by_stream)
        seen += sum(len(b["image"]) for b in batches.values())
        optimizer.zero_grad(set_to_none=True)
        total = weighting.backward(losses, shared, scale, task_params=task_params)
        dist.all_reduce_grads(params)
        values = torch.stack([losses[n].detach().float() for n in names] + [total.detach().float()])
        bad = torch.where((bad < 0) & ~torch.isfinite(values).all(), step, bad)
        sums += values
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if weighting.wants_losses_after_step:
            weighting.after_step(_losses_after_step(model, batches, by_stream, device, cfg))
        if scheduler is not None:
            scheduler.step()
        if (step + 1) % CHECK_EVERY == 0:
            _check_finite(bad, names, epoch, cfg)
        if progress is not None and ((step + 1) % PROGRESS_EVERY == 0 or step + 1 == steps):
            progress.update(bar, completed=step + 1, loss=f"{float(total):.4f}")
    _check_finite(bad, names, epoch, cfg)
    if progress is not None:
        progress.remove_task(bar)
    mean = (sums / steps).tolist()
    return {**dict(zip(names, mean[:-1])), "total": mean[-1]}, seen * dist.world_size()


def _check_finite(bad: torch.Tensor, names: list[str], epoch: int, cfg: RunConfig) -> None:
    step = int(bad)
    if step >= 0:
        raise FloatingPointError(f"a loss ({', '.join(names)} or their total) became NaN or inf at step {step + 1} of "
                                 f"epoch {epoch}; try a lower --lr (now {cfg.lr})")


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
def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_optimizer(model: MultiTaskModel, weighting: Weighting, cfg: RunConfig,
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW over the model's and the weighting's parameters: the encoder one group (its learning rate
    scaled by ``--encoder-lr-scale``), heads, the architecture's modules and the weighting the other."""
    # fused on CUDA: one kernel for the whole update instead of a few per parameter
    fused = {"fused": True} if device.type == "cuda" else {}
    encoder = {id(p) for p in model.encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder] + list(weighting.parameters())
    groups = [{"params": list(model.encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_scale},
              {"params": rest, "lr": cfg.lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def build_scaler(cfg: RunConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """float16's loss scaler: mixed precision on a CUDA device without bfloat16 (bfloat16 needs none)."""
    use_scaler = cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda") if use_scaler else None


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

    def to_checkpoint(self) -> dict[str, Any]:
        """The fields by name, as a checkpoint stores them next to the weights."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> "_State":
        """The state a checkpoint stored, field by field under the same names (the keys every resumable
        checkpoint has carried: the field names are the checkpoint's format, so renaming one breaks resume)."""
        state = cls(**{f.name: saved[f.name] for f in fields(cls)})
        state.history = list(state.history)  # appended to by the resumed run: not the loaded list
        return state


class Trainer:
    """The objects one run trains with, and its checkpoint files (rank 0 writes them)."""

    def __init__(self, cfg: RunConfig, s: Setup, run_dir: Path | None) -> None:
        self.cfg, self.s, self.run_dir = cfg, s, run_dir
        self.train_loaders = s.loaders("train")
        steps = self.steps_per_epoch = max(len(self.train_loaders[h.stream]) for h in s.plans)
        self.optimizer = build_optimizer(s.model, s.weighting, cfg, s.device)
        self.encoder_frozen = False
        kind = SCHEDULE_KINDS[cfg.schedule]
        self.scheduler = kind.build(self.optimizer, cfg, steps) if kind is not None else None
        self.scaler = build_scaler(cfg, s.device)
        self.state = _State()
        self.best_weights: dict[str, torch.Tensor] | None = None

    def resume(self, path: str | Path, saved: dict[str, Any] | None = None) -> None:
        saved = saved if saved is not None else load_checkpoint(path)
        if "optimizer" not in saved:
            raise ValueError(f"checkpoint {path} holds the trained model only (a best.pt), not the optimizer state "
                             "training needs; resume from the run's last.pt")
        check_resumable(RunConfig.from_dict(saved["config"]), self.cfg, path)
        check_world_size(saved, path, dist.world_size())
        if self.scheduler is not None and saved.get("scheduler"):
            self._check_schedule_length(saved["scheduler"], path)
        self.s.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.s.weighting.load_state_dict(saved["weighting"])
        if self.scheduler is not None and saved.get("scheduler"):
            self.scheduler.load_state_dict(saved["scheduler"])
        self.state = _State.from_checkpoint(saved)

    def _check_schedule_length(self, saved: dict[str, Any], path: str | Path) -> None:
        """The saved per-step schedule must be as long as this run's: loaded over it, a shorter one is
        stepped past its end epochs later ("Tried to step N times"). Catches what a checkpoint without
        ``world_size`` cannot say: another number of processes, or a data folder of another size."""
        keys = ("total_steps", "T_max")  # OneCycleLR's, CosineAnnealingLR's
        was = {k: v for k, v in saved.items() if k in keys}
        now = {k: v for k, v in self.scheduler.state_dict().items() if k in was}
        if was != now:
            raise ValueError(f"checkpoint {path} has a learning-rate schedule of {', '.join(map(str, was.values()))} "
                             f"steps and this run {', '.join(map(str, now.values()))} (epochs x steps per epoch): it "
                             "was trained with another number of processes (torchrun) or on a data folder of another "
                             "size; resume it as it was started, or start a new run without --resume")

    def save(self, name: str, resumable: bool = True) -> None:
        """``last.pt`` is resumable (optimizer and scheduler state); ``best.pt`` is the trained model
        only, a third of the size with AdamW (its two moments are each as big as the weights)."""
        if self.run_dir is None or not dist.is_main():
            return
        state = {"model": self.s.model.state_dict(), "weighting": self.s.weighting.state_dict(),
                 **self.state.to_checkpoint(), "config": self.cfg.to_dict(), "info": self.s.model.record.info,
                 "world_size": dist.world_size()}  # info: the record's, which loading reads
        if resumable:
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict() if self.scheduler is not None else None
        save_checkpoint(self.run_dir / name, state)

    def epoch(self, epoch: int, progress: Progress | None) -> tuple[dict[str, Any], bool]:
        """Train one epoch, validate, keep the best checkpoint; returns the history row and whether it improved."""
        s, st, cfg = self.s, self.state, self.cfg
        self.freeze_encoder(epoch <= cfg.freeze_encoder_epochs)
        seed_everything(cfg.seed * 1000 + epoch)
        set_epoch(self.train_loaders, epoch, cfg.seed)
        t0 = time.perf_counter()
        per_step = self.scheduler if self.scheduler is not None and SCHEDULE_KINDS[cfg.schedule].per_step else None
        losses, n = train_one_epoch(s.model, s.plans, s.weighting, self.optimizer, self.train_loaders, s.device, cfg,
                                    epoch, scheduler=per_step, scaler=self.scaler, encoder_frozen=self.encoder_frozen,
                                    progress=progress)
        if s.device.type == "cuda":
            torch.cuda.synchronize()
        st.train_seconds += time.perf_counter() - t0
        st.samples += n
        s.weighting.epoch_end({k: v for k, v in losses.items() if k != "total"})
        dist.sync_buffers(s.model)
        val = evaluate(s, "val")
        score = sum(val[m] for m in s.task.monitor) / len(s.task.monitor)
        if self.scheduler is not None and not SCHEDULE_KINDS[cfg.schedule].per_step:
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
               "weights": s.weighting.weights(), "lr": self.optimizer.param_groups[-1]["lr"],
               "seconds": st.train_seconds}
        st.history.append(row)
        if improved:
            self.save("best.pt", resumable=False)
            if self.run_dir is None:
                self.best_weights = {k: v.detach().clone() for k, v in s.model.state_dict().items()}
        self.save("last.pt")
        return row, improved

    def freeze_encoder(self, frozen: bool) -> None:
        """Frozen: the encoder gets no gradient and keeps its BatchNorm statistics (it runs in eval mode
        inside training steps); the heads train as usual, every strategy over the heads alone."""
        self.encoder_frozen = frozen
        for p in self.s.model.encoder.parameters():
            p.requires_grad_(not frozen)

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
                    TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console, transient=True)


def _log_line(cfg: RunConfig, row: dict[str, Any], improved: bool) -> str:
    vals = " ".join(f"{k}={v:.2f}" for k, v in row["val"].items())
    ws = " ".join(f"{k}={v:.3g}" for k, v in row["weights"].items())
    return (f"epoch {row['epoch']}/{cfg.epochs}  train_loss={row['train_loss']:.4f}  val: {vals}  weights: {ws}  "
            f"lr={row['lr']:.2e}  {'*' if improved else ''}")


# Fewer optimizer steps than this and a model has barely moved from its initialisation: the run says so
MIN_STEPS = 50


def few_steps_note(cfg: RunConfig, steps_per_epoch: int, smoke: bool = False) -> str | None:
    """What to tell the user before a run of fewer than :data:`MIN_STEPS` optimizer steps (``None``: enough).
    A smoke run (``--quick``) is short on purpose: it is told that its numbers are not a result."""
    total = steps_per_epoch * cfg.epochs
    if total >= MIN_STEPS:
        return None
    how = f"{total} optimizer step(s) ({steps_per_epoch} per epoch x {cfg.epochs} epoch(s) at batch size {cfg.batch_size})"
    if smoke:
        return (f"smoke-sized run (--quick): {how}; it checks that the pipeline runs, and its metrics are not what "
                "the model reaches (run without --quick for that)")
    return (f"this run takes only {how}; a model learns little in fewer than about {MIN_STEPS}: give --epochs "
            f"{math.ceil(MIN_STEPS / steps_per_epoch)}, or a smaller --batch-size (each halving doubles the steps "
            "per epoch)")


def fit(cfg: RunConfig, out_dir: str | Path | None = None, resume: str | Path | None = None,
        console: Console | None = None, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
        show_progress: bool = True, registry: Registry | None = None, spec: TaskSpec | None = None,
        smoke: bool = False) -> RunResult:
    """Train ``cfg``. With ``out_dir`` (a run directory of its own) ``last.pt``, ``best.pt`` and
    ``log.txt`` go there; ``resume`` continues from a ``last.pt`` of the same run. ``registry`` and
    ``spec``: the caller's, built once (see ``setup``). ``smoke``: a deliberately short run (``--quick``),
    which is told so instead of being warned about its few steps."""
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
        return _fit(cfg, run_dir, resume, console, on_epoch_end, show_progress, registry, spec, smoke)


def _fit(cfg: RunConfig, run_dir: Path | None, resume: str | Path | None, console: Console,
         on_epoch_end: Callable[[int, dict[str, Any]], None] | None, show_progress: bool,
         registry: Registry | None, spec: TaskSpec | None, smoke: bool = False) -> RunResult:
    saved = load_checkpoint(resume) if resume is not None else None  # read once: setup builds for its weights
    s = setup(cfg, saved.get("model") if saved is not None else None, registry, spec)
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)  # the row's peak memory is this run's
    t = Trainer(cfg, s, run_dir)
    if resume is not None:
        t.resume(resume, saved)
        console.print(f"resumed from {resume} at epoch {t.state.epoch}")
    elif dist.is_main() and (note := few_steps_note(cfg, t.steps_per_epoch, smoke)):
        console.print(f"[yellow]{'note' if smoke else 'warning'}:[/] {escape(note)}")
    log = open(run_dir / "log.txt", "a") if run_dir is not None and dist.is_main() else None
    tb = TensorBoardLog(run_dir) if cfg.tensorboard and run_dir is not None and dist.is_main() else None
    progress = _progress(console, show_progress)
    try:
        with progress or nullcontext():
            # a run resumed after its early stop trains no further
            stopped = resume is not None and cfg.patience and t.state.stale >= cfg.patience
            for epoch in range(t.state.epoch + 1, 1 if stopped else cfg.epochs + 1):
                row, improved = t.epoch(epoch, progress)
                nan = [m for m in s.task.monitor if math.isnan(row["val"][m])]
                if nan and dist.is_main():  # never a silent pick: NaN is not used to choose the checkpoint
                    console.print(f"[yellow]warning:[/] validation {', '.join(nan)} is NaN at epoch {epoch} (no sample "
                                  "the metric can score?); a NaN epoch is never chosen over one with a number")
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
    # scoring a whole test split takes a while on a CPU: say what is happening (a spinner, gone when done)
    scoring = console.status(f"scoring the kept checkpoint (epoch {t.state.best_epoch}) on the test split") \
        if show_progress and dist.is_main() else nullcontext()
    with scoring:
        test = evaluate(s, "test")
    st = t.state
    val_best = st.history[st.best_epoch - 1]["val"] if st.best_epoch and st.best_epoch <= len(st.history) else {}
    return RunResult(config=cfg, test=test, val=val_best, info=dict(s.data.info), epochs=st.epoch,
                     best_epoch=st.best_epoch, train_seconds=st.train_seconds, train_samples=st.samples,
                     parameters=count_parameters(s.model), device=str(s.device), history=st.history,
                     weights=s.weighting.weights(), run_dir=run_dir, setup=s)
