"""Kernels and memory traffic of one BP iteration, counted op by op from the torch profiler.

Each kernel-launching aten op of a forward (every recorded aten op except views, allocations and
wrappers such as ``clone`` whose inner ``copy_`` is counted) is charged the bytes it must move:
every tensor input read once and its output written once (the broadcast shape of the inputs;
the reduced shape for ``sum``/``amax``; the gathered rows for ``index_select``; ``self`` for
in-place ops; ``fill_``/``zero_`` write only). ``cat`` is counted as a launch with 0 bytes: the
profiler records no shapes for tensor lists. The forward runs
with autograd enabled but no parameter requiring grad, so every op is out of place and its
output is not among the recorded inputs. Per iteration = (forward with 3 iterations - forward
with 1) / 2, which removes the per-forward work (tables, log Z). The op sequence is the same on
every device, so the count made on a CPU applies to a GPU run of the same network: divided by a
measured time per iteration it gives the bandwidth the kernels sustain.

Run: ``python -m benchmarks.op_traffic [--sizes 300 1000] [--ks 2 8] [--by-op] [--json F]``.
"""

from __future__ import annotations

import argparse
import collections
import math
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

import pgmunfold as pu
from benchmarks.common import write_json
from benchmarks.grid_lbp import build

NOT_KERNELS = frozenset(
    "aten::" + n
    for n in (
        "view as_strided expand transpose select slice unsqueeze reshape alias t permute "
        "_unsafe_view empty empty_like empty_strided resize_ squeeze detach lift_fresh to "
        "_to_copy result_type unbind split narrow contiguous chunk movedim item "
        "_local_scalar_dense is_nonzero new_empty new_empty_strided"
    ).split()
)
WRAPPERS = frozenset(
    "aten::" + n
    for n in "clone new_full new_zeros new_ones full zeros ones zeros_like full_like".split()
)
REDUCTIONS = frozenset({"aten::sum", "aten::amax", "aten::amin", "aten::mean"})
_DTYPE_BYTES = {"float": 4, "double": 8, "long int": 8, "int": 4, "bool": 1, "c10::Half": 2}


def _nbytes(shape: list[int], dtype: str) -> int:
    return math.prod(shape) * _DTYPE_BYTES.get(dtype, 4)


def op_bytes(event: Any) -> int:
    """Bytes read and written by one recorded aten op (see the module docstring)."""
    tensors = [
        (s, d)
        for s, d in zip(event.input_shapes, event.input_dtypes, strict=False)
        if isinstance(s, list) and s and isinstance(s[0], int) and d and math.prod(s) > 0
    ]
    if not tensors:
        return 0
    name = event.name
    if name in ("aten::fill_", "aten::zero_"):
        return _nbytes(*tensors[0])
    read = sum(_nbytes(s, d) for s, d in tensors)
    if name == "aten::index_select":
        (src, dtype), (index, _) = tensors[0], tensors[-1]
        dim = event.concrete_inputs[1]
        return read + _nbytes([*index, math.prod(src) // src[dim]], dtype)
    if name in REDUCTIONS:
        shape, dtype = tensors[0]
        dims = event.concrete_inputs[1] or range(len(shape))
        dims = [dims] if isinstance(dims, int) else dims
        return read + _nbytes(
            [1 if i in dims or i - len(shape) in dims else m for i, m in enumerate(shape)], dtype
        )
    if name.endswith("_"):  # in place: writes self
        return read + _nbytes(*tensors[0])
    try:
        out = list(torch.broadcast_shapes(*(torch.Size(s) for s, _ in tensors)))
    except RuntimeError:  # e.g. index_add, whose index does not broadcast: its largest input
        out = max((s for s, _ in tensors), key=math.prod)
    return read + _nbytes(out, tensors[0][1])


def forward_ops(net: pu.UnfoldedNetwork) -> list[Any]:
    """The kernel-launching aten ops of one ``net()`` call."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        net()
    skip = NOT_KERNELS | WRAPPERS
    return [e for e in prof.events() if e.name.startswith("aten::") and e.name not in skip]


def per_iteration(fg: pu.FactorGraph, **compile_kw: Any) -> dict[str, tuple[float, float]]:
    """Per op name: (launches, bytes) per iteration of ``pu.compile(fg, **compile_kw)``."""
    counts = {}
    for t in (1, 3):
        net = pu.compile(fg, iterations=t, **compile_kw).requires_grad_(False)
        net()  # warm-up
        c: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for e in forward_ops(net):
            c[e.name][0] += 1
            c[e.name][1] += op_bytes(e)
        counts[t] = c
    names = set(counts[1]) | set(counts[3])
    return {
        n: ((counts[3][n][0] - counts[1][n][0]) / 2, (counts[3][n][1] - counts[1][n][1]) / 2)
        for n in names
        if counts[3][n][0] != counts[1][n][0]
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--by-op", action="store_true", help="also print the breakdown per op")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    print("per BP iteration (damping 0.5, contraction='matmul', float32, batch 1)")
    print(f"{'N':>5}{'K':>3}{'kernels':>9}{'MB':>10}")
    rows = []
    for k in args.ks:
        for n in args.sizes:
            fg, _ = build(n, k)
            ops = per_iteration(fg, damping=0.5, contraction="matmul")
            launches = sum(c for c, _ in ops.values())
            nbytes = sum(b for _, b in ops.values())
            rows.append({"N": n, "K": k, "kernels_per_iter": launches, "bytes_per_iter": nbytes})
            rows[-1]["by_op"] = {name: {"launches": c, "bytes": b} for name, (c, b) in ops.items()}
            print(f"{n:>5}{k:>3}{launches:>9.0f}{nbytes / 1e6:>10.1f}", flush=True)
            if args.by_op:
                for name, (c, b) in sorted(ops.items(), key=lambda x: -x[1][1]):
                    print(f"{'':>8}{name:<22}{c:>5.0f}{b / 1e6:>10.2f}")
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
