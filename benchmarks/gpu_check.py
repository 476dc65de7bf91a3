"""One-shot CUDA check and GPU benchmark (run on a machine with a GPU):
``python -m benchmarks.gpu_check [--quick]``.

1. Correctness on the device: BP (general K-state path, binary and pairwise fast paths,
   sequential), max-product and mean-field (fast, general and sequential) in float64 on CUDA
   equal the same networks on the CPU, with and without autograd; gradients are finite; the
   fast paths replay as CUDA graphs with their eager result. The fused Triton kernels
   (``backend="triton"``, CUDA only) are compared with the torch backend on the CPU.
2. The grid benchmark (``benchmarks.grid_lbp``) on CUDA, eager and CUDA-graph replay.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch

import pgmunfold as pu
from benchmarks import grid_lbp
from pgmunfold.compile import wiring


def _grid(n: int, k: int, hard: bool = False) -> tuple[pu.FactorGraph, pu.VariableArray]:
    rng = np.random.default_rng(0)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (n, n), k)
    pairs = np.concatenate(
        [
            np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2),
            np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2),
        ]
    )
    fg.add_factors(x.ids.reshape(-1, 1), rng.normal(size=(n * n, k)), name="unary")
    tabs = 0.5 * rng.normal(size=(len(pairs), k, k))
    if hard:
        tabs[:, 0, k - 1] = -np.inf
    fg.add_factors(pairs, tabs, name="pairwise")
    return fg, x


def correctness(device: str) -> bool:
    ok = True
    cases: list[tuple[str, int, bool, dict[str, Any]]] = [
        ("bp binary fast", 2, False, {}),
        ("bp K=3 pairwise fast", 3, False, {}),
        ("bp K=8 pairwise fast", 8, False, {}),
        ("bp K=3 pairwise matmul", 3, False, {"contraction": "matmul"}),
        ("bp K=3 general", 3, False, {"fast_path": False}),
        ("bp K=3 hard zeros", 3, True, {}),
        ("mf K=3 fast", 3, False, {"algorithm": "mf"}),
        ("mf K=3 general", 3, False, {"algorithm": "mf", "fast_path": False}),
        ("bp sequential", 3, False, {"schedule": "sequential"}),
        ("bp max-product", 3, False, {"semiring": "max"}),
        ("mf sequential", 3, False, {"algorithm": "mf", "schedule": "sequential"}),
        ("bp untied+checkpoint", 2, False, {"untie": True, "checkpoint": True}),
        ("bp K=2 triton", 2, False, {"backend": "triton"}),
        ("bp K=8 triton", 8, False, {"backend": "triton"}),
        ("bp K=3 max triton", 3, False, {"semiring": "max", "backend": "triton"}),
        ("bp K=3 hard zeros triton", 3, True, {"backend": "triton"}),
        ("mf K=2 triton", 2, False, {"algorithm": "mf", "backend": "triton"}),
        ("mf K=8 triton", 8, False, {"algorithm": "mf", "backend": "triton"}),
        # slot buckets (hubs), forced on the grid: against the one-table CPU reference
        ("bp binary buckets", 2, False, {"buckets": True}),
        ("bp K=3 buckets", 3, False, {"buckets": True}),
        ("bp K=3 hard zeros buckets", 3, True, {"buckets": True}),
        ("bp K=3 general buckets", 3, True, {"buckets": True, "fast_path": False}),
        ("mf K=3 buckets", 3, False, {"algorithm": "mf", "buckets": True}),
    ]
    for label, k, hard, kw in cases:
        kw = dict(kw)
        buckets = kw.pop("buckets", False)
        fg, x = _grid(12, k, hard)
        u = torch.randn(
            4, 12, 12, k, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        )
        # the reference: the torch backend (the fused kernels need CUDA)
        ref_kw = {k: v for k, v in kw.items() if k != "backend"}
        cpu = pu.compile(fg, iterations=15, damping=0.3, dtype=torch.float64, **ref_kw)
        wiring._MAX_BASE_WIDTH = 1 if buckets else None  # every overflow edge to a bucket
        try:
            dev = pu.compile(fg, iterations=15, damping=0.3, dtype=torch.float64, **kw)
        finally:
            wiring._MAX_BASE_WIDTH = None
        dev = dev.to(device)
        with torch.no_grad():  # the reference
            a = cpu(unary={x: u})
        ud = u.to(device).requires_grad_()
        b = dev(unary={x: ud})
        (b.log_partition.sum() + b.log_marginals[..., 0].sum()).backward()
        d_marg = float((a.log_marginals.exp() - b.log_marginals.detach().cpu().exp()).abs().max())
        d_logz = float((a.log_partition - b.log_partition.detach().cpu()).abs().max())
        assert ud.grad is not None  # set by the backward above
        grads_ok = bool(torch.isfinite(ud.grad).all()) and all(
            p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in dev.parameters()
        )
        with torch.no_grad():  # the in-place variant (reused buffers) of the fast paths
            c = dev(unary={x: u.to(device)})
        d_ng = float((a.log_marginals.exp() - c.log_marginals.cpu().exp()).abs().max())
        good = d_marg < 1e-10 and d_logz < 1e-8 and d_ng < 1e-10 and grads_ok
        ok &= good
        print(
            f"{label:<24} max|dP|={d_marg:.1e} max|dlogZ|={d_logz:.1e} no-grad |dP|={d_ng:.1e} "
            f"grads finite={grads_ok} {'OK' if good else 'FAIL'}",
            flush=True,
        )
    return ok


def capture(device: str) -> bool:
    """Every fast path (``contraction="matmul"``) replays as a CUDA graph with the eager result."""
    ok = True
    cases: list[tuple[str, int, dict[str, Any]]] = [
        ("graph bp binary", 2, {}),
        ("graph bp K=3 pairwise", 3, {}),
        ("graph mf K=3", 3, {"algorithm": "mf"}),
        ("graph bp K=8 triton", 8, {"backend": "triton"}),
        ("graph mf K=8 triton", 8, {"algorithm": "mf", "backend": "triton"}),
    ]
    for label, k, kw in cases:
        fg, _ = _grid(12, k)
        net = pu.compile(fg, iterations=15, damping=0.3, contraction="matmul", **kw).to(device)
        with torch.no_grad():
            ref = net().log_marginals
        graph, out = grid_lbp.capture_cuda_graph(net)
        graph.replay()
        torch.cuda.synchronize()
        diff = float((out.log_marginals - ref).abs().max())
        good = diff < 1e-5
        ok &= good
        print(f"{label:<24} replay vs eager max|dlogP|={diff:.1e} {'OK' if good else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-bench", action="store_true", help="only the correctness check")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    ok = correctness(device)
    if device == "cuda":
        ok &= capture(device)
    if args.no_bench:
        return 0 if ok else 1
    sizes = ["100"] if args.quick else ["100", "300", "1000"]
    bench = ["--sizes", *sizes, "--ks", "2", "8", "--iters", "20", "--device", device]
    bench += ["--contraction", "matmul"]  # potentials ~ 0.5 N(0,1): range check passes anyway
    grid_lbp.main([*bench, "--algorithms", "bp", "mf", "--json", "/tmp/gpu_grid.json"])
    extra = ["--iters", "20", "--device", device, "--algorithms", "bp"]
    grid_lbp.main(
        ["--sizes", "300", "--ks", "2", "8", *extra, "--backward", "--contraction", "matmul"]
    )
    # the general log-domain reduction at K = 8, for comparison
    grid_lbp.main(["--sizes", "300", "1000", "--ks", "8", *extra, "--contraction", "logsumexp"])
    grid_lbp.main(["--sizes", "32", "--ks", "2", "8", *extra, "--contraction", "matmul"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
