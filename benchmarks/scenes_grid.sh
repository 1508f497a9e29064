#!/usr/bin/env bash
# The scenes table (issue 39): `scenes` under 3 architectures x 7 strategies x 3 seeds, each seed with its three
# single-task baselines, into one results folder, then the table (benchmarks/mtl_table.py --task scenes).
# Finished rows are skipped, so running it again goes on where it stopped. Order: hard sharing first, and every
# strategy group over its 3 seeds before the next, so what is done is always whole configurations.
#
#   JOBS=1 bash benchmarks/scenes_grid.sh                      the CPU table (64x64, one thread a run)
#   OUT=DIR JOBS=24 bash benchmarks/scenes_grid.sh --task-arg 'size=[288, 384]'   NYUv2's size (a GPU)
#   SMOKE=1 OUT=/tmp/scenes bash benchmarks/scenes_grid.sh     the plumbing, with --quick budgets
# Extra arguments go to every zoo.bench command. PY, ARCHS, STRATS, SEEDS and INTRO (the table's heading)
# override the defaults.
set -eu
PY=${PY:-python}
OUT=${OUT:-benchmarks/results/scenes}
JOBS=${JOBS:-1}
ARCHS=${ARCHS:-hard_sharing mtan cgc}
STRATS=${STRATS:-fixed,uncertainty dwa,famo upgrad,cagrad nash_mtl}
SEEDS=${SEEDS:-0 1 2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
EXTRA=(); [ -n "${SMOKE:-}" ] && EXTRA=(--quick --encoder-arg width=4)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for arch in $ARCHS; do
  for strats in $STRATS; do
    for seed in $SEEDS; do
      $PY -m zoo.bench --task scenes --encoder scratch --architecture "$arch" --weighting "$strats" --seed "$seed" \
        --out "$OUT" --jobs "$JOBS" --no-figures --no-speed --quiet "${EXTRA[@]}" "$@"
    done
  done
done
$PY "$REPO/benchmarks/mtl_table.py" --task scenes --results "$OUT" --intro "${INTRO:-$REPO/benchmarks/results/scenes/intro.md}"
