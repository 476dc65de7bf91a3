"""Loopy BP on graphs with high-degree variables (hubs), against PGMax when it is installed.

Grids give every variable the same degree. Real graphs often do not: a star (one hub tied to
every other variable, e.g. a class variable tied to every feature) and Barabasi-Albert graphs
(power-law degrees, ``networkx.barabasi_albert_graph(V, m)``). pgmunfold keeps the extra edges
of such variables in buckets (:class:`pgmunfold.compile.wiring.SlotPlan`) instead of padding
every variable to the largest degree; ``slots`` is the number of slot entries that takes,
``one table`` what padding to the largest degree would take (``V * D``, not built).

Model and protocol as in ``benchmarks/compare_pgmax.py`` (``--unary-mode evidence``): unary
``~ N(0, 1)`` passed as the ``unary=`` input and as PGMax evidence, pairwise tables
``~ 0.5 N(0, 1)``, float32, sum-product flooding BP from uniform messages with damping 0.5;
seconds per iteration are medians over ``--repeats`` calls after a warm-up; marginals are
compared element-wise, and on stars (trees) with the exact marginals (closed form, float64;
``err`` columns). ``ratio`` = PGMax time / pgmunfold time (> 1: pgmunfold faster).

Run: ``python -m benchmarks.hub_graphs [--graphs star ba] [--sizes 10000 100000] [--ks 2 8]
[--iters 50] [--repeats 3] [--device cuda] [--pgmax-python /tmp/pgmax-venv/bin/python]
[--json out.json]``. On CUDA the times are eager forwards (no CUDA graph), and PGMax uses
whatever device its jax finds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch

import pgmunfold as pu
from benchmarks.common import device_sync, write_json
from benchmarks.compare_pgmax import (
    marginal_diff,
    pgmax_available,
    reset_peak_rss,
    rss_gb,
    run_pgmax,
)
from pgmunfold.compile.wiring import build_wiring


def make_graph(kind: str, size: int, k: int, seed: int) -> dict[str, np.ndarray]:
    """Potentials of a ``kind`` graph (``"star"``: ``size`` leaves; ``"ba"``: Barabasi-Albert
    with ``size`` variables, 2 edges per new variable): ``unary`` ``(V, K)``, ``pairs``
    ``(F, 2)``, ``tables`` ``(F, K, K)``, float32."""
    if kind == "star":
        pairs = np.stack([np.zeros(size, np.int64), np.arange(1, size + 1)], -1)
        num_vars = size + 1
    elif kind == "ba":
        g = nx.barabasi_albert_graph(size, 2, seed=seed)
        pairs = np.asarray(sorted(g.edges()), dtype=np.int64)
        num_vars = size
    else:
        raise ValueError(f"unknown graph kind {kind!r}: star or ba")
    rng = np.random.default_rng(seed)
    unary = rng.normal(size=(num_vars, k)).astype(np.float32)
    tables = (0.5 * rng.normal(size=(len(pairs), k, k))).astype(np.float32)
    return {"unary": unary, "pairs": pairs, "tables": tables}


def star_marginals(pot: dict[str, np.ndarray]) -> np.ndarray:
    """Exact marginals ``(V, K)`` of a star (a tree), in closed form, in float64."""
    u = pot["unary"].astype(np.float64)
    t = pot["tables"].astype(np.float64)  # (n, K hub, K leaf), pairs (0, leaf)
    to_hub = np.logaddexp.reduce(t + u[1:, None, :], axis=2)  # (n, K)
    hub = u[0] + to_hub.sum(0)
    p_hub = np.exp(hub - np.logaddexp.reduce(hub))
    leaves = np.einsum("h,lhs->ls", p_hub, np.exp(t + u[1:, None, :] - to_hub[:, :, None]))
    return np.concatenate([p_hub[None], leaves])


def run_pgmunfold(
    pot: dict[str, np.ndarray], iters: int, damping: float, repeats: int, device: str = "cpu"
) -> tuple[dict[str, Any], np.ndarray]:
    """Declare, compile and time pgmunfold BP on ``pot`` (on ``device``); the row and the
    marginals ``(V, K)``."""
    num_vars, k = pot["unary"].shape
    reset_ok = reset_peak_rss()
    t0 = time.perf_counter()
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (num_vars,), k)
    fg.add_factors(x.ids[pot["pairs"]], pot["tables"], name="pairwise")
    declare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    net = pu.compile(fg, iterations=iters, damping=damping, dtype=torch.float32).to(device)
    compile_s = time.perf_counter() - t0
    u = torch.from_numpy(pot["unary"]).to(device)
    sync = device_sync(device)
    times = []
    with torch.no_grad():
        out = net(unary=u)
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = net(unary=u)
            sync()
            times.append(time.perf_counter() - t0)
    w = build_wiring(fg)
    slots = w.slots.base.size + sum(r.size for r in w.slots.rows)
    row = {
        "build_s": declare_s + compile_s,
        "s_per_iter": statistics.median(times) / iters,
        "path": "binary" if net.binary_fast else "pairwise" if net.pairwise_fast else "general",
        "max_degree": w.max_degree,
        "buckets": len(w.slots.vars),
        "slots": slots,
        "one_table_slots": num_vars * w.max_degree,
        "peak_rss_gb": rss_gb("VmHWM"),
        "peak_rss_is_per_row": reset_ok,
    }
    return row, out.log_marginals.double().exp().cpu()[torch.from_numpy(x.ids)].numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--graphs", nargs="+", default=["star", "ba"], choices=["star", "ba"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10000, 100000])
    ap.add_argument("--ks", nargs="+", type=int, default=[2, 8])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pgmax-python", default=None, help="a Python that can import pgmax")
    ap.add_argument("--pgmax-timeout", type=float, default=1800.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    pgmax = args.pgmax_python
    if pgmax is not None and (why := pgmax_available(pgmax)) is not None:
        print(f"PGMax not run: {why}")
        pgmax = None
    print(
        f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; BP, "
        f"{args.iters} iterations, damping {args.damping}, float32"
    )
    head = f"{'graph':>6}{'V':>8}{'K':>3}{'D':>7}{'path':>9}{'slots':>10}{'one table':>12}"
    head += f"{'build s':>9}{'s/iter':>10}{'RSS GB':>8}{'err':>9}"
    if pgmax:
        head += f"{'PGMax build':>12}{'PGMax s/it':>11}{'PGMax GB':>9}{'PGMax err':>10}"
        head += f"{'ratio':>7}{'max|dP|':>9}"
    print(head)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.graphs:
            for size in args.sizes:
                for k in args.ks:
                    pot = make_graph(kind, size, k, args.seed)
                    r, marg = run_pgmunfold(
                        pot, args.iters, args.damping, args.repeats, args.device
                    )
                    r.update(graph=kind, V=len(pot["unary"]), K=k, factors=len(pot["pairs"]))
                    line = f"{kind:>6}{r['V']:>8}{k:>3}{r['max_degree']:>7}{r['path']:>9}"
                    line += f"{r['slots']:>10}{r['one_table_slots']:>12}{r['build_s']:>9.2f}"
                    line += f"{r['s_per_iter']:>10.2e}{r['peak_rss_gb']:>8.2f}"
                    exact = star_marginals(pot) if kind == "star" else None
                    if exact is not None:
                        r["max_err_exact"] = float(np.abs(marg - exact).max())
                    line += f"{r.get('max_err_exact', float('nan')):>9.1e}"
                    if pgmax:
                        npz = Path(tmp) / f"{kind}_{size}_{k}.npz"
                        # (numpy's stubs: ``**pot`` could bind savez's ``allow_pickle: bool``)
                        np.savez(npz, **pot)  # type: ignore[arg-type]
                        p, pm = run_pgmax(
                            pgmax, npz, args.iters, args.damping, args.repeats, "evidence",
                            args.pgmax_timeout,
                        )  # fmt: skip
                        r["pgmax"] = p
                        if pm is not None:
                            r.update(marginal_diff(marg, pm))
                            r["ratio"] = p["s_per_iter"] / r["s_per_iter"]
                            line += f"{p['build_s'] + p['compile_s']:>12.2f}"
                            line += f"{p['s_per_iter']:>11.2e}{p['peak_rss_gb']:>9.2f}"
                            if exact is not None:
                                p["max_err_exact"] = float(np.abs(pm - exact).max())
                            line += f"{p.get('max_err_exact', float('nan')):>10.1e}"
                            line += f"{r['ratio']:>7.2f}{r['max_abs_diff']:>9.1e}"
                        else:
                            line += f"  PGMax: {p.get('error', '?')}"
                    print(line, flush=True)
                    rows.append(r)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
