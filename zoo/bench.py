"""``python -m zoo.bench``: train, evaluate and tabulate encoder x task (x weighting) combinations.

    python -m zoo.bench --task circlization --encoder scratch
    python -m zoo.bench --task all --encoder all --quick
    python -m zoo.bench --list
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zoo.core import distributed as dist
from zoo.core.architectures import DEFAULT_ARCHITECTURE
from zoo.engine.build import check_decoders, load_registry, own_decoder, task_spec, with_decoder_of_run
from zoo.engine.config import (STRATEGY_FIELDS, RunConfig, add_run_options, budget_fingerprint, budget_mode,
                               cli_overrides, is_smoke, run_config)
from zoo.data.idx import DataError
from zoo.runs import gain as gains
from zoo.runs.gain import add_gain, baseline_tasks
from zoo.runs.grid import run_grid
from zoo.runs.keys import architecture_field, decoder_field
from zoo.core.registry import Registry, RegistryError
from zoo.runs.results import load_rows, locked, machine, print_table, row_key, write_results, write_rows
from zoo.core.files import check_writable
from zoo.runs.rundir import new_run_dir, remove_if_empty, resumable_runs, training_done
from zoo.engine.loaders import eval_batch_size
from zoo.use.speed import peak_memory_mb, speed_columns
from zoo.engine.tblog import log_figure
from zoo.tasks.base import TaskSpec
from zoo.engine.train import RunResult, fit

DEFAULT_OUT = Path("runs")
HEADER = ("zoo benchmark results. Metrics are percentages on the test split; the best checkpoint on validation is "
          "the one scored.")


# what a grid gives each of its children itself (one combination, run now), not from its own command line
GRID_ONLY = ("task", "encoder", "weighting", "architecture", "decoder", "jobs", "job_timeout", "resume")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def grid_only_options() -> dict[str, int]:
    """The flags of :data:`GRID_ONLY` and how many values each takes, read off the parser."""
    return _options(GRID_ONLY)


def strategy_options() -> dict[str, int]:
    """The flags of the strategy's and architecture's settings (``STRATEGY_FIELDS``), which a grid
    child training a single-task baseline leaves out."""
    return _options(STRATEGY_FIELDS)


def _options(dests) -> dict[str, int]:
    return {opt: 0 if a.nargs == 0 else 1 for a in build_parser()._actions if a.dest in dests
            for opt in a.option_strings}


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
    return p


def expand(kind: str, value: str, registry: Registry) -> list[str]:
    """'all', one name, or comma-separated names; each checked against the registry."""
    if value == "all":
        return registry.names(kind)
    names = [v.strip() for v in value.split(",") if v.strip()]
    for n in names:
        registry.entry(kind, n)
    return names


def budget_of(spec: TaskSpec, quick: bool, encoder: str | None = None) -> dict[str, Any]:
    """The task's default budget with ``encoder``'s own settings over it (``encoder_budgets``), then the quick
    budget over that when ``quick`` (same architecture, less training)."""
    budget = spec.budget_for(encoder)
    if not quick:
        return budget
    if not spec.quick:
        raise RegistryError(f"task {spec.name!r} has no quick budget in its registry entry; run it without --quick "
                            "or give --epochs/--train-limit yourself")
    return {**budget, **spec.quick}


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
    row: dict[str, Any] = {
        "task": cfg.task, "encoder": cfg.encoder, "weighting": cfg.weighting, **architecture_field(cfg.architecture),
        **decoder_field(cfg.decoder),
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


def launched_world() -> int | None:
    """The number of processes torchrun started (None for a plain one-process run): part of a row's key."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    return n if n > 1 else None


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


def row_ident(task: str, encoder: str, weighting: str, mode: str, seed: int,
              architecture: str = DEFAULT_ARCHITECTURE, decoder: str | None = None) -> dict[str, Any]:
    """The fields that key a run's result row (``zoo.runs.results.KEY``), as its row will hold them."""
    return {"task": task, "encoder": encoder, "weighting": weighting, "budget_mode": mode, "seed": seed,
            "world_size": launched_world(), **architecture_field(architecture), **decoder_field(decoder)}


