"""What a benchmark command asks for: every run of its grid as a :class:`zoo.runs.job.Job`, each checked
before the first one trains, with the single-task baselines a joint task is compared with first."""
from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import Any

import torch

from zoo.core import distributed as dist
from zoo.core.registry import Registry, RegistryError
from zoo.engine.build import check_decoders, decodes, own_decoder, task_spec, with_decoder_of_run
from zoo.engine.config import STRATEGY_FIELDS, budget_mode, cli_overrides, run_config, run_flags
from zoo.runs.gain import baseline_decoder, baseline_tasks
from zoo.runs.identity import RunIdentity, launched_world
from zoo.runs.job import Job
from zoo.runs.keys import row_key
from zoo.runs.results import load_rows
from zoo.tasks.base import TaskSpec


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


def plan_jobs(args: argparse.Namespace, registry: Registry, mode: str, out: Path,
              world_size: int | None = None) -> list[Job]:
    """Every run the command asks for, with any missing single-task baselines of a joint task first; each run
    as ``world_size`` processes (default: as many as this process was launched with), with the command that
    runs it alone (:func:`command_of`)."""
    world = world_size if world_size is not None else launched_world()
    world = world if world and world > 1 else None
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
    asked = [RunIdentity(t, e, w, mode, args.seed, a, None if d == own[t] else d, world)
             for t in sorted(tasks, key=lambda t: bool(specs[t].baselines))
             for e in encoders for w in weightings for a in architectures for d in decoders[e]]
    planned = {i.key for i in asked}
    # baselines are hard sharing with fixed weighting, whatever the asked jobs use, and trained without
    # the command's strategy and architecture settings (fixed takes none): under their own budget mode
    base_mode = budget_mode(args, strategy=False)
    bases: list[RunIdentity] = []
    if not args.no_baselines:
        for spec in specs.values():
            for base in baseline_tasks(spec.baselines):
                for e in encoders:
                    for d in decoders[e]:  # under --decoder D, the baselines that have a dense head run with D
                        joint_decoder = None if d == own[spec.name] else d
                        ident = RunIdentity(base, e, "fixed", base_mode, args.seed, world_size=world,
                                            decoder=baseline_decoder(joint_decoder, base, registry))
                        if ident.key not in have and ident.key not in planned and ident not in bases:
                            bases.append(ident)
    jobs: list[Job] = []
    for ident in bases + asked:  # every setting of every run is checked before the first one trains
        spec = specs.get(ident.task) or task_spec(ident.task, registry)
        cfg = run_config(args, ident.task, ident.encoder, ident.weighting,
                         budget_of(spec, args.quick, ident.encoder), ident.architecture, ident.decoder)
        if ident in bases:  # a baseline: the strategy's and architecture's settings are not its own
            cfg = dataclasses.replace(cfg, **{f: {} for f in STRATEGY_FIELDS})
            if not decodes(spec, registry):  # --decoder-arg: nothing of this baseline's to decode
                cfg = dataclasses.replace(cfg, decoder_settings={})
        # the job's own spec, built once with its --task-arg values (checked here) and handed to fit
        job_spec = task_spec(ident.task, registry, cfg.task_settings) if cfg.task_settings else spec
        # --decoder and --decoder-arg: checked against the job's encoder here, before the first run trains
        decoded = with_decoder_of_run(job_spec, registry, cfg.decoder, cfg.decoder_settings)
        check_decoders(registry, ident.encoder, cfg.encoder_settings, decoded.heads)
        job_spec.task.check_data(cfg.data_config())  # e.g. a task with no offline data and no --data-root
        jobs.append(Job(cfg, ident.budget_mode, base_mode, world, str(out), command_of(args, ident, ident in bases),
                        resume=args.resume,
                        figures=not args.no_figures, speed=not args.no_speed, quiet=args.quiet, spec=job_spec))
    return jobs


def command_of(args: argparse.Namespace, ident: RunIdentity, baseline: bool = False) -> str:
    """The command that trains ``ident`` alone (a grid row's provenance): its combination, then the command's
    own options as flags (``zoo.engine.config.run_flags``), a baseline's without the strategy's settings."""
    named = [a for k, v in ident.named().items() for a in (f"--{k}", v)]
    argv = ["--task", ident.task, "--encoder", ident.encoder, "--weighting", ident.weighting, *named,
            *(["--quick"] if args.quick else []), *run_flags(args, STRATEGY_FIELDS if baseline else ()),
            "--out", str(args.out), *[f"--{f.replace('_', '-')}" for f in ("no_figures", "no_speed")
                                      if getattr(args, f)]]
    return "python -m zoo.bench " + shlex.join(argv)


def plan_decoders(args: argparse.Namespace, registry: Registry, specs: dict[str, TaskSpec],
                  encoders: list[str]) -> dict[str, list[str | None]]:
    """Each encoder's decoders of ``--decoder`` (``[None]`` without it: each head's own). Names given are
    checked (a decoder that cannot read an encoder is refused with the job); ``all`` is every registered
    decoder that can read the encoder's levels. A joint task's single-task baselines run with the same decoder
    (``zoo.runs.gain.baseline_decoder``), so its delta_m compares like with like."""
    if args.decoder is None:
        return {e: [None] for e in encoders}
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
