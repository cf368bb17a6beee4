#!/usr/bin/env bash
# The device run of a session: GPU checks and timings in one go, each step time-boxed so the whole run fits a
# short device lease. Results are written to $RES and packed after every step into ONE archive,
# $OUT/results.tgz (the device hands back only a few files), to unpack into bench/results/.
#
#   bash bench/gpu_run.sh                                   # every step
#   STEPS="tests peers" SIZES="long large" bash bench/gpu_run.sh
#
# Steps (in this order; sparse starts first, in the background): tests (GPU-marked tests, the Triton kernel tests), kernels (bench/gpu_kernels.py:
# equivalence and timings), peers (bench/peers.py --device cuda for $SIZES), mnist (MNIST with EventProp on the
# GPU for the time left: bench/mnist.py --time-budget fits the epochs; MNIST_CONFIG picks the config), sparse
# (training runs of bench/sparse_backward.py side by side on the GPU, one process and one CPU thread each: the
# runs of SPARSE_RUNS, ';'-separated argument lists, on SPARSE_CONFIG for SPARSE_EPOCHS epochs; the trained
# weights of the runs numbered in SPARSE_KEEP come back as $OUT/sparse_N_model.pt). CPU_JOBS=1
# also runs Yin-Yang (5 seeds, 100-104) for each config in CPU_CONFIGS in the background on the cores the GPU steps
# do not use (one core per run). Needs the peer wheels in .whl/ (docs/performance.md) and, for
# training, the data under $SPIKEFORGE_DATA (default .devdata/, a copy of ../shared/data carried along).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
RES=${RES:-/tmp/gpu_results}
BUDGET=${BUDGET:-540}
STEPS=${STEPS:-"tests kernels peers mnist"}
SIZES=${SIZES:-"small medium long large recurrent"}
START=$(date +%s)
# a warm machine keeps /tmp between calls: start from empty result and run folders, so that nothing of an earlier
# call (appended run lists, other runs' logs, another run's checkpoint picked by SPARSE_KEEP) mixes into this one
rm -rf "$RES" /tmp/runs
mkdir -p "$OUT" "$RES"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
pack() {  # the per-run logs of the training jobs too, also of runs the time limit cut short
  for f in $(find /tmp/runs -name "log.json" -o -name "final.json" 2>/dev/null); do
    d="$RES/runs/$(dirname "${f#/tmp/runs/}")"; mkdir -p "$d"; cp "$f" "$d/"
  done
  tar czf "$OUT/results.tgz" -C "$RES" .
}
has() { [[ " $STEPS " == *" $1 "* ]]; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >"$RES/pip.txt" 2>&1 || echo "pip install of the wheels failed (see pip.txt)"
export PYTHONPATH=$PWD/src:/tmp/site
export SPIKEFORGE_DATA=${SPIKEFORGE_DATA:-$PWD/.devdata}
export SPIKEFORGE_KERNEL_CACHE=/tmp/sf_kernels
NCPU=$(nproc)
GPU_CORES=${GPU_CORES:-0-3}
CPU_CORES=${CPU_CORES:-4-$((NCPU - 1))}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  lscpu | grep -E "Model name|^CPU\(s\)"; } >"$RES/env.txt" 2>&1

if [ "${CPU_JOBS:-0}" = 1 ]; then  # Yin-Yang, 5 seeds (100-104) per config, one core per run
  for cfg in ${CPU_CONFIGS:-configs/yinyang-eventprop.yaml}; do
    name=$(basename "$cfg" .yaml)
    ( taskset -c "$CPU_CORES" timeout $(( BUDGET - 30 )) python3 bench/yinyang.py --config "$cfg" --seeds 5 ${YY_EPOCHS:+--epochs $YY_EPOCHS} \
        --seed 100 --workers 5 --threads 1 --out "/tmp/runs/$name" --json "$RES/yinyang_$name.json" \
        >"$RES/yinyang_$name.txt" 2>&1 ) &
  done
fi

if has sparse; then  # every run at once, in the background (collected by the final wait): each is
  # launch-bound, so the GPU takes them side by side, and the other steps run meanwhile
  REM=$(( $(left) - 25 ))
  IFS=';' read -ra RUNS <<< "${SPARSE_RUNS:---train-bands none --skip-dense;--train-bands 0.5 --skip-dense}"
  i=0
  for r in "${RUNS[@]}"; do
    i=$((i + 1))
    echo "sparse_$i: $r" >>"$RES/sparse_runs.txt"
    # shellcheck disable=SC2086
    ( timeout "$REM" python3 bench/sparse_backward.py --no-timings --threads 1 --seeds 1 --set device=cuda \
        --config "${SPARSE_CONFIG:-src/spikeforge/configs/fashion-mnist-deep.yaml}" --epochs "${SPARSE_EPOCHS:-20}" \
        --out "/tmp/runs/sparse_$i" --json "$RES/sparse_$i.json" $r >"$RES/sparse_$i.txt" 2>&1 ) &
  done
fi

if has tests; then
  taskset -c $GPU_CORES timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_xylo.py \
    tests/test_loihi.py tests/test_graphs.py tests/test_events.py tests/test_bss2.py tests/test_kernels_triton.py \
    >"$RES/gpu_tests.txt" 2>&1
  tail -3 "$RES/gpu_tests.txt"
  taskset -c $GPU_CORES timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_triton.py \
    -k "(sparse or inplace) and not interpreter" >"$RES/triton_tests.txt" 2>&1
  tail -2 "$RES/triton_tests.txt"
  pack
fi

if has kernels; then
  taskset -c $GPU_CORES timeout 120 python3 bench/gpu_kernels.py --reps 3 --warmup 2 --json "$RES/gpu_kernels.json" \
    >"$RES/gpu_kernels.txt" 2>&1
  tail -30 "$RES/gpu_kernels.txt"
  pack
fi

if has peers; then
  for size in $SIZES; do
    libs=floor,spikeforge,spikeforge_graphed,plain,snntorch,spikingjelly
    rounds=10 && limit=75
    [ "$size" = large ] && libs=floor,spikeforge,spikeforge_graphed,spikingjelly && rounds=3 && limit=120
    [ "$size" = recurrent ] && libs=floor,spikeforge,spikeforge_graphed,plain,snntorch && rounds=3
    taskset -c $GPU_CORES timeout $limit python3 bench/peers.py --size "$size" --device cuda --rounds $rounds \
      --libs $libs --timeout 30 --json "$RES/peers-cuda-$size.json" >"$RES/peers-cuda-$size.txt" 2>&1
    tail -8 "$RES/peers-cuda-$size.txt"
    pack
  done
fi

if has mnist; then  # last: it gets whatever time is left (epochs fitted by a probe; training would disturb timings)
  REM=$(( $(left) - 30 ))
  taskset -c $GPU_CORES timeout "$REM" python3 bench/mnist.py --method eventprop --datasets mnist --device "${MNIST_DEVICE:-cuda}" \
    --config "${MNIST_CONFIG:-configs/mnist-eventprop.yaml}" --time-budget $(( REM - 10 )) --workers 1 --threads 4 \
    --out /tmp/runs/mnist --json "$RES/mnist_eventprop.json" >"$RES/mnist_eventprop.txt" 2>&1
  tail -8 "$RES/mnist_eventprop.txt"
  pack
fi

wait
for i in ${SPARSE_KEEP:-}; do  # trained weights of these sparse runs, without the optimizer state (files come back
  ck=$(ls /tmp/runs/sparse_"$i"/*/last.pt 2>/dev/null | head -1)  # from the device only up to 16 MiB each)
  [ -n "$ck" ] && python3 -c "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False)
torch.save({'config': c['config'], 'model': c['model']}, sys.argv[2])" "$ck" "$OUT/sparse_${i}_model.pt"
done
pack
for f in "$RES"/yinyang_*.txt; do [ -e "$f" ] && tail -n 4 "$f"; done
echo "done in $(( $(date +%s) - START )) s"
