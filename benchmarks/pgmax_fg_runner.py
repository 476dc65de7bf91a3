"""Run PGMax (JAX) sum-product loopy BP on any discrete factor graph read from an ``.npz`` file.

Standalone: run it with the Python of a separate PGMax environment (it imports neither torch nor
pgmunfold); ``benchmarks/uai_pgmax.py`` writes the ``.npz`` and calls this script::

    /tmp/pgmax-venv/bin/python benchmarks/pgmax_fg_runner.py graph.npz --iters 50 \\
        --marginals-out m.npy

Input ``.npz`` arrays: ``cards`` ``(V,)`` the cardinality of each variable (named ``0..V-1``);
``n_groups``; per group ``i``, ``scopes_i`` ``(F, arity)`` variable ids and ``tables_i``
``(F, *cards)`` log-potentials (finite: PGMax's max-normalisation has no answer for a row of
``-inf``). Every factor is a PGMax ``EnumFactor`` listing all configurations. BP: flooding from
uniform messages, log-domain damping ``--damping``, temperature 1. Prints one JSON line (build
and jit seconds; median and minimum seconds per iteration over ``--repeats`` calls after a
warm-up); the
marginals ``(V, max card)`` (zero-padded) go to ``--marginals-out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from pgmax_runner import _alias_backend


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("npz")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--marginals-out", required=True)
    args = ap.parse_args(argv)
    _alias_backend()
    import jax
    from pgmax import fgraph, fgroup, infer, vgroup

    data = np.load(args.npz)
    cards = np.asarray(data["cards"], dtype=np.int64)
    t0 = time.perf_counter()
    variables = vgroup.VarDict(num_states=cards, variable_names=tuple(range(len(cards))))
    graph = fgraph.FactorGraph(variable_groups=variables)
    groups = []
    for i in range(int(data["n_groups"])):
        scopes, tables = data[f"scopes_{i}"], data[f"tables_{i}"]
        configs = np.array(list(itertools.product(*map(range, tables.shape[1:]))), np.int32)
        groups.append(
            fgroup.EnumFactorGroup(
                variables_for_factors=[[variables[int(v)] for v in sc] for sc in scopes],
                factor_configs=configs.reshape(len(configs), -1),
                log_potentials=tables.reshape(len(scopes), -1).astype(np.float32),
            )
        )
    graph.add_factors(groups)
    bp = infer.BP(graph.bp_state, temperature=1.0)
    arrays = bp.init()
    build_s = time.perf_counter() - t0

    def marginals(lp: jax.Array, msgs: jax.Array, ev: jax.Array) -> dict:
        out = bp.run(infer.BPArrays(lp, msgs, ev), args.iters, args.damping)
        return infer.get_marginals(bp.get_beliefs(out))[variables]

    inputs = (arrays.log_potentials, arrays.ftov_msgs, arrays.evidence)
    t0 = time.perf_counter()
    compiled = jax.jit(marginals).lower(*inputs).compile()
    compile_s = time.perf_counter() - t0
    marg = jax.block_until_ready(compiled(*inputs))
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        marg = jax.block_until_ready(compiled(*inputs))
        times.append(time.perf_counter() - t0)
    m = np.zeros((len(cards), int(cards.max())))
    for v in range(len(cards)):
        m[v, : cards[v]] = np.asarray(marg[v])
    np.save(args.marginals_out, m)
    row = {"build_s": build_s, "compile_s": compile_s}
    row["s_per_iter"] = statistics.median(times) / args.iters
    row["min_s_per_iter"] = min(times) / args.iters
    print(json.dumps(row))


if __name__ == "__main__":
    main()
