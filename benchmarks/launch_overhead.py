"""Small graphs: how much of a forward is launch overhead, and what removes it.

On a GPU a small grid's iteration is a few microseconds of work behind a few dozen kernel
launches, so eager execution is launch-bound. This script times one unfolded BP forward
(no autograd) four ways on the same network: eager, CUDA-graph replay (``capture_cuda_graph``
of ``benchmarks.grid_lbp``), ``torch.compile(net)`` and ``torch.compile(net,
mode="reduce-overhead")`` (which itself records CUDA graphs), with the compile time of each.
On a CPU only eager and the default ``torch.compile`` are timed. ``--compile-steps`` adds
``pu.compile(..., compile_steps=True)`` (one compiled iteration, reused; inductor; the pairwise
path, so ``K > 2``: binary grids take the binary path, which it does not change).

Run: ``python -m benchmarks.launch_overhead [--sizes 32 100] [--ks 2 8] [--iters 20]
[--device cuda] [--backend inductor] [--compile-steps] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import pgmunfold as pu
from benchmarks.common import add_grid_args, device_sync, median_time, write_json
from benchmarks.grid_lbp import build, capture_cuda_graph


def measure(
    n: int,
    k: int,
    iters: int,
    device: str,
    repeats: int,
    backend: str = "inductor",
    compile_steps: bool = False,
) -> dict[str, Any]:
    fg, _ = build(n, k)
    # "matmul": no host read of the tables' range, which graph capture and dynamo cannot take
    # (the potentials ~ 0.5 N(0, 1) pass the "auto" range check anyway)
    net = pu.compile(fg, iterations=iters, damping=0.5, contraction="matmul").to(device)
    sync = device_sync(device)
    row: dict[str, Any] = {"N": n, "K": k, "iters": iters}
    with torch.no_grad():
        ref = net().log_marginals
        sync()
        row["eager_s_per_iter"] = median_time(net, sync, repeats) / iters
        if device == "cuda":
            graph, out = capture_cuda_graph(net)
            graph.replay()
            sync()
            row["graph_s_per_iter"] = median_time(graph.replay, sync, repeats) / iters
            row["graph_max_diff"] = float((out.log_marginals - ref).abs().max())
        modes = ["default", "reduce-overhead"] if device == "cuda" else ["default"]
        for mode in modes:
            torch._dynamo.reset()
            compiled = torch.compile(net, mode=None if mode == "default" else mode, backend=backend)
            t0 = time.perf_counter()
            for _ in range(3):  # reduce-overhead records its graphs on a later call
                got = compiled().log_marginals
            sync()
            row[f"compile_{mode}_s"] = time.perf_counter() - t0
            row[f"compile_{mode}_max_diff"] = float((got - ref).abs().max())
            row[f"compile_{mode}_s_per_iter"] = median_time(compiled, sync, repeats) / iters
        if compile_steps:
            steps = pu.compile(
                fg, iterations=iters, damping=0.5, contraction="matmul", compile_steps=True
            ).to(device)
            t0 = time.perf_counter()
            got = steps().log_marginals
            sync()
            row["compile_steps_s"] = time.perf_counter() - t0
            row["compile_steps_max_diff"] = float((got - ref).abs().max())
            row["compile_steps_s_per_iter"] = median_time(steps, sync, repeats) / iters
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_grid_args(ap, sizes=[32, 100], ks=[2, 8], iters=20, repeats=10)
    ap.add_argument("--backend", default="inductor", help="torch.compile backend")
    ap.add_argument("--compile-steps", action="store_true", help="also compile_steps=True")
    args = ap.parse_args(argv)
    print(f"{args.device}, torch {torch.__version__}; seconds per iteration, no autograd")
    cols = ["eager", "graph", "compile_default", "compile_reduce-overhead", "compile_steps"]
    head = "".join(f"{c:>25}" for c in cols) + f"{'compile s':>12}{'steps s':>10}"
    print(f"{'N':>5}{'K':>3}" + head)
    rows = []
    for k in args.ks:
        for n in args.sizes:
            r = measure(
                n, k, args.iters, args.device, args.repeats, args.backend, args.compile_steps
            )
            rows.append(r)
            cells = [r.get(f"{c}_s_per_iter") for c in cols]
            print(
                f"{n:>5}{k:>3}"
                + "".join(f"{c:>25.2e}" if c is not None else f"{'-':>25}" for c in cells)
                + f"{r['compile_default_s']:>12.1f}"
                + (f"{r['compile_steps_s']:>10.1f}" if "compile_steps_s" in r else f"{'-':>10}"),
                flush=True,
            )
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
