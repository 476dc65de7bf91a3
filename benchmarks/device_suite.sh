#!/usr/bin/env bash
# The prepared GPU run of the performance issue: the CUDA correctness check of every path
# (benchmarks/gpu_check.py), then pgmunfold against PGMax on the same card
# (benchmarks/compare_pgmax.py --device cuda, eager and CUDA-graph timings; graphs with hubs,
# benchmarks/hub_graphs.py), the bandwidth
# roofline, the cost of autograd, BP and mean-field on the grids, and launch overhead on small
# graphs (CUDA graphs against torch.compile).
#
# Prepare once, here (PGMax 0.6.1 is pure Python; the GPU image already has jax with CUDA,
# numba, scipy and torch):
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps pgmax==0.6.1 -d .whl
# Run on the lent machine with the device tool, carrying .whl (every step has its own time
# limit, 15.5 minutes in all, and writes its table under $OUT as it goes; ONLY=regex picks
# steps, so a short device budget can run a few):
#     bash benchmarks/device_suite.sh            # results under $OUT
# With little device time, the fused Triton kernels (backend="triton", not yet timed) first:
#     ONLY='gpu_check|compare_triton|tiles' bash benchmarks/device_suite.sh   # at most 9 min
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
    PGMAX_PYTHON=$(command -v "$PY")
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
if [ -n "${SMALL:-}" ]; then
    sizes=(--sizes 16 --ks 2 3 --iters 5 --repeats 2)
    grid=(--sizes 16 --ks 2 3 --iters 5)
    small=(--sizes 16 --ks 2 --iters 3 --repeats 2)
    roof=(--sizes 16 --ks 2 3 --iters 5 --repeats 2 --copy-mb 64)
    over=(--sizes 16 --ks 2 3 --iters 1 3 --repeats 2)
    tiles=(--sizes 16 --ks 2 3 --iters 5 --repeats 2 --tiles 1024 8192 --warps 4)
    hub=(--sizes 300 --ks 2 3 --iters 5 --repeats 2)
else
    # N=1000 at K=2 only: PGMax's host-side build of the K=8 grid alone takes minutes
    sizes=(--sizes 32 300 --ks 2 8 --include-1000 --ks-1000 2 --iters 50 --repeats 5)
    grid=(--sizes 32 300 1000 --ks 2 8 --iters 50)
    small=(--sizes 32 --ks 2 8 --iters 20 --repeats 10)
    roof=(--sizes 300 1000 --ks 2 8 --iters 50)
    over=(--sizes 300 1000 --ks 2 8 --iters 1 5 20 --repeats 7)
    tiles=(--sizes 300 1000 --ks 2 8 --iters 20 --repeats 5)
    hub=(--sizes 100000 --ks 2 8 --iters 20 --repeats 5)
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# each step has its own time limit, so that one slow step still leaves the others' results
# (ONLY=regex runs only the steps whose name matches, e.g. ONLY='compare|launch')
step() {
    local limit=$1 name=$2; shift 2
    if [ -n "${ONLY:-}" ] && ! [[ "$name" =~ $ONLY ]]; then return; fi
    echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
}
if [ "$DEVICE" = cuda ]; then
    step 120 gpu_check "$PY" -m benchmarks.gpu_check --no-bench
fi
step 300 compare_pgmax_"$DEVICE" "$PY" -m benchmarks.compare_pgmax --device "$DEVICE" \
    --pgmax-python "$PGMAX_PYTHON" "${sizes[@]}" --json "$OUT/compare_pgmax_$DEVICE.json"
# the fused Triton kernels (backend="triton"): against PGMax and on the roofline
if [ "$DEVICE" = cuda ]; then
    step 300 compare_triton_"$DEVICE" "$PY" -m benchmarks.compare_pgmax --device "$DEVICE" \
        --backend triton --pgmax-python "$PGMAX_PYTHON" "${sizes[@]}" \
        --json "$OUT/compare_triton_$DEVICE.json"
    step 120 tiles_"$DEVICE" "$PY" -m benchmarks.fused_tiles --device "$DEVICE" \
        "${tiles[@]}" --json "$OUT/tiles_$DEVICE.json"
    step 90 roofline_triton_"$DEVICE" "$PY" -m benchmarks.roofline --device "$DEVICE" \
        --backend triton "${roof[@]}" --json "$OUT/roofline_triton_$DEVICE.json"
    step 90 grid_triton_"$DEVICE" "$PY" -m benchmarks.grid_lbp --device "$DEVICE" \
        --algorithms bp mf --backend triton "${grid[@]}" --json "$OUT/grid_triton_$DEVICE.json"
fi
# graphs with hubs (stars, Barabasi-Albert): slot buckets, against PGMax
step 180 hub_"$DEVICE" "$PY" -m benchmarks.hub_graphs --device "$DEVICE" \
    --pgmax-python "$PGMAX_PYTHON" "${hub[@]}" --json "$OUT/hub_$DEVICE.json"
step 90 roofline_"$DEVICE" "$PY" -m benchmarks.roofline --device "$DEVICE" \
    "${roof[@]}" --json "$OUT/roofline_$DEVICE.json"
step 120 autograd_"$DEVICE" "$PY" -m benchmarks.autograd_cost --device "$DEVICE" \
    --sizes 100 300 --ks 2 8 --iters 20 50 --json "$OUT/autograd_$DEVICE.json"
step 60 overhead_"$DEVICE" "$PY" -m benchmarks.forward_overhead --device "$DEVICE" \
    "${over[@]}" --json "$OUT/overhead_$DEVICE.json"
step 90 grid_"$DEVICE" "$PY" -m benchmarks.grid_lbp --device "$DEVICE" --algorithms bp mf \
    --contraction matmul "${grid[@]}" --json "$OUT/grid_$DEVICE.json"
step 150 launch_"$DEVICE" "$PY" -m benchmarks.launch_overhead --device "$DEVICE" "${small[@]}" \
    --compile-steps --json "$OUT/launch_$DEVICE.json"
