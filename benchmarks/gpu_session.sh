#!/usr/bin/env bash
# One GPU session's benchmark work, in one call on one GPU (the device tool's machine):
#   1. the engine's throughput table on the idle GPU: old (per-sample loader) and new
#      (device-resident) data paths, with and without torch.compile (benchmarks/results/throughput);
#   2. scratch circlization at its default budget, alone on the GPU: the engine's <= 30 s target
#      (benchmarks/results/gpu_reference);
#   3. the model-zoo grid: every encoder x reference task at its default budget, seed 0, all 24
#      rows at once (benchmarks/results/zoo; target: <= 5 minutes);
#   4. the MTL table: the joint task under 3 architectures (hard sharing, MTAN, CGC) x 6 strategies
#      x 3 seeds, with the single-task scratch baselines of seeds 1 and 2 (seed 0's are the grid's)
#      (benchmarks/results/mtl; python benchmarks/mtl_table.py builds the table), at the lowest
#      priority beside 3; and the min-norm / norm-equalising methods (MGDA, IMTL-G, Aligned-MTL)
#      on hard sharing, plain (into the same folder) and with the threshold head left out of the
#      aggregation (leave_out=[mask], its own budget and baselines: benchmarks/results/mtl_leave_out);
#      seed 0's plain baselines are the grid's: merge benchmarks/results/zoo's scratch rows in
#      (benchmarks/merge_results.py) before building the table;
#   5. the speed columns of every combination on the then idle GPU (benchmarks/results/speed_gpu):
#      the training runs share the GPU, so their own inference timings would measure the sharing;
#      and the MTL table's step time and memory, every configuration side by side
#      (benchmarks/mtl_step.py, into mtl_step/; mtl_table.py --step-time takes them).
# Every job runs in its own process (zoo.bench's grid runner); a job past DEADLINE seconds is
# killed and recorded as a timeout row. Results are packed into $OUT/results.tgz.
#
# usage (device machine, repo root; wheels of the packages the image lacks in .whl/):
#   bash benchmarks/gpu_session.sh        (about 9 minutes: throughput 2, circlization 1.5, grid 5)
#   PART=decoders bash benchmarks/gpu_session.sh   the decoder table instead (issue 37): every decoder x
#     {scratch, resnet18, mobilenetv3_large_100} on foreground and semantic with per-pixel heads
#     (benchmarks/decoders/registry.yaml) at the default budget, seed 0, with its speed columns; then each
#     decoder's training step, zoo / smp, on the idle GPU (benchmarks/decoder_step.py)
#   PART=scenes DEADLINE=3000 bash benchmarks/gpu_session.sh   the scenes table at NYUv2's 288x384 instead (issue 39):
#     benchmarks/scenes_grid.sh on the GPU, one command per seed (its 21 configurations and 3 baselines, up to 24
#     at once), into scenes_288x384/
# The grid's finished rows are skipped when RES already holds them (carry benchmarks/results/zoo
# and set RES_ZOO to its absolute path there to finish the grid instead of starting it again).
# on a CPU machine, a smoke test of the script itself:
#   SMOKE=1 OUT=/tmp/out bash benchmarks/gpu_session.sh
set -u
REPO=$(pwd)
OUT=${OUT:-/tmp/out}
DEADLINE=${DEADLINE:-300}  # the 24 zoo rows in <= 5 minutes (the engine issue's target)
RES=/tmp/results
mkdir -p "$OUT" "$RES"
t0=$(date +%s)
log() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
# a results folder given outside $RES (RES_ZOO, RES_DEC, RES_SCENES: a carried one, to finish it) comes back as
# its own archive, $OUT/NAME.tgz: only $OUT returns from the device
pack_extra() { [ -n "$1" ] && tar czf "$OUT/$2.tgz" -C "$1" --exclude='*.pt' --exclude='*.safetensors' . ; }

