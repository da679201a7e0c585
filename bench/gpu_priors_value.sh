#!/usr/bin/env bash
# The priors-value protocol (bench/bench_priors_value.py) on one GPU, sized for ~8 minutes:
# the same misaligned synthetic world at 4x the identities, rendered at 256 x 128 (DSA-reID's size;
# MPN's 384 x 128 costs 1.5x), DSAP-images S = 32 and Table 1's DSAG-Stream widths, ResNet-50
# (last stride 1, full width), P x K = 16 x 4, 240 iterations, Adam lr 8e-4 (protocol v2), MPN's own
# binarisation threshold 0.5 (not degenerate at 256 px) and part width 512, bf16 + channels_last, seeds 0-4, six runs at a
# time on the one GPU. No new run starts after TIME_BUDGET seconds of training (default 330), so the
# script ends within ~8 minutes even if the GPU is slower than expected; the report then holds the
# seeds that finished every variant. Everything goes to $OUT (default runs/gpu_priors_value).
#
#   OUT=/tmp/out bash bench/gpu_priors_value.sh              # on the GPU machine
#   TINY=1 OUT=/tmp/out bash bench/gpu_priors_value.sh       # CPU smoke test of this script, minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu_priors_value}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PREFECT_HOME=${PREFECT_HOME:-$OUT/prefect}
mkdir -p "$OUT"
"$PY" -c "import torch, zarr, prefect, cv2, pandas" 2>/dev/null \
  || { echo "this Python lacks the project's dependencies: pip install -e . (torch with CUDA first)"; exit 1; }
if [ "${TINY:-0}" = 1 ]; then
  ARGS=(--tiny --variants baseline,mpn,dsa --jobs 1)
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  ARGS=(--gpu --amp bf16 --jobs 6 --time-budget "${TIME_BUDGET:-330}" --long-baseline --diagnose)
fi
"$PY" bench/bench_priors_value.py "${ARGS[@]}" --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
cp "$OUT/bench/results.json" "$OUT/results.json"
[ -f "$OUT/bench/curve.png" ] && cp "$OUT/bench/curve.png" "$OUT/curve.png"
# keep what comes back small: no world, store or checkpoints in $OUT
rm -rf "$OUT/bench/world_"* "$OUT/bench/store_"* "$OUT/bench/runs/"*/*/checkpoint.pt "$OUT/bench/runs/"*/*/model.pt \
  "$OUT/bench/runs/"*/*/tb "$OUT/prefect"
echo "done: $OUT/results.json"
