"""Cost of training through BP on the UAI 2014 general-path instances: a forward without
autograd against a forward and backward with it, per batch size and contraction.

Each ``NAME.uai`` (default ``../shared/data/uai2014-mar``) is declared as in
``benchmarks/uai_pgmax.py`` (hard zeros at ``--floor``, evidence as unary factors). The input is
a batch of ``B`` unaries ~ 0.1 N(0, 1); the loss is ``log Z`` (the Bethe free energy; for
mean-field its bound) plus the sum of the marginals, so the backward runs through every
iteration. Sum-product flooding BP (``--algorithm mf``: parallel mean-field), ``--iters``
iterations, damping ``--damping``, float32. Only instances on the
general path are timed (the pairwise and binary fast paths have their own: ``autograd_cost``).

Columns, in ms per forward (fastest of ``--passes`` x ``--repeats``): ``no grad`` (what
``torch.no_grad()`` runs: the enumerated contraction's state-major sweep), ``fwd`` and ``bwd``
(under autograd, timed separately), and ``(fwd+bwd)/no grad``.

Run: ``python -m benchmarks.uai_autograd [--only Pedigree] [--algorithm bp|mf] [--batch 1 16]
[--iters 50]
[--contractions auto logsumexp] [--repeats 3] [--passes 2] [--threads 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

import pgmunfold as pu
from benchmarks.common import write_json
from benchmarks.uai_pgmax import DATA, declare, instance_paths


def measure(
    net: pu.UnfoldedNetwork, B: int, repeats: int, passes: int, seed: int = 0
) -> dict[str, float]:
    """Fastest no-grad forward, autograd forward and backward, in seconds."""
    gen = torch.Generator().manual_seed(seed)
    u = 0.1 * torch.randn(B, net.num_variables, net.max_card, generator=gen)

    def loss() -> torch.Tensor:
        out = net(unary=u)
        return out.log_partition.sum() + out.log_marginals.exp().sum()

    best = {"nograd": float("inf"), "fwd": float("inf"), "bwd": float("inf")}
    loss().backward()  # warm-up (and the kept indices)
    for _ in range(passes):
        with torch.no_grad():
            for _ in range(repeats):
                t0 = time.perf_counter()
                loss()
                best["nograd"] = min(best["nograd"], time.perf_counter() - t0)
        for _ in range(repeats):
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            value = loss()
            t1 = time.perf_counter()
            value.backward()
            t2 = time.perf_counter()
            best["fwd"] = min(best["fwd"], t1 - t0)
            best["bwd"] = min(best["bwd"], t2 - t1)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", default="", help="instances whose name contains this")
    ap.add_argument("--algorithm", choices=["bp", "mf"], default="bp")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--contractions", nargs="+", default=["auto"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--floor", type=float, default=-200.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    paths = instance_paths(args.data, args.only)
    if not paths:
        return 1
    torch.set_num_threads(args.threads)
    print(
        f"cpu, torch {torch.__version__}, {args.threads} thread(s); {args.algorithm},"
        f" {args.iters} iterations,"
        f" float32; ms per forward, fastest of {args.passes} x {args.repeats}"
    )
    head = f"{'instance':<16}{'contraction':>13}{'B':>4}{'no grad':>10}{'fwd':>10}{'bwd':>10}"
    print(head + f"{'(f+b)/ng':>10}")
    rows: list[dict[str, Any]] = []
    for path in paths:
        fg, _ = declare(path, args.floor)
        for contraction in args.contractions:
            net = pu.compile(
                fg,
                algorithm=args.algorithm,
                iterations=args.iters,
                damping=args.damping,
                contraction=contraction,
            )
            if net.binary_fast or net.pairwise_fast or net.mf_fast or net.mf_binary:
                break  # a fast path: not this benchmark's
            name = "enumerate" if net.enumerated else "per merge"
            for B in args.batch:
                t = measure(net, B, args.repeats, args.passes)
                ratio = (t["fwd"] + t["bwd"]) / t["nograd"]
                print(
                    f"{path.stem:<16}{name:>13}{B:>4}{1e3 * t['nograd']:>10.2f}"
                    f"{1e3 * t['fwd']:>10.2f}{1e3 * t['bwd']:>10.2f}{ratio:>10.2f}",
                    flush=True,
                )
                rows.append(
                    {
                        "instance": path.stem,
                        "algorithm": args.algorithm,
                        "contraction": name,
                        "batch": B,
                        **t,
                        "ratio": ratio,
                    }
                )
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