if [ -z "${SMOKE:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/zoo . || exit 1
  export PYTHONPATH=/tmp/zoo:/tmp/site
  PY=python3
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  # MPS lets the many small runs' kernels share the GPU instead of time-slicing whole contexts;
  # kept only if a CUDA program runs under it
  if nvidia-cuda-mps-control -d 2>/dev/null; then
    if timeout 60 $PY -c "import torch; torch.ones(1, device='cuda').sum().item()"; then log "MPS on"
    else echo quit | nvidia-cuda-mps-control; log "MPS off (probe failed)"; fi
  else log "MPS not available"; fi
  EXTRA=()
else
  PY=${PY:-python}
  # smoke: tiny budgets so the script's plumbing runs in a minute on a CPU
  EXTRA=(--quick)
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # ~55 processes on 16 cores: one thread each
cd /tmp  # run the installed package, not the checkout (whose heads/ is not zoo.heads)
DATA="$REPO/zoo/data/mnist"
# the MNIST tasks' data lives on the GPU (batched augmentation there): no loader workers needed
COMMON=(--data-root "$DATA" --quiet --no-figures --no-speed --job-timeout "$DEADLINE")
STRATS=fixed,famo,uncertainty,upgrad,nash_mtl,fairgrad
MINNORM=mgda,imtl_g,aligned_mtl
ARCHS=hard_sharing,mtan,cgc
GRID_TASKS=foreground,circlization,semantic,joint
GRID_ENCODERS=all
# smoke: every step once, on the smallest models (a CPU has minutes, not a GPU's parallelism)
[ -n "${SMOKE:-}" ] && GRID_TASKS=foreground,joint && GRID_ENCODERS=scratch && STRATS=fixed,upgrad && ARCHS=hard_sharing,cgc \
  && MINNORM=mgda

log "start"
DEV=cuda; [ -n "${SMOKE:-}" ] && DEV=cpu
if [ "${PART:-}" = decoders ]; then
  PLAN=(); DS=(--steps 20 --chunk 2)
  [ -n "${SMOKE:-}" ] && PLAN=(--encoder scratch,resnet18 --decoder unet,pspnet) && DS=(--steps 1 --chunk 1 --size 32 --batch 2 --decoder unet,fpn)
  # one zoo.bench per line of the table's plan: an encoder, its decoders, and the encoder settings smp builds
  # those decoders' encoder with (decoder_table.py encoder_args: DeepLabV3 at output stride 8, DeepLabV3+ and
  # PAN at 16, PSPNet cut at stride 8), all at once; a row past DEC_DEADLINE seconds (default 540: a semantic row
  # of 10 epochs shares the GPU with 32 others) is a timeout row; finished rows are skipped: carry
  # benchmarks/results/decoders and set RES_DEC to it to finish the table
  $PY "$REPO/benchmarks/decoder_table.py" --plan "${PLAN[@]}" > "$RES/decoders_plan.txt" || exit 1
  while IFS=$'\t' read -r enc decs eargs; do
    EA=(); for a in $eargs; do EA+=(--encoder-arg "$a"); done
    n=$(echo "$decs" | tr ',' '\n' | wc -l)  # one job per decoder: 33 at once for the whole table
    $PY -m zoo.bench --registry "$REPO/benchmarks/decoders/registry.yaml" --task foreground,semantic \
      --encoder "$enc" --decoder "$decs" "${EA[@]}" --out "${RES_DEC:-$RES/decoders}" --jobs "$n" \
      --data-root "$DATA" --quiet --no-figures --job-timeout "${DEC_DEADLINE:-540}" "${EXTRA[@]}" >> "$RES/decoders.log" 2>&1 &
  done < "$RES/decoders_plan.txt"
  wait
  log "decoder table done"
  $PY "$REPO/benchmarks/decoder_table.py" --results "${RES_DEC:-$RES/decoders}" \
    --intro "$REPO/benchmarks/results/decoders/intro.md" >> "$RES/decoders.log" 2>&1
  timeout 120 $PY "$REPO/benchmarks/decoder_step.py" --device $DEV "${DS[@]}" --out "$RES/decoders_step" \
    > "$RES/decoders_step.log" 2>&1
  log "decoder step time done ($?)"
  pack_extra "${RES_DEC:-}" decoders
  cd "$RES" && tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.safetensors' . && ls -la "$OUT"
  log "packed"
  exit 0
fi
if [ "${PART:-}" = scenes ]; then
  # the scenes table at NYUv2's 288x384 (issue 39): 3 architectures x 7 strategies x 3 seeds with each seed's
  # single-task baselines (benchmarks/scenes_grid.sh); finished rows are skipped, so carry the folder and set
  # RES_SCENES to it to go on. A run past DEADLINE is recorded as a timeout row (raise DEADLINE for this part).
  SOUT=${RES_SCENES:-$RES/scenes_288x384}; SJ=24; SIZE=(--task-arg 'size=[288, 384]')
  # this script's own ARCHS/STRATS are the MNIST table's: the scenes grid's lists are named apart, set here
  SA="hard_sharing mtan cgc"; SS="fixed,uncertainty dwa,famo upgrad,cagrad,nash_mtl"; SD="0 1 2"
  [ -n "${SMOKE:-}" ] && SJ=2 && SIZE=(--task-arg 'size=[32, 32]') && SA=hard_sharing && SS=fixed,upgrad && SD=0
  PY=$PY OUT="$SOUT" JOBS=$SJ SCENE_ARCHS="$SA" SCENE_STRATS="$SS" SCENE_SEEDS="$SD" SMOKE=${SMOKE:-} \
    INTRO="$REPO/benchmarks/results/scenes_288x384/intro.md" \
    bash "$REPO/benchmarks/scenes_grid.sh" "${SIZE[@]}" --device $DEV --job-timeout "$DEADLINE" > "$RES/scenes.log" 2>&1
  log "scenes table done ($?)"
  tail -25 "$RES/scenes.log"
  pack_extra "${RES_SCENES:-}" scenes_288x384
  cd "$RES" && tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.safetensors' . && ls -la "$OUT"
  log "packed"
  exit 0
fi
TP=(--steps 40 --compile)
# smoke: one task, no compile (compiling on a 2-core CPU alone outlasts the step's time limit)
[ -n "${SMOKE:-}" ] && TP=(--steps 3 --chunk 3 --task foreground)
timeout 120 $PY "$REPO/benchmarks/throughput.py" --device $DEV "${TP[@]}" --data-root "$DATA" \
  --out "$RES/throughput" > "$RES/throughput.log" 2>&1
log "throughput done ($?)"
tail -5 "$RES/throughput.log"
timeout 90 $PY -m zoo.bench --task circlization --encoder scratch --out "$RES/gpu_reference" --data-root "$DATA" \
  --quiet --no-figures "${EXTRA[@]}" > "$RES/gpu_reference.log" 2>&1
log "circlization reference done ($?)"
grep -h "train_seconds\|accuracy\|gated_iou" "$RES/gpu_reference.log" | head -4
$PY -m zoo.bench --task "$GRID_TASKS" --encoder "$GRID_ENCODERS" --out "${RES_ZOO:-$RES/zoo}" --jobs 24 "${COMMON[@]}" "${EXTRA[@]}" \
  > "$RES/zoo.log" 2>&1 &
# the strategy runs at the lowest CPU priority: the grid comes first, they use what it leaves
nice -n 19 $PY -m zoo.bench --task joint --encoder scratch --weighting $STRATS --architecture $ARCHS --seed 0 \
  --no-baselines --out "$RES/mtl" --jobs 12 "${COMMON[@]}" "${EXTRA[@]}" > "$RES/mtl0.log" 2>&1 &
for seed in 1 2; do
  nice -n 19 $PY -m zoo.bench --task joint --encoder scratch --weighting $STRATS --architecture $ARCHS --seed $seed \
    --out "$RES/mtl" --jobs 12 "${COMMON[@]}" "${EXTRA[@]}" > "$RES/mtl$seed.log" 2>&1 &
done
for seed in 0 1 2; do
  nice -n 19 $PY -m zoo.bench --task joint --encoder scratch --weighting $MINNORM --seed $seed --no-baselines \
    --out "$RES/mtl" --jobs 6 "${COMMON[@]}" "${EXTRA[@]}" > "$RES/minnorm$seed.log" 2>&1 &
  nice -n 19 $PY -m zoo.bench --task joint --encoder scratch --weighting $MINNORM --seed $seed \
    --weighting-arg 'leave_out=[mask]' --out "$RES/mtl_leave_out" --jobs 6 "${COMMON[@]}" "${EXTRA[@]}" \
    > "$RES/leave_out$seed.log" 2>&1 &
done
wait
log "training done"
nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>/dev/null
timeout 75 $PY "$REPO/benchmarks/speed.py" --task "$GRID_TASKS" --encoder "$GRID_ENCODERS" --out "$RES/speed_gpu" \
  --data-root "$DATA" "${EXTRA[@]}" > "$RES/speed.log" 2>&1
log "speed done ($?)"
# the MTL table's step-time and memory columns, every configuration side by side on the idle GPU
# (the table's runs shared it): python benchmarks/mtl_table.py --step-time mtl_step/cuda.json
MS=(--steps 20); [ -n "${SMOKE:-}" ] && MS=(--steps 2 --chunk 1 --encoder-arg width=4 --train-limit 64)
timeout 90 $PY "$REPO/benchmarks/mtl_step.py" --device $DEV --architecture $ARCHS --weighting $STRATS,$MINNORM \
  "${MS[@]}" --data-root "$DATA" --out "$RES/mtl_step" > "$RES/mtl_step.log" 2>&1
log "mtl step time done ($?)"
# run folders hold checkpoints (too big to bring back): keep the tables, logs and histories
pack_extra "${RES_ZOO:-}" zoo
cd "$RES" && tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.safetensors' . && ls -la "$OUT"
log "packed"
