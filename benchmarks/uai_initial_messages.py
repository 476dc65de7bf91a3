"""Why pgmunfold and PGMax part on DBN_12: the unary factors' initial messages.

pgmunfold starts flooding BP with every unary factor already sending its (normalised) table
and every other message uniform; PGMax starts with all messages uniform, so its unary
factors' messages (here the evidence) are damped in from uniform over the first iterations.
Both are the same BP map from different starting points, and on a strongly coupled model they
can reach different fixed points.

This script runs a naive reference, plain numpy in float64 (one Python loop over factors and
their scope positions, log domain, log-domain damping of the factor-to-variable messages),
from each of the two starting points, and prints, per number of iterations: the largest
difference between the reference started like pgmunfold and pgmunfold itself (float64), the
largest error of either start against the instance's exact marginals (``.MAR``), and one
variable's marginal under each start. The instance is declared as in
``benchmarks/uai_pgmax.py`` (hard zeros at ``--floor``, evidence as unary factors).

Run: ``python -m benchmarks.uai_initial_messages [--name DBN_12] [--iters 20 50 300]
[--var 40]`` (pure Python: about 2 minutes per 100 iterations on DBN_12, this 2-core CPU).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import pgmunfold as pu
from benchmarks.uai_pgmax import DATA, declare


def _lse(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def naive_bp(
    factors: list[tuple[list[int], np.ndarray]],
    cards: np.ndarray,
    iters: int,
    damping: float,
    unary_sends_table: bool,
) -> np.ndarray:
    """Flooding sum-product BP, one factor and scope position at a time.

    ``unary_sends_table``: a unary factor's initial message is its normalised table
    (pgmunfold), else uniform (PGMax). Shape: output ``(V, max(cards))`` marginals."""
    V = len(cards)
    msgs: dict[tuple[int, int], np.ndarray] = {}
    incoming: list[list[tuple[int, int]]] = [[] for _ in range(V)]
    for f, (scope, table) in enumerate(factors):
        for j, v in enumerate(scope):
            if unary_sends_table and len(scope) == 1:
                msgs[f, j] = table - _lse(table)
            else:
                msgs[f, j] = np.full(cards[v], -np.log(cards[v]))
            incoming[v].append((f, j))
    for _ in range(iters):
        bel = [sum(msgs[k] for k in incoming[v]) for v in range(V)]
        new = {}
        for f, (scope, table) in enumerate(factors):
            for j in range(len(scope)):
                x = table.copy()
                for i, w in enumerate(scope):
                    if i != j:
                        shape = [1] * len(scope)
                        shape[i] = cards[w]
                        x = x + (bel[w] - msgs[f, i]).reshape(shape)
                axes = tuple(a for a in range(len(scope)) if a != j)
                m = _lse(x, axis=axes) if axes else x
                new[f, j] = damping * msgs[f, j] + (1 - damping) * (m - _lse(m))
        msgs = new
    out = np.zeros((V, int(cards.max())))
    for v in range(V):
        # (sum() is 0 for a variable in no factor)
        b = np.asarray(sum(msgs[k] for k in incoming[v]))
        out[v, : cards[v]] = np.exp(b - _lse(b))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", default="DBN_12")
    ap.add_argument("--iters", type=int, nargs="+", default=[20, 50, 300])
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--floor", type=float, default=-200.0)
    ap.add_argument("--var", type=int, default=40, help="a variable whose marginal is shown")
    args = ap.parse_args(argv)
    fg, arrays = declare(DATA / f"{args.name}.uai", args.floor)
    cards = np.asarray(arrays["cards"])
    factors = [
        (list(map(int, scope)), np.asarray(table, dtype=np.float64))
        for i in range(int(arrays["n_groups"]))
        for scope, table in zip(arrays[f"scopes_{i}"], arrays[f"tables_{i}"], strict=True)
    ]
    exact = np.zeros((len(cards), int(cards.max())))
    for v, row in enumerate(pu.read_uai_mar(DATA / f"{args.name}.uai.MAR")):
        exact[v, : len(row)] = row
    print(
        f"{args.name}: naive float64 BP from two starting points, damping {args.damping}\n"
        f"{'iters':>6}{'|ref - pgmunfold|':>19}{'err (table)':>13}{'err (uniform)':>15}"
        f"  var {args.var}: table start / uniform start / exact"
    )
    for T in args.iters:
        net = pu.compile(fg, iterations=T, damping=args.damping, dtype=torch.float64)
        with torch.no_grad():
            ours = net().probs.numpy().reshape(len(cards), -1)
        table = naive_bp(factors, cards, T, args.damping, unary_sends_table=True)
        uniform = naive_bp(factors, cards, T, args.damping, unary_sends_table=False)
        v = args.var
        print(
            f"{T:>6}{np.abs(table - ours).max():>19.1e}{np.abs(table - exact).max():>13.3f}"
            f"{np.abs(uniform - exact).max():>15.3f}  {np.round(table[v], 6)} /"
            f" {np.round(uniform[v], 6)} / {np.round(exact[v], 6)}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
