#!/usr/bin/env bash
# The whole GPU check in one run, for a machine with an NVIDIA GPU (well under 10 minutes on one H200):
#   1. every lesson's solution graded with --profile gpu, one GPU per worker (capstones train at full size);
#   2. the fill-level benchmark: the seed's recipe against the course's, MAE against seconds;
#   3. every figure printed, and copied under $OUT (or build/gpu_check) when that is set.
#
#   bash benchmarks/gpu_check.sh            # here, in the repository root, with the course installed
#   CPU_DRY_RUN=1 bash benchmarks/gpu_check.sh   # the same steps on a CPU in the ci profile, to test the script
#
# On a machine whose Python lacks the course's packages (fastai, nbgrader, nbclient, ipykernel...), run
# `bash benchmarks/gpu_wheels.sh` first where pip works: it saves them as wheels under .whl/, which this script
# installs offline into /tmp/site. Nothing is downloaded here: data are made by course_lib.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
RESULTS=${OUT:-build/gpu_check}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
exec > >(tee "$LOG") 2>&1
PROFILE=gpu
[ "${CPU_DRY_RUN:-0}" = 1 ] && PROFILE=ci
export PYTHONUNBUFFERED=1 COURSE_PROFILE=$PROFILE COURSE_DATA_DIR=${COURSE_DATA_DIR:-/tmp/vwb-data-$PROFILE}
SECONDS=0
step() { printf '\n== %s (%d s in)\n' "$1" "$SECONDS"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  step "installing the carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "the carried wheels did not install"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi

step "the device"
$PY - <<'PY' || { echo "no usable CUDA device: this check needs a GPU (CPU_DRY_RUN=1 tests the script on a CPU)"; exit 1; }
import os
import torch
if os.environ.get("CPU_DRY_RUN") == "1":
    print("CPU dry run: the ci profile on the CPU; no figure from it is a GPU figure")
    raise SystemExit(0)
assert torch.cuda.is_available(), "torch sees no CUDA device"
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")
PY
GPUS=$($PY -c "import torch; print(max(1, torch.cuda.device_count()))")

step "data for the $PROFILE profile"
timeout 240 $PY -m course_lib.data --profile "$PROFILE" || echo "making the $PROFILE-profile data failed or ran past 240 s"
$PY -m ipykernel install --user --name vision-workbook --display-name "Vision Workbook" >/dev/null 2>&1 || true

step "grading each lesson's solution with --profile $PROFILE"
CLASS=/tmp/vwb-gpu-class
rm -rf "$CLASS" "$RESULTS/grades"
for src in solutions/*/*.ipynb; do
  lesson=$(basename "$(dirname "$src")")
  # Handed in as the offline student, whose widget answers the solutions hold.
  mkdir -p "$CLASS/offline/$lesson" && cp "$src" "$CLASS/offline/$lesson/"
done
SANDBOX=()
$PY -c "from autograder.sandbox import available; ok, why = available(); print('sandbox:', ok, why); raise SystemExit(0 if ok else 1)" \
  || SANDBOX=(--no-sandbox)
g0=$SECONDS
timeout 420 $PY -m autograder grade "$CLASS" --out "$RESULTS/grades" --profile "$PROFILE" --workers "$GPUS" "${SANDBOX[@]}" --fresh
echo "grading took $((SECONDS - g0)) s with $GPUS worker(s)"
$PY - "$RESULTS/grades" "$PROFILE" <<'PY'
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
if not (out / "grades.csv").exists():
    raise SystemExit("no grades.csv: the grading run did not finish")
rows = list(csv.DictReader(open(out / "grades.csv")))
for r in rows:
    print(f"{r['lesson']:22s} {r['exercise']:28s} {float(r['score']):5.2f}/{float(r['max_score']):<4g} {r['status']}")
got, full = sum(float(r["score"]) for r in rows), sum(float(r["max_score"]) for r in rows)
print(f"solutions, profile {sys.argv[2]}: {got:g} / {full:g} points (written answers wait for a person)")
for line in (out / "totals.csv").read_text().splitlines():
    print("totals:", line)
PY

step "fill-level benchmark (seed recipe against the course's)"
timeout 200 $PY benchmarks/fill_level.py --budget "$( [ "$PROFILE" = gpu ] && echo 60 || echo 10 )" || echo "the fill-level benchmark failed or ran past 200 s"

step "done"
