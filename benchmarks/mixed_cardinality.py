"""Mixed cardinalities: a chain of binary variables with a few variables of many states. The graph:
``N`` binary variables in a chain (pairwise tables ~ 0.5 N(0, 1), unary ~ N(0, 1)), plus
``--count`` variables of ``k`` states, each tied by one ``(k, 2)`` table to a binary variable
spread along the chain. Every path stores messages padded to the largest cardinality, except the
enumerated contraction's loops (with autograd and without), which keep only the states that exist;
the pairwise path also pads every table to ``k x k``. For each ``k`` the script compiles the model
with each ``--contractions`` (``auto``, the default choice; ``logsumexp``, which keeps the pairwise
path for ``k`` up to 64; ``enumerate`` with ``fast_path=False``, the general path's enumerated
contraction) and prints: the path taken, the compile time, milliseconds per iteration of a no-grad
forward (``--iters`` iterations, the forward's fixed cost included, fastest of ``--repeats``), and,
with ``--grad``, of a forward and backward of the marginals' sum.
``--algorithm mf``: parallel mean-field instead of BP.
Run: ``python -m benchmarks.mixed_cardinality [--n 100000] [--ks 8 16 32 64] [--algorithm bp]
[--count 1] [--iters 10] [--repeats 3] [--grad] [--threads 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import pgmunfold as pu
from benchmarks.common import write_json


def chain_with_large_variables(n: int, k: int, count: int, seed: int = 0) -> pu.FactorGraph:
    """``n`` binary variables in a chain, plus ``count`` variables of ``k`` states, each tied to
    one of them by a ``(k, 2)`` table (spread evenly along the chain)."""
    rng = np.random.default_rng(seed)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", n, 2)
    pairs = np.stack([x.ids[:-1], x.ids[1:]], -1)
    fg.add_factors(pairs, (0.5 * rng.standard_normal((n - 1, 2, 2))).astype(np.float32))
    fg.add_factors(x.ids[:, None], rng.standard_normal((n, 2)).astype(np.float32))
    if count:
        big = fg.add_variables("big", count, k)
        tied = x.ids[np.linspace(0, n - 1, count).astype(np.int64)]
        tables = rng.standard_normal((count, k, 2)).astype(np.float32)
        fg.add_factors(np.stack([big.ids, tied], -1), tables)
    return fg


def path_of(net: pu.UnfoldedNetwork) -> str:
    """Which path a network runs."""
    if net.binary_fast or net.mf_binary:
        return "binary"
    if net.pairwise_fast or net.mf_fast:
        return "pairwise"
    return "enumerated" if net.enumerated else "general"


def measure(fg: pu.FactorGraph, contraction: str, args: argparse.Namespace) -> dict[str, Any]:
    """Compile and time one contraction on ``fg``."""
    kw: dict[str, Any] = {"contraction": contraction}
    if contraction == "enumerate":
        kw["fast_path"] = False
    t0 = time.perf_counter()
    net = pu.compile(fg, args.algorithm, iterations=args.iters, damping=0.5, **kw)
    compile_s = time.perf_counter() - t0
    row: dict[str, Any] = {"contraction": contraction, "path": path_of(net)}
    row["compile_s"] = compile_s
    with torch.no_grad():
        net()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            net()
            times.append(time.perf_counter() - t0)
    row["ms_per_iter"] = 1e3 * min(times) / args.iters
    if args.grad:
        times = []
        net().probs.sum().backward()  # (warm-up)
        for _ in range(args.repeats):
            net.zero_grad()
            t0 = time.perf_counter()
            net().probs.sum().backward()
            times.append(time.perf_counter() - t0)
        row["grad_ms_per_iter"] = 1e3 * min(times) / args.iters
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grad", action="store_true")
    ap.add_argument("--algorithm", choices=["bp", "mf"], default="bp")
    ap.add_argument("--contractions", nargs="+", default=["auto", "logsumexp", "enumerate"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"{args.algorithm.upper()}, chain of {args.n} binary variables plus {args.count} of k "
        f"states, {args.iters} iterations, damping 0.5, float32; torch {torch.__version__} "
        f"({args.threads} threads); ms per iteration, fastest of {args.repeats}"
    )
    head = f"{'k':>5} {'contraction':>11} {'path':>10} {'compile s':>9} {'no grad':>9}"
    print(head + (f" {'fwd+bwd':>9}" if args.grad else ""))
    rows = []
    for k in args.ks:
        fg = chain_with_large_variables(args.n, k, args.count)
        for contraction in args.contractions:
            row = {"k": k, **measure(fg, contraction, args)}
            rows.append(row)
            line = (
                f"{k:>5} {contraction:>11} {row['path']:>10} {row['compile_s']:>9.2f} "
                f"{row['ms_per_iter']:>9.2f}"
            )
            if args.grad:
                line += f" {row['grad_ms_per_iter']:>9.2f}"
            print(line, flush=True)
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
