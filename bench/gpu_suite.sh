#!/usr/bin/env bash
# GPU suite: one prepared run (~8 minutes on one GPU) of the figures the CPU box cannot give.
#
#   bench/gpu_suite.sh            # on a machine with a CUDA GPU; prints everything to stdout
#   bench/gpu_suite.sh --smoke    # the same steps, tiny, on the CPU (what tests/test_evaluation.py runs)
#
# 1. training images/s of each method at its paper resolution and P x K (fp32, bf16 autocast +
#    channels_last, and the same under torch.compile for MPN and DSA-reID), and inference ms/image
#    beside the papers' per-image figures (MPN Table 9, Titan V: MPN° 10.9 ms, DSA-reID 34.7 ms);
# 2. the loader's stall share of the baseline's training step (TrainLoader cached and streaming);
# 3. evaluation and re-ranking at Market-1501 and MSMT17 size with the features on the GPU
#    (distances there; ranking and the sparse re-ranking steps in the compiled CPU kernels).
# Environment: PYTHON (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1

step() { echo; echo "### $* ($(date -u +%H:%M:%S))"; }

if [ "$smoke" = 1 ]; then
    step "1. training step (smoke, CPU)"
    "$PY" bench/bench_train_step.py --smoke --device cpu --methods baseline mpn dsa \
        --iters 1 --warmup 1 --repeats 1 --no-compile --infer-batch 16
    step "2. loader stall share (smoke, CPU)"
    "$PY" bench/bench_loader.py --stall-method baseline --backbone resnet18 --synthetic --images 128 \
        --ids 16 --size 64 32 --P 4 --K 4 --batches 2 --warmup 1 --workers 1
    step "3. evaluation and re-ranking (smoke, CPU)"
    "$PY" bench/bench_eval.py --num-query 200 --num-gallery 800 --dim 64 --msmt-query 300 \
        --msmt-gallery 1500 --msmt-dim 64 --repeats 1 --msmt-rerank --device cpu
    exit 0
fi

"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "gpu_suite.sh needs a CUDA GPU (use --smoke on the CPU)"
print(torch.cuda.get_device_name(0), torch.__version__, f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
nproc
step "1a. training step, methods without compile"
timeout 150 "$PY" bench/bench_train_step.py --device cuda --methods baseline alignedreid sn --no-compile \
    --iters 10 --warmup 3 --repeats 2 || echo "(1a timed out or failed)"
step "1b. training step, MPN and DSA-reID with torch.compile"
timeout 240 "$PY" bench/bench_train_step.py --device cuda --methods mpn dsa --iters 10 --warmup 3 --repeats 2 \
    || echo "(1b timed out or failed)"
step "2. loader stall share, baseline resnet50 256x128 P16xK4, bf16 + channels_last"
timeout 60 "$PY" bench/bench_loader.py --stall-method baseline --device cuda --synthetic --images 2048 \
    --ids 128 --workers 4 --cores 0 --batches 30 --warmup 5 || echo "(2 timed out or failed)"
step "3. evaluation and re-ranking at Market-1501 and MSMT17 size, features on the GPU"
timeout 150 "$PY" bench/bench_eval.py --device cuda --msmt-rerank || echo "(3 timed out or failed)"
