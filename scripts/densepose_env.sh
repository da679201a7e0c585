#!/usr/bin/env bash
# Build a virtual environment that runs the detectron2 backends (densepose, maskrcnn) for real.
#
#   scripts/densepose_env.sh DETECTRON2_SRC VENV
#
# DETECTRON2_SRC: a local checkout or snapshot of facebookresearch/detectron2 (nothing is
#   downloaded from GitHub here); VENV: the folder to create (or reuse).
# Steps: torch/torchvision (CUDA wheels from PyPI; they import and run on a CPU-only machine too),
# detectron2 from source (`--no-build-isolation` so it compiles against that torch; without nvcc it
# builds the CPU ops only), the DensePose project (`--no-deps`: its setup.py names detectron2 by a
# git URL and asks for opencv-python-headless, while this package already brings OpenCV), then this
# package with its dev tools. setuptools stays below 81 because detectron2's model_zoo imports
# pkg_resources. Measured: 8.5 minutes on a loaded 2-core CPU box (torch from a local mirror).
#
# Environment: TORCH (default 2.14.1), TORCHVISION (default 0.29.1), PYTHON (default python3),
# DETECTRON2_COMMIT (recorded in provenance; default `git -C DETECTRON2_SRC rev-parse HEAD`).
# VENV may be an existing environment (e.g. a conda env: scripts/densepose_env.sh SRC "$CONDA_PREFIX").
# For CUDA ops on a GPU machine: nvcc matching torch's CUDA on PATH (environment.yml); FORCE_CUDA=1
# builds them where no GPU is visible, TORCH_CUDA_ARCH_LIST picks the architectures.
# Afterwards:  PYTHONPATH=. VENV/bin/python -m pytest -q tests/test_densepose_real.py -p no:cacheprovider
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 DETECTRON2_SRC VENV" >&2
    exit 2
fi
SRC=$(cd "$1" && pwd)
VENV=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
TORCH=${TORCH:-2.14.1}
TORCHVISION=${TORCHVISION:-0.29.1}
PYTHON=${PYTHON:-python3}
for f in "$SRC/setup.py" "$SRC/projects/DensePose/setup.py"; do
    [ -f "$f" ] || { echo "$SRC is not a detectron2 source folder: $f is missing" >&2; exit 2; }
done

start=$(date +%s)
step() { echo "[densepose_env $(( $(date +%s) - start ))s] $*"; }

step "venv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

step "torch==$TORCH torchvision==$TORCHVISION"
"${PIP[@]}" "torch==$TORCH" "torchvision==$TORCHVISION"

step "build tools"
# a current pip builds the editable installs through PEP 660 with --no-build-isolation (pip 23's
# fallback to `setup.py develop` re-enters pip with build isolation, where torch is missing)
"${PIP[@]}" --upgrade "pip>=25.1"
"${PIP[@]}" "setuptools>=68,<81" wheel ninja

# conda-forge's CUDA (environment.yml) keeps its headers in $PREFIX/targets/<arch>/include, not in
# $CUDA_HOME/include where torch's extension builder looks; CUDA_INC_PATH adds them (torch >= 2.4)
for targets in "$VENV"/targets/*-linux/include; do
    if [ -d "$targets" ] && [ -x "$VENV/bin/nvcc" ]; then
        export CUDA_HOME=${CUDA_HOME:-$(cd "$VENV" && pwd)} CUDA_INC_PATH=${CUDA_INC_PATH:-$(cd "$targets" && pwd)}
        step "conda-forge CUDA: CUDA_HOME=$CUDA_HOME CUDA_INC_PATH=$CUDA_INC_PATH"
    fi
done

step "detectron2 from $SRC (compiles its C++ ops; several minutes)"
"${PIP[@]}" --no-build-isolation -e "$SRC"

step "DensePose project"
"${PIP[@]}" --no-build-isolation --no-deps -e "$SRC/projects/DensePose"

step "this package ($REPO) with its dev tools and the densepose extra (setuptools<81, av, scipy)"
"${PIP[@]}" -e "$REPO[dev,densepose]" "torch==$TORCH" "torchvision==$TORCHVISION"

# provenance: the detectron2 commit, read by priors.backends.detectron2_model.detectron2_commit
COMMIT=${DETECTRON2_COMMIT:-$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)}
echo "$COMMIT" > "$VENV/detectron2-commit.txt"
step "detectron2 commit $COMMIT (in $VENV/detectron2-commit.txt)"

step "check"
"$VENV/bin/python" - <<'PY'
import detectron2, densepose, torch, torchvision
from detectron2 import _C  # the compiled ops
from detectron2 import model_zoo  # needs pkg_resources
from torchvision.ops import roi_align
x = roi_align(torch.rand(1, 1, 8, 8), [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], 2)
print("torch", torch.__version__, "torchvision", torchvision.__version__, "detectron2", detectron2.__version__,
      "cuda", torch.cuda.is_available(), "roi_align", tuple(x.shape))
PY
step "done"
