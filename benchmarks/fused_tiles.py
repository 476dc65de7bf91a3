"""Tile sizes of the fused Triton kernels (``backend="triton"``), swept on one device, beside
the torch backend on the same network: ``python -m benchmarks.fused_tiles --device cuda
[--sizes 300 1000] [--ks 2 8] [--tiles 2048 4096 8192 16384] [--warps 4 8] [--json out.json]``.

Model: the grid of ``benchmarks.grid_lbp`` (sum-product flooding BP, damping 0.5, float32,
unary factors). Each row is the median of ``--repeats`` no-grad forwards after a warm-up (which
also pays Triton's compilation of that configuration), as seconds per iteration; ``torch`` is
the default backend (``contraction="matmul"`` on CUDA, as in the other GPU tables), ``triton``
the fused kernels with :data:`pgmunfold.infer.fused._TILE` elements per program tile and
:data:`~pgmunfold.infer.fused._WARPS` warps per program. The marginals of every configuration
are compared with the torch backend's (``max|dP|``).
"""

from __future__ import annotations

import argparse

import torch

import pgmunfold as pu
from benchmarks.common import add_grid_args, device_sync, median_time, write_json
from benchmarks.grid_lbp import build
from pgmunfold.infer import fused


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_grid_args(ap, sizes=[300, 1000], ks=[2, 8], iters=20, repeats=5)
    ap.add_argument("--tiles", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    ap.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    args = ap.parse_args(argv)
    dev, sync = args.device, device_sync(args.device)
    contraction = "matmul" if dev == "cuda" else "auto"
    print(f"{'N':>5}{'K':>3} {'backend':<8}{'tile':>7}{'warps':>6}{'s/iter':>11}{'max|dP|':>10}")
    rows = []
    defaults = fused._TILE, fused._WARPS
    try:
        for k in args.ks:
            for n in args.sizes:
                fg, _ = build(n, k)
                kw = dict(iterations=args.iters, damping=0.5, contraction=contraction)
                ref_net = pu.compile(fg, **kw).to(dev)
                fast = pu.compile(fg, backend="triton", **kw).to(dev)
                with torch.no_grad():
                    ref = ref_net().log_marginals.exp()
                    sync()
                    configs = [("torch", 0, 0)]
                    configs += [("triton", t, w) for t in args.tiles for w in args.warps]
                    for backend, tile, warps in configs:
                        net = ref_net if backend == "torch" else fast
                        if backend == "triton":
                            fused._TILE, fused._WARPS = tile, warps
                        out = net()
                        sync()
                        t = median_time(net, sync, args.repeats) / args.iters
                        diff = float((out.log_marginals.exp() - ref).abs().max())
                        row = {"N": n, "K": k, "backend": backend, "tile": tile, "warps": warps}
                        row.update(s_per_iter=t, max_abs_dp=diff, device=dev)
                        rows.append(row)
                        print(
                            f"{n:>5}{k:>3} {backend:<8}{tile or '-':>7}{warps or '-':>6}"
                            f"{t:>11.2e}{diff:>10.1e}",
                            flush=True,
                        )
    finally:
        fused._TILE, fused._WARPS = defaults
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
