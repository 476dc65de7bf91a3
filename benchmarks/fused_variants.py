"""Compile every variant of the fused Triton kernels (``backend="triton"``) for a CUDA target,
without a GPU, with whatever Triton is installed::

    python benchmarks/fused_variants.py [--arch 90] [--ks 2 3 8] [--dtypes fp32 fp64]
        [--itypes i32 i64]

Needs nothing but ``triton``: the kernels module (``pgmunfold/infer/_triton_kernels.py``) is
loaded by path, so another Triton version can be checked in a bare environment, e.g.::

    python -m venv /tmp/t35 && /tmp/t35/bin/pip install triton==3.5.0
    /tmp/t35/bin/python benchmarks/fused_variants.py

Variants per ``K``, float dtype and index dtype: the beliefs kernel; the BP factors kernel with
every combination of max-product, exact cavities and a table index column (damped); the
mean-field factors kernel with and without a table index column; the mean-field variables
kernel; for K = 2 also the binary (log-odds) factors kernel with and without max-product and
a table index column. Block sizes as at the default tile of :mod:`pgmunfold.infer.fused`.
Exits 1 on the first kernel that does not compile (Triton's error is printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

KERNELS = Path(__file__).resolve().parents[1] / "pgmunfold" / "infer" / "_triton_kernels.py"

NEG_BITS = -1e30 * (1.0 / math.log(2.0))
"""``pgmunfold.infer.pairwise.NEG_BITS``, recomputed here (no torch in this script; a test
checks that the two agree)."""

INDEX_PTRS = {"col0_ptr", "col1_ptr", "var0_ptr", "var1_ptr", "table_ptr", "slots_ptr"}
"""The kernels' index pointers (int32 in the network); every other pointer is a float."""


def load_kernels() -> ModuleType:
    """The kernels module, imported by path (no package import, hence no torch)."""
    spec = importlib.util.spec_from_file_location("_pgmunfold_triton_kernels", KERNELS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compile_kernel(
    fn: Any, const: dict[str, Any], dtype: str, itype: str, arch: int, warps: int
) -> Any:
    """Compile one kernel for ``sm_<arch>``: float pointers of ``dtype``, index pointers of
    ``itype``, int32 sizes, a float32 damping, ``const`` for the constexpr arguments (the
    launch signature of :mod:`pgmunfold.infer.fused`)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for arg in fn.arg_names:
        if arg in const:
            sig[arg] = "constexpr"
        elif arg.endswith("_ptr"):
            sig[arg] = f"*{itype}" if arg in INDEX_PTRS else f"*{dtype}"
        else:
            sig[arg] = "fp32" if arg == "damping" else "i32"
    src = ASTSource(fn, sig, constexprs=const)
    options = {"num_warps": warps, "enable_fp_fusion": True}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def pow2(n: int) -> int:
    """``pgmunfold.infer.fused._pow2``: the register tile's state extent."""
    return max(2, 1 << max(0, (n - 1).bit_length()))


def variants(k: Any, K: int, factor_block: int, belief_block: int) -> list[tuple[Any, dict]]:
    """Every (kernel, constexpr arguments) pair for ``K`` states."""
    KP = pow2(K)
    base = {"K": K, "KP": KP}
    out: list[tuple[Any, dict]] = [(k.beliefs_kernel, {**base, "BLOCK": belief_block})]
    for mx, exact, table_id in itertools.product((False, True), repeat=3):
        flags: dict[str, int] = {"MAX": mx, "DAMP": True, "EXACT": exact, "TABLE_ID": table_id}
        out.append((k.factors_kernel, {**base, **flags, "NEG": NEG_BITS, "BLOCK": factor_block}))
    for table_id in (False, True):
        out.append((k.mf_factors_kernel, {**base, "TABLE_ID": table_id, "BLOCK": factor_block}))
    out.append((k.mf_variables_kernel, {**base, "DAMP": True, "BLOCK": belief_block}))
    if K == 2:  # the binary (log-odds) factors kernel
        for mx, table_id in itertools.product((False, True), repeat=2):
            flags = {"MAX": mx, "DAMP": True, "TABLE_ID": table_id, "BLOCK": factor_block}
            out.append((k.binary_factors_kernel, flags))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10")
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 8])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp64"])
    ap.add_argument("--itypes", nargs="+", default=["i32", "i64"])
    ap.add_argument("--tile", type=int, default=2048, help="fused._TILE")
    ap.add_argument("--warps", type=int, default=8, help="fused._WARPS")
    args = ap.parse_args(argv)
    import triton

    k = load_kernels()
    n = 0
    for K, dtype, itype in itertools.product(args.ks, args.dtypes, args.itypes):
        KP = pow2(K)
        factor_block = max(1, min(1024, args.tile // (KP * KP)))
        belief_block = max(16, min(1024, args.tile // (4 * KP)))
        for fn, const in variants(k, K, factor_block, belief_block):
            try:
                compile_kernel(fn, const, dtype, itype, args.arch, args.warps)
            except Exception as err:  # report which variant, then fail
                print(f"{fn.__name__} K={K} {dtype} {itype} {const}: {err}", file=sys.stderr)
                return 1
            n += 1
    print(f"triton {triton.__version__}: {n} kernel variants compiled for sm_{args.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
