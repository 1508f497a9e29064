#!/usr/bin/env bash
# The scenes table (issue 39): `scenes` under 3 architectures x 7 strategies x 3 seeds, each seed with its three
# single-task baselines, into one results folder, then the table (benchmarks/mtl_table.py --task scenes).
# Finished rows are skipped, so running it again goes on where it stopped; a configuration that fails or times
# out is a row of its own and the grid goes on past it (the exit status says so at the end).
# With JOBS=1 (the CPU), hard sharing first and every strategy group over its 3 seeds before the next, so what is
# done is always whole configurations; with JOBS>1 (a GPU), one command per seed runs all 21 configurations.
#
#   JOBS=1 bash benchmarks/scenes_grid.sh                      the CPU table (64x64, one thread a run)
#   OUT=DIR JOBS=24 bash benchmarks/scenes_grid.sh --task-arg 'size=[288, 384]'   NYUv2's size (a GPU)
#   SMOKE=1 OUT=/tmp/scenes bash benchmarks/scenes_grid.sh     the plumbing, with --quick budgets
# Extra arguments go to every zoo.bench command. PY, SCENE_ARCHS, SCENE_STRATS (groups of 2 or more: a command
# of one job runs it again even when finished), SCENE_SEEDS and INTRO (the table's heading) override the defaults.
set -u
PY=${PY:-python}
OUT=${OUT:-benchmarks/results/scenes}
JOBS=${JOBS:-1}
ARCHS=${SCENE_ARCHS:-hard_sharing mtan cgc}
STRATS=${SCENE_STRATS:-fixed,uncertainty dwa,famo upgrad,cagrad,nash_mtl}
SEEDS=${SCENE_SEEDS:-0 1 2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
EXTRA=(); [ -n "${SMOKE:-}" ] && EXTRA=(--quick --encoder-arg width=4)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
failed=0
bench() {
  $PY -m zoo.bench --task scenes --encoder scratch --out "$OUT" --jobs "$JOBS" --no-figures --no-speed --quiet \
    "${EXTRA[@]}" "$@" || failed=1
}
if [ "$JOBS" -gt 1 ]; then
  for seed in $SEEDS; do
    bench --architecture "$(echo $ARCHS | tr ' ' ,)" --weighting "$(echo $STRATS | tr ' ' ,)" --seed "$seed" "$@"
  done
else
  for arch in $ARCHS; do
    for strats in $STRATS; do
      for seed in $SEEDS; do
        bench --architecture "$arch" --weighting "$strats" --seed "$seed" "$@"
      done
    done
  done
fi
$PY "$REPO/benchmarks/mtl_table.py" --task scenes --results "$OUT" --intro "${INTRO:-$REPO/benchmarks/results/scenes/intro.md}" \
  || failed=1
exit $failed