@dataclass
class Job:
    task: str
    encoder: str
    weighting: str
    architecture: str = DEFAULT_ARCHITECTURE
    decoder: str | None = None  # --decoder (None: each dense head's own)
    cfg: RunConfig | None = None
    spec: TaskSpec | None = None
    mode: str = ""
    # the budget mode of the single-task rows this job's row is compared with (its own mode, unless the
    # command gives strategy or architecture settings, which baselines are trained without)
    base_mode: str = ""
    # flags a grid child of this job leaves out of the command line, besides the grid's own
    drop: dict[str, int] = field(default_factory=dict)

    @property
    def ident(self) -> dict[str, Any]:
        """The fields that key this job's result row (``zoo.runs.results.KEY``)."""
        return row_ident(self.task, self.encoder, self.weighting, self.mode, self.cfg.seed, self.architecture,
                         self.decoder)

    @property
    def label(self) -> str:
        arch = f" | {self.architecture}" if self.architecture != DEFAULT_ARCHITECTURE else ""
        arch += f" | {self.decoder}" if self.decoder is not None else ""
        return f"{self.task} | {self.encoder} | {self.weighting}{arch}"

    @property
    def key(self) -> tuple:
        return row_key(self.ident)


def plan_jobs(args: argparse.Namespace, registry: Registry, mode: str, out: Path) -> list[Job]:
    """Every run the command asks for, with any missing single-task baselines of a joint task first."""
    if args.task == "all":  # the reference tasks; dataset-specific tasks run by name
        tasks = [t for t in registry.names("tasks") if getattr(registry.entry("tasks", t).obj, "in_all", True)]
    else:
        tasks = expand("tasks", args.task, registry)
    encoders = registry.names("encoders") if args.encoder == "all" else expand("encoders", args.encoder, registry)
    weightings = expand("weightings", args.weighting, registry)
    architectures = expand("architectures", args.architecture, registry)
    specs = {t: task_spec(t, registry) for t in tasks}
    for spec in specs.values():
        budget_of(spec, args.quick)  # a task without a quick budget fails before anything trains
    # A joint task is compared with single-task models of the same encoder, budget and seed: train those
    # first unless the results folder already has them.
    have = {row_key(r) for r in (load_rows(out) if dist.is_main() else [])}
    # tasks compared with baselines run after them, so one invocation can fill delta_m
    decoders = plan_decoders(args, registry, specs, encoders)
    # the task's own decoder is its plain run (no decoder in the key); any other is named, unet included, so a
    # task whose entry decodes with fpn never shares a row key with its run under --decoder unet
    own = {t: own_decoder(spec, registry) for t, spec in specs.items()}
    asked = [Job(t, e, w, a, None if d == own[t] else d) for t in sorted(tasks, key=lambda t: bool(specs[t].baselines))
             for e in encoders for w in weightings for a in architectures for d in decoders[e]]
    planned = {row_key(row_ident(j.task, j.encoder, j.weighting, mode, args.seed, j.architecture, j.decoder))
               for j in asked}
    # baselines are hard sharing with fixed weighting, whatever the asked jobs use, and trained without
    # the command's strategy and architecture settings (fixed takes none): under their own budget mode
    base_mode = budget_mode(args, strategy=False)
    strategy_flags = strategy_options()
    jobs: list[Job] = []
    if not args.no_baselines:
        for spec in specs.values():
            for base in baseline_tasks(spec.baselines):
                for e in encoders:
                    key = row_key(row_ident(base, e, "fixed", base_mode, args.seed))
                    if key not in have and key not in planned and (base, e) not in {(j.task, j.encoder) for j in jobs}:
                        jobs.append(Job(base, e, "fixed", mode=base_mode, drop=strategy_flags))
    jobs += asked
    for job in jobs:  # every setting of every run is checked before the first one trains
        spec = specs.get(job.task) or task_spec(job.task, registry)
        job.cfg = run_config(args, job.task, job.encoder, job.weighting, budget_of(spec, args.quick, job.encoder),
                             job.architecture, job.decoder)
        if job.drop:  # a baseline: the strategy's and architecture's settings are not its own
            job.cfg = dataclasses.replace(job.cfg, **{f: {} for f in STRATEGY_FIELDS})
        job.mode, job.base_mode = job.mode or mode, base_mode
        # the job's own spec, built once with its --task-arg values (checked here) and handed to fit
        job.spec = task_spec(job.task, registry, job.cfg.task_settings) if job.cfg.task_settings else spec
        # --decoder and --decoder-arg: checked against the job's encoder here, before the first run trains
        decoded = with_decoder_of_run(job.spec, registry, job.cfg.decoder, job.cfg.decoder_settings)
        check_decoders(registry, job.encoder, job.cfg.encoder_settings, decoded.heads)
    return jobs


