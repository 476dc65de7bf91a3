#!/usr/bin/env bash
# The prepared GPU run of the performance issue: the CUDA correctness check of every path
# (benchmarks/gpu_check.py), then pgmunfold against PGMax on the same card
# (benchmarks/compare_pgmax.py --device cuda, eager and CUDA-graph timings).
#
# Prepare once, here (PGMax 0.6.1 is pure Python; the GPU image already has jax with CUDA,
# numba, scipy and torch):
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps pgmax==0.6.1 -d .whl
# Run on the lent machine with the device tool, carrying .whl (a few minutes; give the call a
# timeout that leaves room for one rerun):
#     bash benchmarks/device_suite.sh            # results under $OUT
# Smoke test of the same flow on a CPU machine (toy sizes, PGMax from its own environment):
#     DEVICE=cpu SMALL=1 PGMAX_PYTHON=/tmp/pgmax-venv/bin/python bash benchmarks/device_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/device_suite}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${PGMAX_PYTHON:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/pgmax-site .whl/pgmax-*.whl || echo "PGMax wheel not installed"
    export PYTHONPATH=/tmp/pgmax-site${PYTHONPATH:+:$PYTHONPATH}
    PGMAX_PYTHON=$PY
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
if [ -n "${SMALL:-}" ]; then
    sizes=(--sizes 16 --ks 2 3 --iters 5 --repeats 2)
else
    # N=1000 at K=2 only: PGMax's host-side build of the K=8 grid alone takes minutes
    sizes=(--sizes 32 300 --ks 2 8 --include-1000 --ks-1000 2 --iters 50 --repeats 5)
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ "$DEVICE" = cuda ]; then
    "$PY" -m benchmarks.gpu_check --quick 2>&1 | tee "$OUT/gpu_check.txt"
fi
"$PY" -m benchmarks.compare_pgmax --device "$DEVICE" --pgmax-python "$PGMAX_PYTHON" "${sizes[@]}" \
    --json "$OUT/compare_pgmax_$DEVICE.json" 2>&1 | tee "$OUT/compare_pgmax_$DEVICE.txt"
