"""``python -m zoo.bench``: train, evaluate and tabulate encoder x task (x weighting) combinations.

    python -m zoo.bench --task circlization --encoder scratch
    python -m zoo.bench --task all --encoder all --quick
    python -m zoo.bench --list
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from rich.console import Console
from rich.table import Table

from zoo import distributed as dist
from zoo.build import load_registry, task_spec
from zoo.registry import Registry, RegistryError
from zoo.gain import add_gain
from zoo.results import load_rows, machine, merge_rows, print_table, write_results
from zoo.train import RunConfig, RunResult, fit

BUDGET_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "schedule", "patience", "train_limit", "test_limit",
               "tta", "val_fraction", "encoder_settings"}
DEFAULT_OUT = Path("benchmarks/results")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print the registered encoders, heads, tasks and more, then exit")
    p.add_argument("--task", default=None, help="task name, comma-separated names, or 'all'")
    p.add_argument("--encoder", default="scratch", help="encoder name (or timm:<name>), comma-separated names, or 'all'")
    p.add_argument("--weighting", default="fixed", help="loss weighting strategy, comma-separated names, or 'all'")
    p.add_argument("--epochs", type=int, help="override the task's default number of epochs")
    p.add_argument("--batch-size", type=int, help="override the task's default batch size")
    p.add_argument("--lr", type=float, help="override the task's default peak learning rate")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "plateau", "none"])
    p.add_argument("--patience", type=int, help="early stopping: epochs without validation improvement (0 = off)")
    p.add_argument("--encoder-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="encoder setting (YAML value), e.g. width=32 or input_skip=true (repeatable)")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="task setting (YAML value), e.g. 'augment={shift: 2}' or train_size=50000 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (fast on CUDA)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $ZOO_DATA, then the cache)")
    p.add_argument("--registry", action="append", default=[], metavar="YAML",
                   help="a registry file merged onto the built-in one (repeatable)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="smoke run: each task's small 'quick' budget")
    p.add_argument("--train-limit", type=int, help="use only this many training digits/images")
    p.add_argument("--test-limit", type=int, help="use only this many test digits/images")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over 1-pixel shifts")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue an interrupted run from its last.pt")
    p.add_argument("--no-figures", action="store_true", help="skip the prediction figures")
    p.add_argument("--no-baselines", action="store_true",
                   help="do not train missing single-task baselines for delta_m (use what --out already has)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def expand(kind: str, value: str, registry: Registry) -> list[str]:
    """'all', one name, or comma-separated names; each checked against the registry."""
    if value == "all":
        return registry.names(kind)
    names = [v.strip() for v in value.split(",") if v.strip()]
    for n in names:
        registry.entry(kind, n)
    return names


def run_config(args: argparse.Namespace, task: str, encoder: str, weighting: str, budget: dict[str, Any]) -> RunConfig:
    unknown = set(budget) - BUDGET_KEYS
    if unknown:
        raise RegistryError(f"task {task!r}: unknown budget setting(s) {sorted(unknown)}; valid: {sorted(BUDGET_KEYS)}")
    cfg: dict[str, Any] = {k: v for k, v in budget.items() if k != "encoder_settings"}
    enc = dict(budget.get("encoder_settings") or {})
    enc.update(parse_kv(args.encoder_arg))
    cfg["encoder_settings"] = tuple(sorted(enc.items()))
    cfg["task_settings"] = tuple(sorted(parse_kv(args.task_arg).items()))
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
                 "schedule": args.schedule, "patience": args.patience, "train_limit": args.train_limit,
                 "test_limit": args.test_limit}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    if args.tta:
        cfg["tta"] = True
    return RunConfig(task=task, encoder=encoder, weighting=weighting, seed=args.seed, device=args.device,
                     amp=not args.no_amp, channels_last=args.channels_last, num_workers=args.workers,
                     data_root=args.data_root, registry=tuple(args.registry), **cfg)


def parse_kv(items: list[str]) -> dict[str, Any]:
    """``["width=32", "input_skip=true"]`` -> ``{"width": 32, "input_skip": True}`` (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RegistryError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise RegistryError(f"cannot parse the value of {item!r}") from None
    return out


def budget_mode(args: argparse.Namespace) -> str:
    """'quick', 'default', or 'custom' when any budget setting is overridden on the command line."""
    custom = any(v is not None for v in (args.epochs, args.batch_size, args.lr, args.weight_decay, args.schedule,
                                         args.patience, args.train_limit, args.test_limit)) or bool(args.encoder_arg or args.task_arg)
    return "custom" if custom else ("quick" if args.quick else "default")


def result_row(r: RunResult, heads: list[str], command: str) -> dict[str, Any]:
    cfg = r.config
    row: dict[str, Any] = {
        "task": cfg.task, "encoder": cfg.encoder, "weighting": cfg.weighting, "heads": "+".join(heads),
        "parameters": r.parameters, "epochs": r.epochs, "best_epoch": r.best_epoch,
        "train_seconds": round(r.train_seconds, 1),
        "train_samples_per_s": round(r.train_samples / r.train_seconds, 1) if r.train_seconds else float("nan"),
    }
    row.update({k: round(v, 4) for k, v in r.test.items()})
    row.update(r.info)
    row.update({"device": r.device, "machine": machine(), "torch": torch.__version__, "seed": cfg.seed,
                "command": command})
    return row


def list_registry(registry: Registry, console: Console) -> None:
    """Rich tables of everything registered: name, where it comes from, key settings."""
    for kind in ("encoders", "heads", "tasks", "losses", "metrics", "weightings"):
        table = Table(title=kind)
        table.add_column("name", style="bold")
        table.add_column("from")
        table.add_column("settings")
        for e in registry.entries(kind):
            settings = dict(e.settings)
            if kind == "tasks":
                spec = e.spec
                heads = ", ".join(f"{n}:{h.get('head')}({h.get('loss', '')} x{h.get('weight', 1)})"
                                  for n, h in (spec.get("heads") or {}).items())
                settings = {"heads": heads, "metrics": ", ".join(spec.get("metrics") or {}),
                            "budget": spec.get("budget", {})}
            table.add_row(e.name, e.source, ", ".join(f"{k}={v}" for k, v in settings.items()))
        if kind == "encoders":
            table.add_row("timm:<name>", "timm (any backbone, features_only)", "e.g. timm:efficientnet_b0")
        console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    command = "python -m zoo.bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        registry = load_registry(args.registry)
        if args.list:
            list_registry(registry, console)
            return 0
        if not args.task:
            raise RegistryError(f"--task is required (one of {', '.join(registry.names('tasks'))}, or all); "
                                "see --list")
        if args.task == "all":  # the reference tasks; dataset-specific tasks run by name
            tasks = [t for t in registry.names("tasks") if getattr(registry.entry("tasks", t).obj, "in_all", True)]
        else:
            tasks = expand("tasks", args.task, registry)
        encoders = [e for e in args.encoder.split(",")] if args.encoder != "all" else registry.names("encoders")
        for e in encoders:
            registry.entry("encoders", e)
        weightings = expand("weightings", args.weighting, registry)
        if args.resume and len(tasks) * len(encoders) * len(weightings) != 1:
            raise RegistryError("--resume continues one run: give a single --task, --encoder and --weighting")
        dist.init()
        rows: list[dict[str, Any]] = []
        out = Path(args.out)
        mode = budget_mode(args)
        # A task with baselines (joint) is compared with single-task models of the same encoder and
        # budget: train those first unless the results folder already has them.
        known = load_rows(out) if dist.is_main() else []
        needed: list[str] = []
        have = {(r["task"], r["encoder"], r.get("budget_mode"), r["seed"]) for r in known if r["weighting"] == "fixed"}
        for task in tasks:
            for ref in task_spec(task, registry).baselines.values():
                base = ref.partition(".")[0]
                if base not in tasks and base not in needed:
                    needed.append(base)
        # tasks compared with baselines run after them, so one invocation can fill delta_m
        tasks = sorted(tasks, key=lambda t: bool(task_spec(t, registry).baselines))
        if needed and args.no_baselines:
            needed = []
        if needed:
            todo = [b for b in needed if any((b, e, mode, args.seed) not in have for e in encoders)]
            tasks = todo + tasks
        for task in tasks:
            spec = task_spec(task, registry)
            budget = dict(spec.quick if args.quick else spec.budget)
            if args.quick and "encoder_settings" not in budget and "encoder_settings" in spec.budget:
                budget["encoder_settings"] = spec.budget["encoder_settings"]  # same architecture, smaller budget
            for encoder in encoders:
                # baselines are single-task models under their fixed YAML weights
                for weighting in (["fixed"] if task in needed else weightings):
                    if task in needed and (task, encoder, mode, args.seed) in have:
                        continue
                    cfg = run_config(args, task, encoder, weighting, budget)
                    name = f"{task}-{encoder.replace(':', '_')}-{weighting}"
                    if dist.is_main():
                        err.rule(f"{task} | {encoder} | {weighting}")
                    t0 = time.perf_counter()
                    result = fit(cfg, out_dir=out / "checkpoints" / name, resume=args.resume, console=err,
                                 show_progress=not args.quiet)
                    row = result_row(result, [h.name for h in spec.heads], command)
                    row.update({f"val_{m}": round(result.val.get(m, float("nan")), 4) for m in spec.monitor})
                    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
                    row["budget_mode"] = mode
                    if spec.baselines:
                        add_gain(row, spec.baselines, merge_rows(known, rows))
                    rows.append(row)
                    if dist.is_main() and not args.no_figures:
                        _figure(cfg, out / "figures" / f"{name}.png")
                    if dist.is_main():  # write after every run: a long grid keeps what finished
                        header = ("zoo benchmark results. Metrics are percentages on the test split; "
                                  "the best checkpoint on validation is the one scored.")
                        write_results(out, rows, header)
        if dist.is_main():
            print_table(rows, f"results ({mode} budget) -> {out}", console)
        dist.shutdown()
        return 0
    except (RegistryError, ValueError, FileNotFoundError, FloatingPointError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: resume with --resume <out>/checkpoints/<run>/last.pt")
        return 130


def _figure(cfg: RunConfig, path: Path) -> None:
    """Rebuild the best model from its checkpoint and draw test predictions."""
    from zoo.checkpoint import load_checkpoint
    from zoo.figures import prediction_figure
    from zoo.train import setup

    ckpt = path.parent.parent / "checkpoints" / path.stem / "best.pt"
    if not ckpt.is_file():
        return
    s = setup(cfg)
    s.model.load_state_dict(load_checkpoint(ckpt)["model"])
    prediction_figure(s.model, s.data.test, s.plans, path, s.device)


if __name__ == "__main__":
    sys.exit(main())
