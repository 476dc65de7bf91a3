"""Grid benchmark: seconds per iteration and messages per second of flooding loopy BP (and
mean-field) on N x N 4-neighbour grids, with declaration + compile time and peak memory.

Model (as in the performance issue): unary ~ N(0, 1), pairwise tables ~ 0.5 N(0, 1), sum-product,
damping 0.5, float32. Run: ``python -m benchmarks.grid_lbp [--sizes 100 300 1000] [--ks 2 8]
[--iters 20] [--algorithms bp mf] [--json out.json] [--device cpu|cuda]
[--compare-pgmax /path/to/pgmax-env/bin/python]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

import numpy as np
import torch

import pgmunfold as pu
from benchmarks.common import device_sync


def build(n: int, k: int, seed: int = 0) -> tuple[pu.FactorGraph, float]:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (n, n), k)
    h = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
    v = np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2)
    fg.add_factors(x.ids.reshape(-1, 1), rng.standard_normal((n * n, k)), name="unary")
    pairs = np.concatenate([h, v])
    fg.add_factors(pairs, 0.5 * rng.standard_normal((len(pairs), k, k)), name="pairwise")
    return fg, time.perf_counter() - t0


def capture_cuda_graph(call: Any) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Capture ``call()`` (no autograd) as a CUDA graph after a warm-up call on a side stream;
    returns the graph and the captured call's output (refreshed by every replay)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = call()
    return graph, out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run(
    n: int,
    k: int,
    algorithm: str,
    iters: int,
    device: str,
    backward: bool,
    contraction: str = "auto",
    backend: str = "torch",
) -> dict:
    fg, t_decl = build(n, k)
    t0 = time.perf_counter()
    net = pu.compile(
        fg,
        algorithm=algorithm,  # type: ignore[arg-type]
        iterations=iters,
        damping=0.5,
        contraction=contraction,  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
    )
    net = net.to(device)
    t_comp = time.perf_counter() - t0
    sync = device_sync(device)
    with torch.no_grad():
        net()  # warm-up
        sync()
        t0 = time.perf_counter()
        out = net()
        sync()
        t_fwd = time.perf_counter() - t0
    row = {
        "algorithm": algorithm,
        "N": n,
        "K": k,
        "iters": iters,
        "declare_s": t_decl,
        "compile_s": t_comp,
        "s_per_iter": t_fwd / iters,
        # factor-to-variable messages of the pairwise factors per second
        "msgs_per_s": 2 * (2 * n * (n - 1)) * iters / t_fwd,
        "peak_rss_gb": peak_rss_gb(),
        "logz": float(out.log_partition),
    }
    if device == "cuda":
        # CUDA-graph replay of the whole unfolded forward: removes launch overhead
        g, static_out = capture_cuda_graph(net)
        g.replay()
        sync()
        reps = 5
        t0 = time.perf_counter()
        for _ in range(reps):
            g.replay()
        sync()
        row["graph_s_per_iter"] = (time.perf_counter() - t0) / reps / iters
        row["graph_logz"] = float(static_out.log_partition)
        row["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        torch.cuda.reset_peak_memory_stats()
    if backward:
        t0 = time.perf_counter()
        out = net()
        out.log_partition.backward()
        sync()
        row["fwd_bwd_over_fwd"] = (time.perf_counter() - t0) / t_fwd
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--algorithms", nargs="+", default=["bp", "mf"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backward", action="store_true", help="also time forward+backward")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--contraction",
        default="auto",
        choices=["auto", "logsumexp", "matmul"],
        help="pairwise contraction; CUDA-graph capture needs logsumexp or matmul (no host read)",
    )
    ap.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "triton"],
        help="triton: the fused kernels (CUDA, no-grad forwards; --backward times the torch ones)",
    )
    ap.add_argument(
        "--compare-pgmax",
        metavar="PYTHON",
        default=None,
        help="also run PGMax (the interpreter of its own environment) on the same BP grids, "
        "through benchmarks.compare_pgmax, and print the ratio per row",
    )
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    hdr = f"{'alg':<4}{'N':>6}{'K':>4}{'decl s':>9}{'comp s':>9}{'s/iter':>11}"
    hdr += f"{'Mmsg/s':>9}{'RSS GB':>8}"
    print(hdr + ("  bwd/fwd" if args.backward else ""))
    for alg in args.algorithms:
        for k in args.ks:
            for n in args.sizes:
                r = run(
                    n,
                    k,
                    alg,
                    args.iters,
                    args.device,
                    args.backward,
                    args.contraction,
                    args.backend,
                )
                r["backend"] = args.backend
                rows.append(r)
                line = (
                    f"{alg:<4}{n:>6}{k:>4}{r['declare_s']:>9.2f}{r['compile_s']:>9.2f}"
                    f"{r['s_per_iter']:>11.2e}{r['msgs_per_s'] / 1e6:>9.1f}{r['peak_rss_gb']:>8.2f}"
                )
                if args.backward:
                    line += f"{r['fwd_bwd_over_fwd']:>9.2f}"
                if "graph_s_per_iter" in r:
                    line += f"  cuda-graph s/iter {r['graph_s_per_iter']:.2e}"
                    line += f"  GPU peak {r['gpu_peak_gb']:.2f} GB"
                print(line, flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    if args.compare_pgmax and args.device == "cpu" and "bp" in args.algorithms:
        from benchmarks import compare_pgmax

        print()
        cmd = ["--pgmax-python", args.compare_pgmax, "--iters", str(args.iters)]
        small = [n for n in args.sizes if n != 1000]
        cmd += ["--sizes", *map(str, small or [32]), "--ks", *map(str, args.ks)]
        if 1000 in args.sizes:
            cmd += ["--include-1000", "--ks-1000", *map(str, args.ks)]
        if args.json:
            cmd += ["--json", args.json.removesuffix(".json") + "_pgmax.json"]
        compare_pgmax.main(cmd)


if __name__ == "__main__":
    main()
