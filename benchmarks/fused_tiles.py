"""Tile sizes of the fused Triton kernels (``backend="triton"``), swept on one device, beside
the torch backend on the same network: ``python -m benchmarks.fused_tiles --device cuda
[--sizes 300 1000] [--ks 2 8] [--tiles 2048 4096 8192 16384] [--warps 4 8] [--json out.json]``.

Model: the grid of ``benchmarks.grid_lbp`` (sum-product flooding BP, damping 0.5, float32,
unary factors). Each row is the median of ``--repeats`` no-grad forwards after a warm-up (which
also pays Triton's compilation of that configuration), as seconds per iteration; ``torch`` is
the default backend (``contraction="matmul"`` on CUDA, as in the other GPU tables), ``triton``
the fused kernels with :data:`pgmunfold.infer.fused._TILE` elements per program tile and
:data:`~pgmunfold.infer.fused._WARPS` warps per program. The marginals of every configuration
are compared with the torch backend's (``max|dP|``). ``--algorithm mf``: parallel mean-field.

``--ahead-of-time`` needs no GPU: it compiles the kernels for a CUDA target
(``--arch 90``: H100) with Triton's bundled ``ptxas`` for every tile and warp count, and prints
the registers per thread and the stack (spill) bytes that ``cuobjdump -res-usage`` reports
(float32, sum-product, damped). That is how the defaults were chosen before any GPU timing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

import pgmunfold as pu
from benchmarks.common import add_grid_args, device_sync, median_time, write_json
from benchmarks.fused_variants import compile_kernel
from benchmarks.grid_lbp import build
from pgmunfold.infer import fused


def compile_kernels(
    K: int, tile: int, warps: int, arch: int = 90, dtype: str = "fp32"
) -> dict[str, Any]:
    """Compile the BP kernels (beliefs; factors with subtractive and with exact cavities) and
    the mean-field kernels for ``sm_<arch>`` without a GPU, in a process that does not
    interpret Triton; returns the compiled kernels by name (``.asm["cubin"]`` holds the
    binary).

    The signature follows the launch in :mod:`pgmunfold.infer.fused`: float pointers of
    ``dtype``, int32 index pointers, int32 sizes, a float32 damping; the block sizes follow
    from ``tile`` as there.
    """
    if fused.triton_interpreting():
        raise RuntimeError("compile ahead of time in a process without TRITON_INTERPRET=1")
    from pgmunfold.infer import _triton_kernels as k

    KP = fused._pow2(K)
    factors = {"K": K, "KP": KP, "MAX": False, "DAMP": True, "NEG": fused.NEG_BITS}
    factors["BLOCK"] = fused._factor_block(KP, tile)
    factors_mf = {"K": K, "KP": KP, "BLOCK": factors["BLOCK"]}
    variables = {"K": K, "KP": KP, "BLOCK": fused._belief_block(KP, tile)}
    consts: dict[str, tuple[Any, dict[str, Any]]] = {
        "beliefs": (k.beliefs_kernel, variables),
        "factors": (k.factors_kernel, {**factors, "EXACT": False, "TABLE_ID": True}),
        # (with a table index column, as for shared tables)
        "factors_exact": (k.factors_kernel, {**factors, "EXACT": True, "TABLE_ID": False}),
        "mf_factors": (k.mf_factors_kernel, {**factors_mf, "TABLE_ID": True}),
        "mf_variables": (k.mf_variables_kernel, {**variables, "DAMP": True}),
    }
    if K == 2:  # binary graphs: the log-odds factors kernel
        flags = {"MAX": False, "DAMP": True, "TABLE_ID": True}
        consts["binary"] = (
            k.binary_factors_kernel,
            {**flags, "BLOCK": fused._factor_block(2, tile)},
        )
    return {
        name: compile_kernel(fn, const, dtype, "i32", arch, warps)
        for name, (fn, const) in consts.items()
    }


def resource_usage(kernel: Any) -> dict[str, int]:
    """Registers per thread and stack bytes of a compiled kernel (``cuobjdump -res-usage``,
    the binary bundled with Triton's CUDA backend)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(kernel.asm["cubin"])
        fh.flush()
        text = subprocess.run(
            [str(tool), "-res-usage", fh.name], capture_output=True, text=True, check=True
        ).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", text)
    if m is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output: {text[-300:]}")
    return {"registers": int(m.group(1)), "stack_bytes": int(m.group(2))}


def ahead_of_time(args: argparse.Namespace) -> None:
    print(f"sm_{args.arch}: registers per thread / stack (spill) bytes")
    names = ["beliefs", "factors", "exact", "mf fac", "mf var", "binary"]
    print(f"{'dtype':<6}{'K':>3}{'tile':>7}{'warps':>6}" + "".join(f"{n:>10}" for n in names))
    rows = []
    for dtype in args.dtypes:
        for k in args.ks:
            for tile in args.tiles:
                for warps in args.warps:
                    kernels = compile_kernels(k, tile, warps, args.arch, dtype)
                    use = {n: resource_usage(c) for n, c in kernels.items()}
                    row = {"dtype": dtype, "K": k, "tile": tile, "warps": warps}
                    rows.append({**row, "arch": args.arch, **use})
                    cells = "".join(
                        f"{u['registers']:>6}/{u['stack_bytes']:<3}" for u in use.values()
                    ) + ("" if "binary" in use else f"{'-':>6}")
                    print(f"{dtype:<6}{k:>3}{tile:>7}{warps:>6}{cells}", flush=True)
    write_json(args.json, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_grid_args(ap, sizes=[300, 1000], ks=[2, 8], iters=20, repeats=5)
    ap.add_argument("--tiles", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--ahead-of-time", action="store_true", help="compile only (no GPU needed)")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10")
    ap.add_argument("--algorithm", choices=["bp", "mf"], default="bp")
    ap.add_argument("--dtypes", nargs="+", default=["fp32"], help="ahead of time: fp32, fp64")
    args = ap.parse_args(argv)
    if args.ahead_of_time:
        ahead_of_time(args)
        return
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
                kw["algorithm"] = args.algorithm
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
                        row["algorithm"] = args.algorithm
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
