"""Run PGMax (JAX) sum-product loopy BP on a 4-neighbour grid (or any pairwise graph) read from
an ``.npz`` file.

Standalone: run it with the Python of a separate PGMax environment (it imports neither torch
nor pgmunfold), e.g. ``/tmp/pgmax-venv/bin/python benchmarks/pgmax_runner.py grid.npz --iters
100 --json out.json``. ``benchmarks/compare_pgmax.py`` writes the ``.npz`` and calls this script.

Input ``.npz`` arrays (variable ids are row-major indices ``i * N + j`` into the ``N x N`` grid):

- ``unary``: ``(N, N, K)`` log-potentials of every variable;
- ``h_pairs`` / ``v_pairs``: ``(F, 2)`` int variable-id pairs of the horizontal / vertical
  pairwise factors;
- ``h_tables`` / ``v_tables``: ``(F, K, K)`` their log-potential tables, indexed
  ``[state of the first variable, state of the second]``.

Or any pairwise graph (``benchmarks/hub_graphs.py``): ``unary`` ``(V, K)``, ``pairs``
``(F, 2)`` and ``tables`` ``(F, K, K)``.

Model: the unaries enter either as PGMax *evidence* (``--unary-mode evidence``: added to every
belief and cavity, never damped) or as single-variable enumeration factors (``--unary-mode
factor``: their messages start uniform and are damped like the pairwise ones). Messages start
uniform (PGMax's zero log-messages); each iteration is a flooding update with log-domain damping
``d * old + (1 - d) * new`` at temperature 1.0 (sum-product), then PGMax's max-normalisation.

Output JSON: build, jit-compile and first-call times, steady-state seconds per iteration (median
over ``--repeats`` blocking calls of the compiled ``--iters``-iteration program, after a
warm-up), messages per second, peak RSS, the last message change, and a sample of marginals;
``--marginals-out`` saves all marginals ``(N, N, K)`` as ``.npy``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np


def _alias_backend() -> None:
    """Give newer jax the ``jax.lib.xla_bridge.get_backend`` that PGMax 0.6.1 expects."""
    import warnings

    import jax

    bridge = getattr(jax.lib, "xla_bridge", None)
    if bridge is None:  # jax >= 0.8 removed the module: PGMax reads only get_backend from it
        import types

        from jax.extend import backend

        # (jax's own types lack the removed module; mypy without jax sees Any: unused-ignore)
        jax.lib.xla_bridge = types.SimpleNamespace(get_backend=backend.get_backend)  # type: ignore[attr-defined, unused-ignore]
        return
    with warnings.catch_warnings():  # jax 0.7 warns that the name is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        present = hasattr(bridge, "get_backend")
    if not present:
        from jax.extend import backend

        bridge.get_backend = backend.get_backend


def _rss_gb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in GB; ``ru_maxrss`` fallback."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def run(
    path: str,
    iters: int,
    damping: float,
    repeats: int,
    unary_mode: str,
    marginals_out: str | None,
    sample: int,
) -> dict[str, Any]:
    """Build the PGMax model from ``path``, compile and time ``iters`` BP iterations.

    Args:
        path: the ``.npz`` grid (see the module docstring).
        iters: BP iterations per compiled call.
        damping: PGMax's damping factor (weight of the old message).
        repeats: timed calls after the warm-up; the median is reported.
        unary_mode: ``"evidence"`` or ``"factor"``.
        marginals_out: where to save all marginals as ``.npy`` (``None``: not saved).
        sample: how many variables' marginals (row-major order) go into the JSON.

    Returns:
        The JSON-able result row.
    """
    t0 = time.perf_counter()
    _alias_backend()
    import jax
    import jax.numpy as jnp
    import pgmax
    from pgmax import fgraph, fgroup, infer, vgroup

    import_s = time.perf_counter() - t0
    baseline_rss = _rss_gb("VmRSS")

    data = np.load(path)
    unary = np.asarray(data["unary"], dtype=np.float32)
    if unary.ndim == 2:  # any pairwise graph
        shape: tuple[int, ...] = unary.shape[:1]
        sides = [""]
    elif unary.ndim == 3 and unary.shape[0] == unary.shape[1]:
        shape = unary.shape[:2]
        sides = ["h_", "v_"]
    else:
        raise ValueError(f"unary must have shape (N, N, K) or (V, K), got {unary.shape}")
    k = unary.shape[-1]
    num_vars = int(np.prod(shape))

    # ---- build: variables, factor groups, wiring, initial arrays
    t0 = time.perf_counter()
    variables = vgroup.NDVarArray(num_states=k, shape=shape)
    graph = fgraph.FactorGraph(variable_groups=variables)
    hashes = [int(h) for h in variables.variable_hashes.reshape(-1)]
    groups = []
    num_factors = 0
    for side in sides:
        pairs = np.asarray(data[f"{side}pairs"], dtype=np.int64)
        tables = np.asarray(data[f"{side}tables"], dtype=np.float32)
        num_factors += len(pairs)
        if tables.shape != (len(pairs), k, k):
            raise ValueError(f"{side}tables: expected {(len(pairs), k, k)}, got {tables.shape}")
        groups.append(
            fgroup.PairwiseFactorGroup(
                variables_for_factors=[[(hashes[a], k), (hashes[b], k)] for a, b in pairs],
                log_potential_matrix=tables,
            )
        )
    if unary_mode == "factor":
        groups.append(
            fgroup.EnumFactorGroup(
                variables_for_factors=[[(h, k)] for h in hashes],
                factor_configs=np.arange(k)[:, None],
                log_potentials=unary.reshape(num_vars, k),
            )
        )
    elif unary_mode != "evidence":
        raise ValueError(f"unary_mode must be 'evidence' or 'factor', got {unary_mode!r}")
    graph.add_factors(groups)
    bp = infer.BP(graph.bp_state, temperature=1.0)
    if unary_mode == "evidence":
        arrays = bp.init(evidence_updates={variables: unary})
    else:
        arrays = bp.init()
    jax.block_until_ready(arrays)
    build_s = time.perf_counter() - t0
    build_rss = _rss_gb("VmRSS")

    def infer_marginals(
        log_potentials: jnp.ndarray, ftov_msgs: jnp.ndarray, evidence: jnp.ndarray
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``iters`` damped sum-product iterations, then the normalised marginals."""
        # plain arrays in, BPArrays rebuilt inside: PGMax's pytree flattening of BPArrays does
        # not round-trip through ahead-of-time compilation in this jax
        start = infer.BPArrays(log_potentials, ftov_msgs, evidence)
        out, deltas = bp.run_with_diffs(start, iters, damping, 1.0)
        marg = infer.get_marginals(bp.get_beliefs(out))[variables]
        return marg, deltas[-1]

    inputs = (arrays.log_potentials, arrays.ftov_msgs, arrays.evidence)
    # ---- jit compile (ahead of time), then one warm-up call
    t0 = time.perf_counter()
    compiled = jax.jit(infer_marginals).lower(*inputs).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    marg, delta = jax.block_until_ready(compiled(*inputs))
    first_call_s = time.perf_counter() - t0

    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        marg, delta = jax.block_until_ready(compiled(*inputs))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    t_med = statistics.median(times)

    marg_np = np.asarray(marg, dtype=np.float32).reshape(*shape, k)
    if marginals_out:
        np.save(marginals_out, marg_np)
    return {
        "impl": "pgmax",
        "N": shape[0] if len(shape) == 2 else None,
        "V": num_vars,
        "K": k,
        "iters": iters,
        "damping": damping,
        "unary_mode": unary_mode,
        "pgmax_version": getattr(pgmax, "__version__", "?"),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "import_s": import_s,
        "build_s": build_s,
        "compile_s": compile_s,
        "first_call_s": first_call_s,
        "times_s": times,
        # process CPU seconds of each timed call (all threads): cpu / wall ~ busy threads
        "cpu_s": cpu,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "s_per_iter": t_med / iters,
        # factor-to-variable messages of the pairwise factors per second (as in grid_lbp)
        "msgs_per_s": 2 * num_factors * iters / t_med,
        "baseline_rss_gb": baseline_rss,
        "rss_after_build_gb": build_rss,
        "peak_rss_gb": _rss_gb("VmHWM"),
        "last_msg_delta": float(delta),
        "marginals_sample": marg_np.reshape(num_vars, k)[:sample].tolist(),
        "marginals_file": marginals_out,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("npz", help="grid potentials (see above)")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    ap.add_argument("--unary-mode", choices=["evidence", "factor"], default="evidence")
    ap.add_argument("--marginals-out", default=None, help="save all marginals here (.npy)")
    ap.add_argument("--sample", type=int, default=8, help="marginals of this many variables")
    ap.add_argument("--json", default=None, help="write the result here (default: stdout)")
    args = ap.parse_args(argv)
    if args.iters < 1 or args.repeats < 1:
        ap.error("--iters and --repeats must be >= 1")
    row = run(
        args.npz,
        args.iters,
        args.damping,
        args.repeats,
        args.unary_mode,
        args.marginals_out,
        args.sample,
    )
    text = json.dumps(row, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