def plan_decoders(args: argparse.Namespace, registry: Registry, specs: dict[str, TaskSpec],
                  encoders: list[str]) -> dict[str, list[str | None]]:
    """Each encoder's decoders of ``--decoder`` (``[None]`` without it: each head's own). Names given are
    checked (a decoder that cannot read an encoder is refused with the job); ``all`` is every registered
    decoder that can read the encoder's levels. A joint task's single-task baselines are not trained per
    decoder, so its delta_m would compare decoders: refused."""
    if args.decoder is None:
        return {e: [None] for e in encoders}
    joint = sorted(t for t, spec in specs.items() if spec.baselines)
    if joint:
        raise RegistryError(f"--decoder: the single-task baselines of joint task {joint[0]!r} (its delta_m) are not "
                            "trained per decoder yet; run its single tasks with --decoder")
    if args.decoder != "all":
        names = expand("decoders", args.decoder, registry)
        return {e: list(names) for e in encoders}
    out = {}
    for e in encoders:
        try:
            with torch.device("meta"):
                given = cli_overrides(args).get("encoder_settings", {})  # (each job checks its full settings)
                enc = registry.build("encoders", e, **{k: v for k, v in given.items() if k != "pretrained"})
            out[e] = [d for d in registry.names("decoders")
                      if not registry.entry("decoders", d).obj.refuse(enc.out_channels, enc.reductions)]
        except RegistryError:
            raise
        except Exception:  # an encoder that cannot be built on meta: every decoder, each checked with its job
            out[e] = registry.names("decoders")
    return out


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


def _doing(err: Console, args: argparse.Namespace, what: str) -> Any:
    """A spinner naming the step after training that takes a while (none with --quiet, or off rank 0)."""
    return err.status(what) if not args.quiet and dist.is_main() else contextlib.nullcontext()


def run_job(job: Job, args: argparse.Namespace, registry: Registry, out: Path, command: str,
            err: Console) -> dict[str, Any]:
    """Train one combination in its own run directory, write its row (under the folder's lock) and figure."""
    spec, cfg, mode = job.spec, job.cfg, job.mode
    twin = interrupted_twin(out, cfg, mode) if dist.is_main() and not args.resume else None
    if twin is not None:
        err.print(f"[yellow]note:[/] {escape(str(twin[0].parent))} holds an interrupted run of {escape(job.label)} "
                  f"(epoch {twin[1]} of {cfg.epochs}); this command starts a new run beside it. To continue that "
                  f"one instead, rerun this job alone with --resume {escape(str(twin[0]))}")
    run_dir = Path(args.resume).parent if args.resume else new_run_dir(out, cfg, mode)
    if dist.is_main():
        err.rule(job.label)  # the folder on its own line: a rule would cut a long path at 80 columns
        err.print(f"run folder: {escape(str(run_dir))}", soft_wrap=True)
    t0 = time.perf_counter()
    halved = []
    while True:
        try:
            result = fit(cfg, out_dir=run_dir, resume=args.resume, console=err, show_progress=not args.quiet,
                         registry=registry, spec=spec, smoke=is_smoke(mode))
            break
        except torch.cuda.OutOfMemoryError:
            # a CUDA out-of-memory halves the batch and starts again (one process, no resume to mix)
            if cfg.batch_size == 1 or args.resume or dist.world_size() > 1:
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
            if dist.is_main() and not args.resume:
                remove_if_empty(run_dir)
            raise
    row = result_row(result, [h.name for h in result.setup.task.heads], command, mode)
    row["budget_hash"] = budget_fingerprint(job.cfg)  # the job's, before any out-of-memory halving
    if args.resume:
        row["note"] = (f"resumed from {args.resume}: wall_seconds is the resumed process's, train_seconds and "
                       "train_samples_per_s count every epoch")
    if halved:
        row["note"] = f"batch size {' -> '.join(map(str, halved + [cfg.batch_size]))} after CUDA out of memory"
    row.update({f"val_{m}": round(result.val.get(m, float("nan")), 4) for m in spec.monitor})
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if not args.no_speed and dist.is_main():  # one process measures: ranks timing at once would slow each other
        with _doing(err, args, "measuring inference speed (GFLOPs, images/s) and memory"):
            row.update(speed_columns(result.model, result.setup.data.test, result.setup.plans, result.setup.device,
                                     eval_batch_size(cfg.batch_size), speed_stream=spec.task.speed_stream))
    else:  # the run's own peak is valid even when runs share a machine (timings are not)
        row["peak_memory_mb"] = round(peak_memory_mb(result.setup.device), 1)
    if spec.baselines:
        if job.base_mode != mode:  # its baselines were trained without its strategy/architecture settings
            row["baseline_mode"] = job.base_mode
        add_gain(row, spec.baselines, load_rows(out))
    if dist.is_main():
        if not args.no_figures:
            from zoo.use.figures import prediction_figure

            with _doing(err, args, "drawing the prediction figure"):
                prediction_figure(result.model, result.setup.data.test, result.setup.plans, run_dir / "figure.png",
                                  result.setup.device)
            if cfg.tensorboard:
                log_figure(run_dir, run_dir / "figure.png", result.epochs)
        write_results(out, [row], HEADER)  # after every run: a long grid keeps what finished
    return row


