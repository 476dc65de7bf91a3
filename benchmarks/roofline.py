"""How close one BP iteration comes to the memory-bandwidth roofline.

Loopy BP is memory-bound: per iteration the fast paths stream their messages, per-edge
constants and the variables' field. This script counts the *compulsory* bytes of one iteration
in the layout the fast path actually stores (every item read once, every message and field
entry written once; nothing re-read), measures the device's copy bandwidth
(``y.copy_(x)`` of a large float32 tensor, counting the read and the write), and reports the
achieved fraction ``compulsory bytes / time per iteration / copy bandwidth``. Real kernels move
more than the compulsory bytes (gathers re-read cavities, temporaries), so the fraction is a
lower bound on the bandwidth the kernels actually draw.

Compulsory bytes per iteration, float32, ``V = N^2`` variables, ``E = 2N(N-1)`` pairwise
factors, ``D = 2E`` directed messages, batch 1:

- binary path (``K = 2``): messages ``D`` log-odds (read + write), 4 constants per directed
  edge (``off, sign, shift, kappa``), field ``V`` (read + write);
- pairwise path (``K > 2``): messages ``D * K`` (read + write), two ``E x K x K`` table copies
  (one per direction), field ``V * K`` (read + write).
- ``--backend triton`` (the fused kernels): messages ``D * K`` (read + write), one
  ``E x K x K`` table (both directions from one read), field ``V * K`` (read) and beliefs
  ``V * K`` (write); for ``K = 2`` the log-odds kernels: ``D`` messages (read + write), four
  entries per table, ``V`` field and beliefs.

With ``--backend triton`` the script also prints ``kernel MB``: the bytes the two fused kernels
actually move per iteration when no gather hits a cache (:func:`fused_kernel_bytes`), and the
fraction of the copy bandwidth they reach on those bytes: near 100 % means the kernels stream
well and only a smaller footprint can make them faster.

Run: ``python -m benchmarks.roofline [--sizes 300 1000] [--ks 2 8] [--iters 50]
[--device cuda] [--backend triton] [--json out.json]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import pgmunfold as pu
from benchmarks.common import add_grid_args, device_sync, median_time, write_json
from benchmarks.grid_lbp import build, capture_cuda_graph
from pgmunfold.network import Contraction


def copy_bandwidth(device: str, nbytes: int, repeats: int = 10) -> float:
    """Bytes per second of ``y.copy_(x)`` (read + write) for float32 tensors of ``nbytes``."""
    x = torch.ones(nbytes // 4, device=device)
    y = torch.empty_like(x)
    sync = device_sync(device)
    y.copy_(x)
    sync()
    return 2 * nbytes / median_time(lambda: y.copy_(x), sync, repeats)


def compulsory_bytes(n: int, k: int, backend: str = "torch") -> int:
    """Compulsory bytes of one fast-path BP iteration on the ``n x n`` grid (see module doc)."""
    v, e = n * n, 2 * n * (n - 1)
    d = 2 * e
    if backend == "triton" and k == 2:  # the log-odds kernel: 4 table entries per factor
        floats = 2 * d + 4 * e + 2 * v
    elif backend == "triton":
        floats = 2 * d * k + e * k * k + 2 * v * k
    elif k == 2:
        floats = 2 * d + 4 * d + 2 * v
    else:
        floats = 2 * d * k + 2 * e * k * k + 2 * v * k
    return 4 * floats


def fused_kernel_bytes(n: int, k: int) -> int:
    """Bytes one BP iteration of the fused kernels reads and writes on the ``n x n`` grid
    (float32, int32 indices, one table per factor, batch 1), no gather served by a cache. For
    K = 2 (the log-odds kernels) every message and belief is one float and a table four.

    - beliefs kernel: the field (``V K``), every slot of the ``(4, V)`` slot table (index and
      message: ``4 V`` ints, ``4 V K`` floats, padding slots included), the beliefs written
      (``V K``);
    - factors kernel: four indices per factor (``4 E`` ints), both old messages (``2 E K``),
      both gathered beliefs (``2 E K``), the table (``E K^2``), both new messages written
      (``2 E K``).
    """
    v, e = n * n, 2 * n * (n - 1)
    # (K = 2: the log-odds kernels, one float per message, four table entries per factor)
    floats = 6 * v + 10 * e if k == 2 else 2 * v * k + 4 * v * k + 6 * e * k + e * k * k
    ints = 4 * v + 4 * e
    return 4 * (floats + ints)


def measure(
    n: int, k: int, iters: int, device: str, bandwidth: float, repeats: int, backend: str = "torch"
) -> dict:
    fg, _ = build(n, k)
    # "matmul" on CUDA: no host read of the tables' range, so the forward can be captured
    contraction: Contraction = "matmul" if device == "cuda" else "auto"
    net = pu.compile(
        fg,
        iterations=iters,
        damping=0.5,
        contraction=contraction,
        backend=backend,  # type: ignore[arg-type]
    ).to(device)
    path = "binary" if net.binary_fast else "pairwise" if net.pairwise_fast else "general"
    path = ("fused bin" if net.binary_fast else "fused") if backend == "triton" else path
    sync = device_sync(device)
    with torch.no_grad():
        net()
        sync()
        t = median_time(net, sync, repeats)
    row: dict[str, Any] = {
        "N": n,
        "K": k,
        "iters": iters,
        "path": path,
        "bytes_per_iter": compulsory_bytes(n, k, backend),
    }
    row["s_per_iter"] = t / iters
    if device == "cuda":
        graph, _ = capture_cuda_graph(net)
        graph.replay()
        sync()
        row["graph_s_per_iter"] = median_time(graph.replay, sync, repeats) / iters
    best = min(row["s_per_iter"], row.get("graph_s_per_iter", float("inf")))
    row["achieved_gb_s"] = row["bytes_per_iter"] / best / 1e9
    row["roofline_fraction"] = row["bytes_per_iter"] / best / bandwidth
    if backend == "triton":
        row["kernel_bytes_per_iter"] = fused_kernel_bytes(n, k)
        row["kernel_fraction"] = row["kernel_bytes_per_iter"] / best / bandwidth
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_grid_args(ap, sizes=[300, 1000], ks=[2, 8], iters=50, repeats=5)
    ap.add_argument("--copy-mb", type=int, default=1024, help="size of the copy-bandwidth probe")
    ap.add_argument("--backend", choices=["torch", "triton"], default="torch")
    args = ap.parse_args(argv)
    bw = copy_bandwidth(args.device, args.copy_mb << 20)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}: copy bandwidth {bw / 1e9:.1f} GB/s (read + write)")
    print(
        f"{'N':>5}{'K':>3} {'path':<9}{'MB/iter':>9}{'eager s/iter':>14}{'graph s/iter':>14}"
        f"{'GB/s':>8}{'of copy bw':>11}"
        + (f"{'kernel MB':>11}{'of copy bw':>11}" if args.backend == "triton" else "")
    )
    rows = []
    for k in args.ks:
        for n in args.sizes:
            r = measure(n, k, args.iters, args.device, bw, args.repeats, args.backend)
            r["copy_gb_s"] = bw / 1e9
            rows.append(r)
            graph = f"{r['graph_s_per_iter']:>14.2e}" if "graph_s_per_iter" in r else f"{'-':>14}"
            print(
                f"{n:>5}{k:>3} {r['path']:<9}{r['bytes_per_iter'] / 1e6:>9.1f}"
                f"{r['s_per_iter']:>14.2e}{graph}{r['achieved_gb_s']:>8.1f}"
                f"{100 * r['roofline_fraction']:>10.1f}%"
                + (
                    f"{r['kernel_bytes_per_iter'] / 1e6:>11.1f}{100 * r['kernel_fraction']:>10.1f}%"
                    if "kernel_bytes_per_iter" in r
                    else ""
                ),
                flush=True,
            )
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
