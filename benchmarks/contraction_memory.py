"""Peak memory of the general path's two contractions, enumerated against per merge.

Each contraction runs in its own process (peak RSS is per process): it declares the grid of
``benchmarks.enumerated`` (unary factors plus pairs or one triplet per cell, N x N, K states),
compiles it with ``fast_path=False`` and the given ``contraction``, and runs one forward of
``--iters`` iterations on ``B`` random unary rows without autograd. Printed: the peak RSS after
``pu.compile`` and after the forward, in GB (``resource.getrusage``'s ``ru_maxrss``).

Run: ``python -m benchmarks.contraction_memory [--size 256] [--k 3] [--arity 3] [--batch 16]
[--iters 3] [--algorithm bp] [--contractions enumerate logsumexp auto]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch


def child(args: argparse.Namespace) -> None:
    """One contraction, in this process: print its two peaks as JSON."""
    import pgmunfold as pu
    from benchmarks.enumerated import triplet_or_pair_grid

    torch.set_num_threads(1)
    fg = triplet_or_pair_grid(args.size, args.k, args.arity)
    net = pu.compile(
        fg,
        algorithm=args.algorithm,
        iterations=args.iters,
        damping=0.5,
        fast_path=False,
        contraction=args.contractions[0],
    )
    compiled = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    u = torch.randn(args.batch, net.num_variables, net.max_card)
    with torch.no_grad():
        net(unary=u)
    done = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"enumerated": net.enumerated, "compile_kb": compiled, "forward_kb": done}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--arity", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--algorithm", choices=["bp", "mf"], default="bp")
    ap.add_argument("--contractions", nargs="+", default=["enumerate", "logsumexp", "auto"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    print(
        f"{args.algorithm}, {args.size} x {args.size} grid, arity {args.arity}, K = {args.k},"
        f" {args.batch} batch rows, {args.iters} iterations, no grad; peak RSS in GB"
    )
    print(f"{'contraction':<12}{'enumerated':>11}{'after compile':>15}{'after forward':>15}")
    for c in args.contractions:
        cmd = [sys.executable, "-m", "benchmarks.contraction_memory", "--child"]
        cmd += ["--size", str(args.size), "--k", str(args.k), "--arity", str(args.arity)]
        cmd += ["--batch", str(args.batch), "--iters", str(args.iters)]
        cmd += ["--algorithm", args.algorithm, "--contractions", c]
        root = Path(__file__).resolve().parents[1]  # (the child imports benchmarks from here)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{c:<12}{r['enumerated']!s:>11}{r['compile_kb'] / 1e6:>15.2f}"
            f"{r['forward_kb'] / 1e6:>15.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
