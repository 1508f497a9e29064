"""Multi-task gain: delta_m (Maninis et al. 2019; as used by MTAN and LibMTL).

LibMTL's definition: delta_m = 100 / T * sum_t 1 / N_t * sum_i (-1)^{l_ti} (M_joint,ti - M_single,ti)
/ M_single,ti -- the mean over the T tasks of the mean over each task's N_t metrics of the signed
relative change, with l_ti = 1 for metrics where lower is better (LibMTL's ``count_improvement``).
Each metric declares which of its values are better lower (``zoo.core.metrics.Metric.lower_is_better``:
depth and angle errors); the task spec collects them (``TaskSpec.lower_is_better``), so a positive
delta_m means the joint model beats its single-task counterparts on average, whatever the directions.
Every MNIST metric is higher-is-better. Circlization's two metrics (accuracy, gated IoU) count as one task.
A row's ``single_<metric>`` columns are the metrics that went into its delta_m, and ``delta_m_negated``
(written when there are any) lists those counted with a minus sign.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Collection

from zoo.runs.identity import RunIdentity
from zoo.runs.keys import row_key

if TYPE_CHECKING:
    from zoo.core.registry import Registry

LOWER_IS_BETTER: set[str] = set()
#: the single-task values a row's delta_m compared with (``single_<metric>``) and their sums
SINGLE = "single_"
#: why a row's delta_m is NaN, when it is
REASON = "delta_m_reason"
#: the metrics of a row's delta_m that are better lower (counted with a minus sign), when there are any
NEGATED = "delta_m_negated"
#: what a results table shows of the gain, in order
GAIN_SUMMARY = ("delta_m", f"{SINGLE}parameters_sum", f"{SINGLE}train_seconds_sum", REASON, NEGATED)


def is_gain_detail(column: str) -> bool:
    """A column this module writes beside delta_m: a baseline's value, a sum over the baselines, or why
    delta_m could not be computed."""
    return column.startswith(SINGLE) or column in (REASON, NEGATED)


def delta_m(joint: dict[str, float], single: dict[str, float], tasks: dict[str, str] | None = None,
            lower_is_better: set[str] = LOWER_IS_BETTER) -> float:
    """Relative change (percent) of ``joint`` against ``single``: averaged over each task's metrics
    (``tasks``: metric -> task; each metric its own task when not given), then over tasks."""
    if not single:
        raise ValueError("delta_m needs at least one baseline metric")
    tasks = tasks or {k: k for k in single}
    per_task: dict[str, list[float]] = {}
    for k, base in single.items():
        if base == 0:
            raise ValueError(f"baseline {k} is 0: relative change undefined")
        sign = -1.0 if k in lower_is_better else 1.0
        per_task.setdefault(tasks[k], []).append(sign * (joint[k] - base) / base)
    return 100.0 * sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)


def split_ref(ref: str) -> tuple[str, str]:
    """A baseline reference ``"task.metric"`` (a task entry's ``baselines``) as ``(task, metric)``."""
    task, sep, metric = ref.partition(".")
    if not sep or not task or not metric:
        raise ValueError(f"a baseline is 'task.metric', got {ref!r}")
    return task, metric


def baseline_tasks(baselines: dict[str, str]) -> list[str]:
    """The single-task tasks a multi-task row is compared with, in first-named order."""
    return list(dict.fromkeys(split_ref(ref)[0] for ref in baselines.values()))


def baseline_decoder(decoder: str | None, task: str, registry: "Registry | None") -> str | None:
    """The decoder of a joint run's baseline of ``task``: a joint run under ``--decoder D`` is compared with
    single-task runs under D, where the task has a dense head to decode; otherwise with the task as it is."""
    if decoder is None:
        return None
    if registry is None:
        raise ValueError(f"delta_m of a row with decoder {decoder!r} needs the registry: which baseline tasks "
                         "have a dense head decides which baselines ran with it")
    from zoo.engine.build import decodes, task_spec

    return decoder if decodes(task_spec(task, registry), registry) else None


def baseline_key(row: dict[str, Any], task: str, registry: "Registry | None" = None) -> tuple:
    """Which single-task row a joint row is compared with (``RunIdentity.baseline``): the row key with that task,
    the fixed weighting and hard sharing (same encoder, budget and seed), whatever the joint row's architecture,
    and the joint row's decoder where the task has a dense head (``baseline_decoder``). A row trained with
    strategy or architecture settings names its baselines' budget mode, which leaves them out
    (``baseline_mode``)."""
    decoder = baseline_decoder(row.get("decoder"), task, registry)
    return RunIdentity.of_row(row).baseline(task, row.get("baseline_mode"), decoder).key


def add_gain(row: dict[str, Any], baselines: dict[str, str], rows: list[dict[str, Any]],
             lower_is_better: Collection[str] = (), registry: "Registry | None" = None) -> list[str]:
    """Fill delta_m and the parameter / time accounting into ``row``; returns missing baseline tasks.
    ``lower_is_better``: the row's metrics that are better lower (its task's ``TaskSpec.lower_is_better``)."""
    index = {row_key(r): r for r in rows if not r.get("status")}  # a failed or timed-out row has no metrics
    single, used, missing = {}, {}, []
    for metric, ref in baselines.items():
        task, base_metric = split_ref(ref)
        base = index.get(baseline_key(row, task, registry))
        if base is None:
            missing.append(task)
            continue
        single[metric] = float(base[base_metric])
        used[task] = base
    if missing:
        return sorted(set(missing))
    zero = [k for k, v in single.items() if v == 0]
    tasks = {metric: split_ref(ref)[0] for metric, ref in baselines.items()}
    lower = {k for k in single if k in set(lower_is_better)}
    row["delta_m"] = float("nan") if zero else round(delta_m({k: float(row[k]) for k in single}, single, tasks,
                                                             lower), 3)
    row.pop(REASON, None)
    row.pop(NEGATED, None)
    if lower:
        row[NEGATED] = " ".join(k for k in single if k in lower)
    if zero:  # a relative change from 0 has no value: the row says which baseline, not just "nan"
        row[REASON] = (f"baseline {', '.join(baselines[k] for k in zero)} is 0 (the single-task model scored nothing, "
                       "as a smoke run can): a relative change from 0 is undefined")
    row[GAIN_SUMMARY[1]] = sum(int(b["parameters"]) for b in used.values())
    row[GAIN_SUMMARY[2]] = round(sum(float(b["train_seconds"]) for b in used.values()), 1)
    for metric, ref in baselines.items():
        row[f"{SINGLE}{metric}"] = single[metric]
    return []


def refresh_gains(rows: list[dict[str, Any]], registry: "Registry") -> tuple[list[dict[str, Any]], bool]:
    """delta_m of every multi-task row recomputed from the single-task rows in ``rows`` now (in place):
    a joint row that finished before its baselines (parallel grids) gets one, and one whose baseline
    row was replaced since (a rerun, an encoder's own budget) is compared with the new row, never the
    old. Returns the rows and whether any changed. The one owner of delta_m for bench, the grid and
    every ``benchmarks/*_table.py``."""
    from zoo.engine.build import task_spec

    specs: dict[str, Any] = {}
    changed = False
    for r in rows:
        task = r.get("task")
        if r.get("status") or task is None:
            continue
        if task not in specs:
            specs[task] = task_spec(task, registry) if task in registry.names("tasks") else None
        spec = specs[task]
        if spec is None or not spec.baselines:
            continue
        old = json.dumps(r, sort_keys=True, default=str)
        add_gain(r, spec.baselines, rows, spec.lower_is_better, registry)
        changed |= json.dumps(r, sort_keys=True, default=str) != old
    return rows, changed
