"""Multi-task gain: delta_m (Maninis et al. 2019; as used by MTAN and LibMTL).

delta_m = 100 / T * sum_t (-1)^{l_t} (M_joint,t - M_single,t) / M_single,t, with l_t = 1 for
metrics where lower is better. Every zoo metric is higher-is-better (l_t = 0), so a
positive delta_m means the joint model beats its single-task counterparts on average.
"""
from __future__ import annotations

from typing import Any

from zoo.results import row_key

LOWER_IS_BETTER: set[str] = set()


def delta_m(joint: dict[str, float], single: dict[str, float], lower_is_better: set[str] = LOWER_IS_BETTER) -> float:
    """Mean relative change (percent) of ``joint`` against ``single`` over the metrics of ``single``."""
    if not single:
        raise ValueError("delta_m needs at least one baseline metric")
    total = 0.0
    for k, base in single.items():
        if base == 0:
            raise ValueError(f"baseline {k} is 0: relative change undefined")
        sign = -1.0 if k in lower_is_better else 1.0
        total += sign * (joint[k] - base) / base
    return 100.0 * total / len(single)


def baseline_key(row: dict[str, Any], task: str) -> tuple:
    """Which single-task row a joint row is compared with: the row key with that task and the fixed
    weighting (same encoder, budget and seed)."""
    return row_key({**row, "task": task, "weighting": "fixed"})


def add_gain(row: dict[str, Any], baselines: dict[str, str], rows: list[dict[str, Any]]) -> list[str]:
    """Fill delta_m and the parameter / time accounting into ``row``; returns missing baseline tasks."""
    index = {row_key(r): r for r in rows}
    single, used, missing = {}, {}, []
    for metric, ref in baselines.items():
        task, _, base_metric = ref.partition(".")
        base = index.get(baseline_key(row, task))
        if base is None:
            missing.append(task)
            continue
        single[metric] = float(base[base_metric])
        used[task] = base
    if missing:
        return sorted(set(missing))
    zero = [k for k, v in single.items() if v == 0]
    row["delta_m"] = float("nan") if zero else round(delta_m({k: float(row[k]) for k in single}, single), 3)
    row["single_parameters_sum"] = sum(int(b["parameters"]) for b in used.values())
    row["single_train_seconds_sum"] = round(sum(float(b["train_seconds"]) for b in used.values()), 1)
    for metric, ref in baselines.items():
        row[f"single_{metric}"] = single[metric]
    return []
