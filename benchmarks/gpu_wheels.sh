#!/usr/bin/env bash
# Wheels of the course's packages for a GPU machine whose Python (3.12 there) has torch but not the rest:
# saved under .whl/ (ignored by git), carried to that machine and installed offline by benchmarks/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
# The course's own needs beyond torch/torchvision/numpy/matplotlib, which that machine has.
python3 -m pip download -q --only-binary=:all: --python-version "$PYV" --implementation cp "${PLAT[@]}" -d .whl \
  fastai==2.8.12 nbgrader nbclient ipykernel ipywidgets nbformat jupyter_client tqdm \
  || { echo "pip could not fetch the wheels"; exit 1; }
# torch and what the machine has already: a second version would break its install.
rm -f .whl/torch-*.whl .whl/torchvision-*.whl .whl/numpy-*.whl .whl/nvidia_*.whl .whl/triton-*.whl
du -sh .whl
