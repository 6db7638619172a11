#!/usr/bin/env bash
# Prepared GPU check of issue 17 (< 8 minutes on one H200): CUDA-marked tests, RegDB
# 2060 x 2060 full mode with each GPU backend, paper-model training images/s in fp32 and
# with bf16/fp16 autocast, extraction images/s, an end-to-end evaluation, peak GPU memory.
# Usage: benchmarks/gpu_check.sh OUT_DIR [--quick]   (JSON files land in OUT_DIR)
#   --quick: tiny sizes on whatever device exists (a dry run; on CPU it uses numba/torch).
# Every step has its own timeout; the script goes on after a failed step and exits 1 then.
set -euo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--quick]}
QUICK=${2:-}
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
status=0
DEVICE=cuda
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  if [ "$QUICK" != "--quick" ]; then
    echo "error: no CUDA device visible to $PY (torch.cuda.is_available() is False)" >&2
    exit 2
  fi
  DEVICE=cpu
fi
"$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' \
  || echo "warning: triton not importable: the triton backend will be skipped/fail" >&2

# 1. CUDA-marked tests (about 1 minute).
timeout 150 "$PY" -m pytest -q -m cuda tests/test_triton_full.py \
  --junitxml "$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1 || { echo "cuda tests failed (see $OUT/cuda_tests.log)" >&2; status=1; }
tail -n 3 "$OUT/cuda_tests.log" || true

# 2. Measurements (JSON per step; about 4 minutes on an H200).
EXTRA=()
[ "$QUICK" = "--quick" ] && EXTRA+=(--quick)
timeout 330 "$PY" benchmarks/gpu_check.py "$OUT" --device "$DEVICE" "${EXTRA[@]}" 2>&1 | tee "$OUT/gpu_check.log" \
  || { echo "measurement step failed or timed out (see $OUT/gpu_check.log)" >&2; status=1; }
exit $status
