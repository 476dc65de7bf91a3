"""Cost of differentiating through unfolded BP: backward time over forward time, and the memory
autograd keeps, with and without per-iteration checkpointing (``compile(..., checkpoint=True)``).

Memory is measured exactly, as the bytes of the distinct tensors autograd saves for the backward
pass (a ``saved_tensors_hooks`` pack hook), not as process RSS: that is the part of the peak that
grows with the number of iterations; ``dMB/iter`` is its growth per extra iteration (the slope
between two ``--iters`` values). Model: the N x N grid of ``grid_lbp`` (unary ~ N(0, 1),
pairwise ~ 0.5 N(0, 1)), sum-product (``--semiring max``: max-product), ``pu.compile``'s
``--contraction`` (default ``auto``; ``logsumexp`` runs the pairwise path's log form), damping
0.5, float32, loss = log Z + sum of marginals.

Run: ``python -m benchmarks.autograd_cost [--sizes 100 300] [--ks 2 8] [--iters 20 50]
[--repeats 3] [--device cpu|cuda] [--contraction auto] [--semiring sum] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import pgmunfold as pu
from benchmarks.common import device_sync, write_json
from benchmarks.grid_lbp import build


def saved_bytes(fn: Any) -> tuple[Any, int]:
    """Run ``fn()`` and count the bytes of the distinct storages autograd saves meanwhile."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def measure(
    n: int,
    k: int,
    iters: int,
    checkpoint: bool,
    repeats: int,
    device: str = "cpu",
    contraction: str = "auto",
    semiring: str = "sum",
) -> dict[str, Any]:
    fg, _ = build(n, k)
    net = pu.compile(
        fg,
        iterations=iters,
        damping=0.5,
        checkpoint=checkpoint,
        contraction=contraction,  # type: ignore[arg-type]
        semiring=semiring,  # type: ignore[arg-type]
    ).to(device)
    u = torch.zeros(1, n * n, k, device=device)
    sync = device_sync(device)

    def loss() -> torch.Tensor:
        out = net(unary=u)
        return out.log_partition.sum() + out.log_marginals.exp().sum()

    with torch.no_grad():
        loss()
        nograd = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            loss()
            sync()
            nograd.append(time.perf_counter() - t0)
    fwd, bwd = [], []
    saved = 0
    for _ in range(repeats + 1):  # the first round is a warm-up
        net.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        value, saved = saved_bytes(loss)
        sync()
        t1 = time.perf_counter()
        value.backward()
        sync()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    f_ng, f, b = statistics.median(nograd), statistics.median(fwd[1:]), statistics.median(bwd[1:])
    return {
        "N": n,
        "K": k,
        "iters": iters,
        "checkpoint": checkpoint,
        "contraction": contraction,
        "semiring": semiring,
        "fast_path": "binary"
        if net.binary_fast
        else "pairwise"
        if net.pairwise_fast
        else "general",
        "fwd_nograd_s": f_ng,
        "fwd_s": f,
        "bwd_s": b,
        "bwd_over_fwd": b / f,
        "bwd_over_fwd_nograd": b / f_ng,
        "saved_mb": saved / 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--iters", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--contraction", default="auto", help="pu.compile's contraction")
    ap.add_argument("--semiring", choices=["sum", "max"], default="sum")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    print(
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads; times are "
        f"medians of {args.repeats}; saved = bytes autograd keeps for backward;"
        f" contraction {args.contraction}, {args.semiring}-product"
    )
    print(
        f"{'N':>5}{'K':>3}{'T':>4} {'ckpt':<5}{'path':<9}{'fwd(no-grad) s':>15}{'fwd s':>9}"
        f"{'bwd s':>9}{'bwd/fwd':>8}{'bwd/fwd(ng)':>12}{'saved MB':>10}{'dMB/iter':>9}"
    )
    for k in args.ks:
        for n in args.sizes:
            for t in args.iters:
                for ckpt in (False, True):
                    r = measure(
                        n, k, t, ckpt, args.repeats, args.device, args.contraction, args.semiring
                    )
                    # growth with T: the slope from the previous T of this configuration
                    before = [x for x in rows if (x["N"], x["K"], x["checkpoint"]) == (n, k, ckpt)]
                    r["saved_mb_per_iter"] = (
                        (r["saved_mb"] - before[-1]["saved_mb"]) / (t - before[-1]["iters"])
                        if before
                        else float("nan")
                    )
                    rows.append(r)
                    print(
                        f"{n:>5}{k:>3}{t:>4} {'ckpt' if ckpt else '-':<5}{r['fast_path']:<9}"
                        f"{r['fwd_nograd_s']:>15.3f}{r['fwd_s']:>9.3f}{r['bwd_s']:>9.3f}"
                        f"{r['bwd_over_fwd']:>8.2f}{r['bwd_over_fwd_nograd']:>12.2f}"
                        f"{r['saved_mb']:>10.1f}{r['saved_mb_per_iter']:>9.2f}",
                        flush=True,
                    )
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
