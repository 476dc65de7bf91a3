"""Fixed cost of one forward call: what a forward costs on top of its iterations.

Deep-unfolded networks run few iterations (often 1-10), so the work done once per forward
(tables in the contraction's layout, the binary path's coefficients, the residual, the
marginals and MAP states) weighs as much as several iterations. This script times no-grad
forwards of the same model compiled for ``T = 1``, a middle ``T`` and a large ``T`` (median
of ``--repeats`` calls, MAP states read), fits ``time = fixed + T * per_iter`` through the
middle and the large point, and prints the fixed part in milliseconds and in iterations.

Model: the N x N grid of :mod:`benchmarks.grid_lbp` (unary ~ N(0, 1), pairwise ~ 0.5 N(0, 1)),
sum-product BP, damping 0.5, float32. Run: ``python -m benchmarks.forward_overhead [--sizes 300
1000] [--ks 2 8] [--iters 1 5 20] [--repeats 7] [--threads 1] [--device cpu|cuda]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import pgmunfold as pu
from benchmarks.common import device_sync, median_time, write_json
from benchmarks.grid_lbp import build


def measure(n: int, k: int, iters: list[int], device: str, repeats: int) -> dict[str, Any]:
    """Forward times at each ``T`` in ``iters`` and the fitted fixed and per-iteration costs."""
    fg, _ = build(n, k)
    sync = device_sync(device)
    times = {}
    for t in iters:
        net = pu.compile(fg, iterations=t, damping=0.5).to(device)

        def call(net: pu.UnfoldedNetwork = net) -> None:
            net().map_states  # noqa: B018 (read: part of the call's cost)

        with torch.no_grad():
            call()  # warm-up
            times[t] = median_time(call, sync, repeats)
    mid, big = iters[-2], iters[-1]
    per_iter = (times[big] - times[mid]) / (big - mid)
    fixed = times[mid] - mid * per_iter
    path = "binary" if net.binary_fast else "pairwise" if net.pairwise_fast else "general"
    return {
        "N": n,
        "K": k,
        "path": path,
        "times_s": {str(t): s for t, s in times.items()},
        "per_iter_s": per_iter,
        "fixed_s": fixed,
        "fixed_in_iters": fixed / per_iter if per_iter > 0 else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--iters", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--repeats", type=int, default=7, help="timed calls after a warm-up")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write all rows here")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    iters = sorted(set(args.iters))
    if len(iters) < 2 or iters[0] < 1:
        ap.error("--iters needs at least two values >= 1 (the fit uses the two largest)")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads; "
        f"no-grad forward, median of {args.repeats}; fixed = the fit's intercept"
    )
    head = "".join(f"{'T=' + str(t) + ' ms':>11}" for t in iters)
    print(f"{'N':>5}{'K':>3} {'path':<9}{head}{'ms/iter':>10}{'fixed ms':>10}{'= iters':>9}")
    rows = []
    for n in args.sizes:
        for k in args.ks:
            r = measure(n, k, iters, args.device, args.repeats)
            rows.append(r)
            cols = "".join(f"{r['times_s'][str(t)] * 1e3:>11.1f}" for t in iters)
            print(
                f"{n:>5}{k:>3} {r['path']:<9}{cols}{r['per_iter_s'] * 1e3:>10.2f}"
                f"{r['fixed_s'] * 1e3:>10.1f}{r['fixed_in_iters']:>9.1f}"
            )
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