def refresh_gains(out: Path, registry: Registry) -> list[dict[str, Any]]:
    """``zoo.runs.gain.refresh_gains`` on the folder's rows, under its lock; returns the rows."""
    with locked(out):
        rows, changed = gains.refresh_gains(load_rows(out), registry)
        if changed:
            write_rows(out, rows, HEADER)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # soft_wrap: a message stays one line when stderr is a file (rich wraps at 80 columns off a terminal)
    console, err = Console(), Console(stderr=True, soft_wrap=True)
    command = command_line(sys.argv[1:] if argv is None else argv)
    try:
        registry = load_registry(args.registry)
        if args.list:
            list_registry(registry, console)
            return 0
        if not args.task:
            raise RegistryError(f"--task is required (one of {', '.join(registry.names('tasks'))}, or all); see --list")
        mode = budget_mode(args)
        out = check_writable(args.out) if dist.is_main() else Path(args.out)
        jobs = plan_jobs(args, registry, mode, out)
        if args.resume and len(jobs) != 1:
            raise RegistryError("--resume continues one run: give a single --task, --encoder, --weighting and "
                                "--architecture")
        if args.jobs < 1:
            raise ValueError(f"--jobs must be an integer >= 1, got {args.jobs}")
        if args.job_timeout is not None and args.job_timeout <= 0:
            raise ValueError(f"--job-timeout must be > 0 seconds, got {args.job_timeout}")
        if len(jobs) > 1 and not launched_world():
            run_grid(jobs, sys.argv[1:] if argv is None else list(argv), out, args.jobs, args.job_timeout, HEADER, err,
                     grid_only_options())
            keys = {j.key for j in jobs}
            rows = [r for r in refresh_gains(out, registry) if row_key(r) in keys]
            print_table(rows, f"results ({mode} budget)", console)
            console.print(f"-> {out / 'results.md'} (.csv, .json)", soft_wrap=True, markup=False)
            failed = [r for r in rows if r.get("status")]
            return 1 if failed else 0
        dist.init()
        rows = [run_job(job, args, registry, out, command, err) for job in jobs]
        if dist.is_main():
            refresh_gains(out, registry)
            print_table(rows, f"results ({mode} budget)", console)  # a short title: a path would wrap it
            console.print(f"-> {out / 'results.md'} (.csv, .json)", soft_wrap=True, markup=False)
        dist.shutdown()
        return 0
    except (RegistryError, DataError, ValueError, FileNotFoundError, FloatingPointError, dist.StalledRanks) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except (MemoryError, OSError) as exc:
        if isinstance(exc, MemoryError) or exc.errno == errno.ENOMEM:  # the machine's memory, not the disk
            err.print("[bold red]error:[/] out of memory on this machine; use smaller settings (--batch-size, the "
                      "encoder's or architecture's sizes) or a machine with more memory")
            return 2
        # a full or vanished disk: every file is written atomically, so earlier ones are whole
        err.print(f"[bold red]error:[/] cannot write {escape(str(exc.filename or args.out))}: "
                  f"{escape(exc.strerror or str(exc))}; files written before are unchanged")
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: resume with --resume <out>/<run>/last.pt, or run the same grid command again")
        return 130
    finally:
        dist.leave()  # a run that failed under torchrun (after a clean end, shutdown has left already)


if __name__ == "__main__":
    sys.exit(main())
