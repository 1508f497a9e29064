"""``python -m zoo.bench``: train, evaluate and tabulate encoder x task (x weighting) combinations.

    python -m zoo.bench --task circlization --encoder scratch
    python -m zoo.bench --task all --encoder all --quick
    python -m zoo.bench --list
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zoo.core import distributed as dist
from zoo.core.architectures import DEFAULT_ARCHITECTURE
from zoo.engine.build import load_registry, task_spec
from zoo.engine.config import RunConfig, add_run_options, budget_fingerprint, budget_mode, is_smoke, run_config
from zoo.runs import gain as gains
from zoo.runs import slurm
from zoo.runs.gain import add_gain
from zoo.runs.grid import run_grid
from zoo.runs.identity import RunIdentity, launched_world
from zoo.runs.job import Job
from zoo.runs.plan import budget_of, plan_jobs
from zoo.core.cli import run_main
from zoo.core.registry import Registry, RegistryError
from zoo.runs.keys import row_key
from zoo.runs.results import load_rows, locked, machine, print_table, write_results, write_rows
from zoo.core.files import check_writable
from zoo.runs.rundir import new_run_dir, remove_if_empty, resumable_runs, training_done, unfinished_run
from zoo.engine.loaders import eval_batch_size
from zoo.use.speed import peak_memory_mb, speed_columns
from zoo.engine.tblog import log_figure
from zoo.engine.train import RunResult, fit

DEFAULT_OUT = Path("runs")
HEADER = ("zoo benchmark results. Metrics are percentages on the test split; the best checkpoint on validation is "
          "the one scored.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print the registered encoders, heads, tasks and more, then exit")
    p.add_argument("--task", default=None, help="task name, comma-separated names, or 'all'")
    p.add_argument("--encoder", default="scratch", help="encoder name (or timm:<name>), comma-separated names, or 'all'")
    p.add_argument("--weighting", default="fixed", help="loss weighting strategy, comma-separated names, or 'all'")
    p.add_argument("--architecture", default=DEFAULT_ARCHITECTURE,
                   help="how the heads share the encoder (hard_sharing, mtan, cgc, mmoe; see --list), comma-separated "
                        "names, or 'all'")
    p.add_argument("--decoder", default=None,
                   help="the decoder of every dense head (unet, fpn, deeplabv3plus, ...; see --list), comma-separated "
                        "names, or 'all' (those that can read the encoder); default: each head's own (unet)")
    add_run_options(p)
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help=f"results folder (default {DEFAULT_OUT}/; committed tables use --out benchmarks/results/...)")
    p.add_argument("--quick", action="store_true", help="smoke run: each task's 'quick' budget (over its default one)")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue an interrupted run from its last.pt")
    p.add_argument("--no-figures", action="store_true", help="skip the prediction figures")
    p.add_argument("--no-speed", action="store_true", help="skip the speed columns (GFLOPs, inference images/s)")
    p.add_argument("--no-baselines", action="store_true",
                   help="do not train missing single-task baselines for delta_m (use what --out already has)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="grids: run N combinations at once (each in its own subprocess; one GPU holds several)")
    p.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                   help="grids: stop a combination after this long and record it as a timeout row")
    slurm.add_options(p)
    # one run of a grid, as the local launcher writes it (zoo.runs.job): not a user's flag
    p.add_argument("--job", default=None, metavar="FILE", help=argparse.SUPPRESS)
    return p


def config_for(task: str, encoder: str = "scratch", quick: bool = False,
               registry_files: Sequence[str | Path] | None = None, **overrides: Any) -> RunConfig:
    """The config ``python -m zoo.bench --task TASK --encoder ENCODER [--quick] [--registry FILE]`` trains, built
    by the same code (the task's budget, the encoder's own settings over it), then ``overrides``: a field's
    value replaces it, and a settings mapping is laid over the budget's, as ``--encoder-arg`` is."""
    argv = ["--task", task, "--encoder", encoder, *(["--quick"] if quick else [])]
    for f in registry_files or ():
        argv += ["--registry", str(f)]
    args = parse_args(argv)
    spec = task_spec(task, load_registry(args.registry))
    cfg = run_config(args, task, encoder, args.weighting, budget_of(spec, quick, encoder), args.architecture)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown RunConfig field(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(cfg, **{k: {**getattr(cfg, k), **v} if isinstance(v, dict) and isinstance(
        getattr(cfg, k), dict) else v for k, v in overrides.items()})


def result_row(r: RunResult, heads: list[str], command: str, mode: str) -> dict[str, Any]:
    cfg = r.config
    named = RunIdentity.of(cfg, mode).named()  # the architecture and decoder, where the row names them
    row: dict[str, Any] = {
        "task": cfg.task, "encoder": cfg.encoder, "weighting": cfg.weighting, **named,
        "heads": "+".join(heads),
        "parameters": r.parameters, "epochs": r.epochs, "best_epoch": r.best_epoch,
        "train_seconds": round(r.train_seconds, 1),
        "train_samples_per_s": round(r.train_samples / r.train_seconds, 1) if r.train_seconds else float("nan"),
    }
    row.update({k: round(v, 4) for k, v in r.test.items()})
    row.update(r.info)
    row.update({"budget_mode": mode, "device": r.device, "machine": machine(), "torch": torch.__version__,
                "seed": cfg.seed, "run_dir": str(r.run_dir) if r.run_dir else "", "command": command})
    if launched_world():
        row.update(world_size=launched_world(), global_batch_size=cfg.batch_size * launched_world())
    return row


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces this run, torchrun's launch included."""
    args = " ".join(shlex.quote(a) for a in argv)
    if not launched_world():
        return f"python -m zoo.bench {args}"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", launched_world()))
    nodes = f" --nnodes {launched_world() // local}" if launched_world() > local else ""
    return f"torchrun{nodes} --nproc_per_node {local} -m zoo.bench {args}"


def list_registry(registry: Registry, console: Console) -> None:
    """Rich tables of everything registered: name, where it comes from, key settings."""
    for kind in ("encoders", "heads", "decoders", "architectures", "tasks", "losses", "metrics", "weightings"):
        table = Table(title=kind)
        for col in ("name", "from", "settings"):  # folded, never cut: every name readable at 80 columns
            table.add_column(col, style="bold" if col == "name" else None, overflow="fold")
        for e in registry.entries(kind):
            settings = dict(e.settings)
            if kind == "tasks":
                heads = ", ".join(f"{n}:{h.get('head')}({h.get('loss', '')} x{h.get('weight', 1)})"
                                  for n, h in (e.spec.get("heads") or {}).items())
                # the description first: it says which tasks need your own data (--data-root)
                settings = {**({"description": e.spec["description"]} if e.spec.get("description") else {}),
                            "heads": heads, "metrics": ", ".join(e.spec.get("metrics") or {}),
                            "budget": e.spec.get("budget", {})}
            for key in ("paper", "description"):
                if e.spec.get(key) and kind != "tasks":
                    settings[key] = e.spec[key]
            name = f"{e.name}:<name>" if e.spec.get("prefix") else e.name
            table.add_row(name, e.source, ", ".join(f"{k}={v}" for k, v in settings.items()))
        console.print(table)


def interrupted_twin(out: Path, cfg: RunConfig, mode: str) -> tuple[Path, int] | None:
    """The newest interrupted run of ``cfg`` in ``out`` (resumable, its training not done) and its
    last epoch, or None.

    A grid continues such a run by itself; a single run starts a new folder beside it, which a user
    rerunning the same command after an interruption may not expect, so ``run_job`` names it."""
    try:
        for ckpt, saved in resumable_runs(out, cfg, mode):
            if not training_done(saved, cfg):
                return ckpt, int(saved["epoch"])
    except (OSError, ValueError, KeyError):  # advice only: a folder vanishing or unreadable never stops the run
        pass
    return None


def _doing(err: Console, job: Job, what: str) -> Any:
    """A spinner naming the step after training that takes a while (none with --quiet, or off rank 0)."""
    return err.status(what) if not job.quiet and dist.is_main() else contextlib.nullcontext()


def run_job(job: Job, registry: Registry, err: Console, write: bool = True) -> dict[str, Any]:
    """Train one combination in its own run directory, draw its figure and return its row; ``write``: merge the
    row into ``job.out`` (under the folder's lock), as a run on this machine does (a Slurm job leaves that to
    the process that submitted it, the one writer of its results)."""
    spec, cfg, mode, out, resume = job.spec, job.cfg, job.mode, Path(job.out), job.resume
    twin = interrupted_twin(out, cfg, mode) if dist.is_main() and not resume else None
    if twin is not None:
        err.print(f"[yellow]note:[/] {escape(str(twin[0].parent))} holds an interrupted run of {escape(job.label)} "
                  f"(epoch {twin[1]} of {cfg.epochs}); this command starts a new run beside it. To continue that "
                  f"one instead, rerun this job alone with --resume {escape(str(twin[0]))}")
    run_dir = Path(resume).parent if resume else new_run_dir(out, cfg, mode)
    if dist.is_main():
        err.rule(job.label)  # the folder on its own line: a rule would cut a long path at 80 columns
        err.print(f"run folder: {escape(str(run_dir))}", soft_wrap=True)
    t0 = time.perf_counter()
    halved = []
    while True:
        try:
            result = fit(cfg, out_dir=run_dir, resume=resume, console=err, show_progress=not job.quiet,
                         registry=registry, spec=spec, smoke=is_smoke(mode))
            break
        except torch.cuda.OutOfMemoryError:
            # a CUDA out-of-memory halves the batch and starts again (one process, no resume to mix)
            if cfg.batch_size == 1 or resume or dist.world_size() > 1:
                raise
            halved.append(cfg.batch_size)
            cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size // 2)
            torch.cuda.empty_cache()
            remove_if_empty(run_dir)
            if run_dir.exists():  # it holds checkpoints of the larger batch: fit never trains over a run
                err.print(f"[yellow]note:[/] {escape(str(run_dir))} keeps the run at batch size {halved[-1]}")
                run_dir = new_run_dir(out, cfg, mode)
            err.print(f"[yellow]CUDA out of memory[/]: retrying with batch size {cfg.batch_size} in {escape(str(run_dir))}")
        except BaseException:
            if dist.is_main() and not resume:
                remove_if_empty(run_dir)
            raise
    row = result_row(result, [h.name for h in result.setup.task.heads], job.command, mode)
    row["budget_hash"] = budget_fingerprint(job.cfg)  # the job's, before any out-of-memory halving
    if resume:
        row["note"] = (f"resumed from {resume}: wall_seconds is the resumed process's, train_seconds and "
                       "train_samples_per_s count every epoch")
    if halved:
        row["note"] = f"batch size {' -> '.join(map(str, halved + [cfg.batch_size]))} after CUDA out of memory"
    row.update({f"val_{m}": round(result.val.get(m, float("nan")), 4) for m in spec.monitor})
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if job.speed and dist.is_main():  # one process measures: ranks timing at once would slow each other
        with _doing(err, job, "measuring inference speed (GFLOPs, images/s) and memory"):
            row.update(speed_columns(result.model, result.setup.data.test, result.setup.plans, result.setup.device,
                                     eval_batch_size(cfg.batch_size), speed_stream=spec.task.speed_stream))
    else:  # the run's own peak is valid even when runs share a machine (timings are not)
        row["peak_memory_mb"] = round(peak_memory_mb(result.setup.device), 1)
    if spec.baselines:
        if job.base_mode != mode:  # its baselines were trained without its strategy/architecture settings
            row["baseline_mode"] = job.base_mode
        add_gain(row, spec.baselines, load_rows(out), spec.lower_is_better, registry)
    if dist.is_main():
        if job.figures:
            from zoo.use.figures import prediction_figure

            with _doing(err, job, "drawing the prediction figure"):
                prediction_figure(result.model, result.setup.data.test, result.setup.plans, run_dir / "figure.png",
                                  result.setup.device)
            if cfg.tensorboard:
                log_figure(run_dir, run_dir / "figure.png", result.epochs)
        if write:
            write_results(out, [row], HEADER)  # after every run: a long grid keeps what finished
    return row


def run_serialised(job: Job, err: Console, write: bool = True, find_resume: bool = False) -> dict[str, Any] | None:
    """Run a serialised job (``zoo.runs.job``) in this process (and the others of its process group): what
    ``--job FILE`` does, and what a Slurm job calls (``write=False``: its row is returned, never written;
    ``find_resume``: continue the newest resumable run of its configuration, as a requeued job must). Returns
    the row on rank 0."""
    registry = load_registry(job.cfg.registry)
    job.spec = task_spec(job.cfg.task, registry, job.cfg.task_settings or None)
    dist.init()
    if find_resume and job.resume is None:
        found = unfinished_run(job.out, job.cfg, job.mode) if dist.is_main() else None
        job.resume = dist.broadcast_object(str(found) if found else None)
    row = run_job(job, registry, err, write)
    main_rank = dist.is_main()
    dist.shutdown()
    return row if main_rank else None


def refresh_gains(out: Path, registry: Registry) -> list[dict[str, Any]]:
    """``zoo.runs.gain.refresh_gains`` on the folder's rows, under its lock; returns the rows."""
    with locked(out):
        rows, changed = gains.refresh_gains(load_rows(out), registry)
        if changed:
            write_rows(out, rows, HEADER)
    return rows


def run_command(args: argparse.Namespace, console: Console, err: Console, command: str) -> int:
    """What ``python -m zoo.bench`` does with its parsed ``args``: list, run one job, or plan and run a
    grid. Its errors reach ``main``, which reports them."""
    if args.job:  # one run of a grid, as the local launcher hands it over
        run_serialised(Job.read(args.job), err)
        return 0
    registry = load_registry(args.registry)
    if args.list:
        list_registry(registry, console)
        return 0
    if not args.task:
        raise RegistryError(f"--task is required (one of {', '.join(registry.names('tasks'))}, or all); see --list")
    mode = budget_mode(args)
    # the Slurm options are checked before the plan builds anything (the cluster itself after it)
    cluster = slurm.settings(args) if args.launcher == "slurm" else None
    if args.detach and cluster is None:
        raise ValueError("--detach submits a grid to Slurm and exits: give it with --launcher slurm")
    if cluster is not None and (args.jobs != 1 or args.job_timeout is not None):
        raise ValueError("--jobs and --job-timeout are the local grid's; on Slurm, --slurm-parallel N runs N jobs "
                         "at once and --slurm-time limits each (a job that reaches it is requeued, not stopped)")
    if cluster is not None and args.resume:
        raise ValueError("--resume continues one run on this machine; a Slurm grid continues its interrupted runs "
                         "from their last.pt by itself: run the same command again")
    created = not Path(args.out).exists()
    out = check_writable(args.out) if dist.is_main() else Path(args.out)
    try:
        jobs = plan_jobs(args, registry, mode, out, cluster.processes if cluster else None)
    except Exception:
        # refused before any run (a bad setting, no data): leave no empty --out folder behind
        if created and dist.is_main() and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    if args.resume and len(jobs) != 1:
        raise RegistryError("--resume continues one run: give a single --task, --encoder, --weighting and "
                            "--architecture")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be an integer >= 1, got {args.jobs}")
    if args.job_timeout is not None and args.job_timeout <= 0:
        raise ValueError(f"--job-timeout must be > 0 seconds, got {args.job_timeout}")
    if cluster is not None or (len(jobs) > 1 and not launched_world()):
        if cluster is not None:
            slurm.check_cluster(cluster)
            waiting = slurm.run_grid(jobs, out, cluster, HEADER, err, run_serialised, detach=args.detach)
        else:
            run_grid(jobs, out, args.jobs, args.job_timeout, HEADER, err)
            waiting = 0
        keys = {j.key for j in jobs}
        rows = [r for r in refresh_gains(out, registry) if row_key(r) in keys]
        if rows:
            print_table(rows, f"results ({mode} budget)", console)
            console.print(f"-> {out / 'results.md'} (.csv, .json)", soft_wrap=True, markup=False)
        if waiting:
            err.print(f"{waiting} of {len(jobs)} jobs are queued or running on Slurm: run the same command again "
                      "to collect their rows", soft_wrap=True)
        failed = [r for r in rows if r.get("status")]
        return 1 if failed else 0
    dist.init()
    for job in jobs:  # run here: the command typed (torchrun's launch included) is each row's
        job.command = command
    rows = [run_job(job, registry, err) for job in jobs]
    if dist.is_main():
        refresh_gains(out, registry)
        print_table(rows, f"results ({mode} budget)", console)  # a short title: a path would wrap it
        console.print(f"-> {out / 'results.md'} (.csv, .json)", soft_wrap=True, markup=False)
    dist.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # soft_wrap: a message stays one line when stderr is a file (rich wraps at 80 columns off a terminal)
    console, err = Console(), Console(stderr=True, soft_wrap=True)
    command = command_line(sys.argv[1:] if argv is None else argv)
    try:
        # a lost rank (StalledRanks) and a diverged loss (FloatingPointError) are a run's, not a bug
        return run_main(lambda: run_command(args, console, err, command), err, args.out,
                        kept="; files written before are unchanged",
                        smaller="use smaller settings (--batch-size, the encoder's or architecture's sizes)",
                        interrupted="resume with --resume <out>/<run>/last.pt, or run the same grid command again",
                        errors=(FloatingPointError, dist.StalledRanks))
    finally:
        dist.leave()  # a run that failed under torchrun (after a clean end, shutdown has left already)


if __name__ == "__main__":
    sys.exit(main())
