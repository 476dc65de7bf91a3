"""Training cost of the pairwise path's log form (``contraction="logsumexp"``: the loop over
states of :class:`~pgmunfold.infer.pairwise.LogStateReduce`, which every max-product run and
``"auto"`` on wide tables take). Model: ``N x N`` 4-neighbour grids of ``K`` states (pairwise
tables ~ 0.5 N(0, 1), unary ~ N(0, 1)), ``--iters`` iterations, damping 0.5, float32; with
``--batch B > 1`` a ``(B, N * N, K)`` unary input. Per grid and semiring, the fastest of
``--repeats`` of: a no-grad forward, a forward with autograd, and the backward of the loss
(the marginals of state 0, plus ``log Z`` for sum-product), in milliseconds per iteration,
with backward over forward (with autograd) and forward plus backward over the no-grad forward.
To compare two versions of the package in one sitting, run it from each checkout (``-m``
puts the current directory first on ``sys.path``) with a ``--label``, alternating.
Run: ``python -m benchmarks.log_form_backward [--grids 150:4 100:8 50:16] [--iters 20]
[--repeats 4] [--batch 1] [--semirings sum max] [--threads 1] [--label NEW] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Literal

import numpy as np
import torch

import pgmunfold as pu
from benchmarks.common import write_json


def grid(n: int, k: int, seed: int = 0) -> pu.FactorGraph:
    """The ``n x n`` grid of ``k`` states described in the module docstring."""
    rng = np.random.default_rng(seed)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (n, n), k)
    ids = x.ids
    right = np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], -1)
    down = np.stack([ids[:-1, :].ravel(), ids[1:, :].ravel()], -1)
    edges = np.concatenate([right, down])
    fg.add_factors(edges, 0.5 * rng.normal(size=(len(edges), k, k)))
    fg.add_factors(ids.reshape(-1, 1), rng.normal(size=(n * n, k)))
    return fg


def measure(
    n: int, k: int, semiring: Literal["sum", "max"], iters: int, repeats: int, batch: int
) -> dict[str, Any]:
    """One row: milliseconds per iteration (fastest of ``repeats``) of the no-grad forward,
    the forward with autograd and the backward."""
    net = pu.compile(
        grid(n, k), iterations=iters, damping=0.5, contraction="logsumexp", semiring=semiring
    )
    kw: dict[str, Any] = {}
    if batch > 1:
        kw["unary"] = torch.randn(batch, n * n, k, generator=torch.Generator().manual_seed(1))
    best = [float("inf")] * 3
    for _ in range(repeats):
        with torch.no_grad():
            t0 = time.perf_counter()
            net(**kw)
            best[0] = min(best[0], time.perf_counter() - t0)
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = net(**kw)
        loss = out.log_marginals.exp()[..., 0].sum()
        if semiring == "sum":
            loss = loss + out.log_partition.sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        best[1] = min(best[1], t1 - t0)
        best[2] = min(best[2], t2 - t1)
    ng, fwd, bwd = (b * 1e3 / iters for b in best)
    return {
        "N": n,
        "K": k,
        "semiring": semiring,
        "batch": batch,
        "path": "pairwise" if net.pairwise_fast else "other",
        "nograd_ms_per_iter": ng,
        "fwd_ms_per_iter": fwd,
        "bwd_ms_per_iter": bwd,
        "bwd_over_fwd": bwd / fwd,
        "fwd_bwd_over_nograd": (fwd + bwd) / ng,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", nargs="+", default=["150:4", "100:8", "50:16"], help="N:K")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--semirings", nargs="+", choices=["sum", "max"], default=["sum", "max"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--label", default="", help="a prefix of each printed row (A/B runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), pgmunfold from "
        f"{pu.__file__}; ms per iteration, fastest of {args.repeats}"
    )
    rows = []
    for spec in args.grids:
        n, k = (int(v) for v in spec.split(":"))
        for semiring in args.semirings:
            r = measure(n, k, semiring, args.iters, args.repeats, args.batch)
            rows.append(r)
            print(
                f"{args.label} N={n} K={k} B={args.batch} {semiring}: ms/it nograd "
                f"{r['nograd_ms_per_iter']:.2f} fwd {r['fwd_ms_per_iter']:.2f} bwd "
                f"{r['bwd_ms_per_iter']:.2f} (f+b)/ng {r['fwd_bwd_over_nograd']:.1f} "
                f"bwd/fwd {r['bwd_over_fwd']:.2f}",
                flush=True,
            )
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
