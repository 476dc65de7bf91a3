"""The general path's two contractions side by side, BP and mean-field: enumerated against
per-merge.

On the general path (``fast_path=False``, or factors of arity 3 and more), flooding BP contracts
the factor tables either per merge of groups (``contraction="logsumexp"``, or ``"matmul"`` for
pairwise merges in range: a dozen ops per merge and scope position) or all at once
(``"enumerate"``: a fixed two dozen ops per iteration that gather every configuration's other
cavities). This times both on N x N grids of pairwise factors (``--arities 2``: unary plus
horizontal and vertical pairs) and of triplets (``3``: unary plus one ``(i, j), (i, j+1),
(i+1, j)`` factor per cell), unary ~ N(0, 1), tables ~ 0.5 N(0, 1), damping 0.5, without
autograd (``--algorithms bp mf``: flooding BP, parallel mean-field), and prints what
``"auto"`` takes, so that its thresholds (``pgmunfold.network._ENUMERATE_SMALL``,
``_ENUMERATE_LARGE``, ``_ENUMERATE_LARGE_BP``, over the ``gathered`` cavities per batch row)
can be checked on a machine.

``per-merge`` is ``"auto"`` without the enumerated contraction: ``contraction="matmul"`` (the
exp-domain matmul for pairwise merges, whose range it checks; the log domain for the others,
and for mean-field, which contracts no table in the exp domain); ``ratio`` = per-merge time /
enumerated time (> 1: enumerated faster).

Run: ``python -m benchmarks.enumerated [--sizes 8 32 128] [--ks 2 3] [--arities 2 3]
[--batches 1 16] [--algorithms bp mf] [--iters 20] [--repeats 5] [--threads 1]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import numpy as np
import torch

import pgmunfold as pu
from benchmarks.common import median_time, write_json
from pgmunfold.compile.enumerate import bucketed_size, enumeration_size


def triplet_or_pair_grid(n: int, k: int, arity: int, seed: int = 0) -> pu.FactorGraph:
    """An ``n x n`` grid of ``k``-state variables with unary factors and, for ``arity`` 2, the
    4-neighbour pairs, for ``arity`` 3, one triplet per cell."""
    rng = np.random.default_rng(seed)
    fg = pu.FactorGraph()
    ids = fg.add_variables("x", (n, n), k).ids
    fg.add_factors(ids.reshape(-1, 1), rng.normal(size=(n * n, k)), name="unary")
    if arity == 2:
        pairs = [np.stack([ids[:, :-1], ids[:, 1:]], -1), np.stack([ids[:-1], ids[1:]], -1)]
        scopes = np.concatenate([p.reshape(-1, 2) for p in pairs])
    elif arity == 3:
        scopes = np.stack([ids[:-1, :-1], ids[:-1, 1:], ids[1:, :-1]], -1).reshape(-1, 3)
    else:
        raise ValueError(f"--arities takes 2 or 3, got {arity}")
    fg.add_factors(scopes, 0.5 * rng.normal(size=(len(scopes),) + (k,) * arity), name="f")
    return fg


def run_row(
    n: int, k: int, arity: int, B: int, iters: int, repeats: int, algorithm: str = "bp"
) -> dict[str, Any]:
    fg = triplet_or_pair_grid(n, k, arity)
    kw: dict[str, Any] = dict(iterations=iters, damping=0.5, fast_path=False, algorithm=algorithm)
    auto = "enumerate" if pu.compile(fg, **kw).enumerated else "per-merge"  # what "auto" takes
    # "auto" without the enumerated contraction: per merge, matmul for pairwise merges (these
    # tables are in its range, which "matmul" checks at compile time)
    merge = pu.compile(fg, contraction="matmul", **kw)
    assert not merge.enumerated
    enum = pu.compile(fg, contraction="enumerate", **kw)
    u = torch.randn(
        B, merge.num_variables, merge.max_card, generator=torch.Generator().manual_seed(1)
    )
    times = {}
    with torch.no_grad():
        for name, net in (("enumerate", enum), ("per-merge", merge)):
            net(unary=u)  # warm-up
            times[name] = (
                median_time(functools.partial(net, unary=u), lambda: None, repeats) / iters
            )
        diff = float(
            (enum(unary=u).log_marginals.exp() - merge(unary=u).log_marginals.exp()).abs().max()
        )
    padded, real = enumeration_size(merge._mgroups, merge.edge_var.shape[0], merge.max_card)
    gathered = bucketed_size(merge._mgroups)
    return dict(
        algorithm=algorithm,
        N=n,
        K=k,
        arity=arity,
        B=B,
        padded=padded,
        gathered=gathered,
        unpadded=real,
        auto=auto,
        enumerate_s=times["enumerate"],
        per_merge_s=times["per-merge"],
        ratio=times["per-merge"] / times["enumerate"],
        max_abs_diff=diff,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--arities", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--algorithms", nargs="+", default=["bp"], choices=["bp", "mf"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("alg arity  K     N   B    padded  gathered  auto      ", end="")
    print("  enumerate s/iter  per-merge s/iter  ratio  max|dP|")
    rows = []
    grid = [
        (alg, arity, k, n, B)
        for alg in args.algorithms
        for arity in args.arities
        for k in args.ks
        for n in args.sizes
        for B in args.batches
    ]
    for alg, arity, k, n, B in grid:
        r = run_row(n, k, arity, B, args.iters, args.repeats, alg)
        rows.append(r)
        print(
            f"{alg:>3} {arity:5d} {k:2d} {n:5d} {B:3d} {r['padded']:9d} {r['gathered']:9d}"
            f"  {r['auto']:10s}"
            f"  {r['enumerate_s']:16.2e}  {r['per_merge_s']:16.2e}"
            f"  {r['ratio']:5.2f}  {r['max_abs_diff']:.1e}",
            flush=True,
        )
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
