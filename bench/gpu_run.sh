#!/usr/bin/env bash
# The one device run of a session: every GPU check and timing in one go, each step time-boxed so the whole run
# fits a short device lease; results go to $OUT (copied to bench/results/ afterwards). Needs the peer wheels in
# .whl/ (see docs/performance.md) and runs from the repository root:  bash bench/gpu_run.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >"$OUT/pip.txt" 2>&1 || echo "pip install of the wheels failed (see pip.txt)"
export PYTHONPATH=$PWD/src:/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } >"$OUT/env.txt" 2>&1
# emulators on the GPU equal their CPU runs (integers, bit for bit)
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_xylo.py tests/test_loihi.py >"$OUT/gpu_tests.txt" 2>&1
tail -3 "$OUT/gpu_tests.txt"
# Triton kernels: equivalence on CUDA, then timings against the dense floor, a plain loop and SpikingJelly
timeout "${KERNELS_TIMEOUT:-150}" python3 bench/gpu_kernels.py --reps 5 --warmup 2 --json "$OUT/gpu_kernels.json" \
  >"$OUT/gpu_kernels.txt" 2>&1
tail -40 "$OUT/gpu_kernels.txt"
