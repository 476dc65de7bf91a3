"""Side-by-side comparison of pgmunfold and PGMax (JAX) loopy BP on identical grid potentials.

For every (N, K) the potentials of an N x N 4-neighbour grid are drawn once (unary ~ N(0, 1),
pairwise tables ~ 0.5 N(0, 1), float32, in the draw order of ``benchmarks/grid_lbp.py``), saved
as an ``.npz``, and run by pgmunfold in this process and by PGMax in a subprocess that uses a
separate Python environment (``benchmarks/pgmax_runner.py``). Both run sum-product flooding BP
for the same number of iterations with the same damping (log-domain ``d * old + (1 - d) * new``)
from uniform messages; the marginals are compared element-wise.

Unaries (``--unary-mode``): ``evidence`` (default) passes them as pgmunfold's ``unary=`` input
and as PGMax evidence, both added to beliefs undamped; ``factor`` declares them as unary factors
in both (their messages are damped from uniform, as in ``grid_lbp``).

Run with the project environment, e.g.::

    python -m benchmarks.compare_pgmax --pgmax-python /tmp/pgmax-venv/bin/python \\
        [--sizes 32 100 300] [--ks 2 8] [--include-1000] [--iters 100] [--repeats 3] \\
        [--f64-reference] [--json out.json]

Timings are medians over ``--repeats`` calls after a warm-up call. The ratio is PGMax time /
pgmunfold time (> 1: pgmunfold faster). Peak RSS is each process's high-water mark for that row
(pgmunfold's is reset before each row through ``/proc/self/clear_refs``; PGMax runs in a fresh
process per row); both include the framework's own footprint (torch / jax), shown separately as
the baseline. Without PGMax the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pgmunfold as pu
from benchmarks.common import device_sync, median_time
from benchmarks.grid_lbp import capture_cuda_graph
from pgmunfold.network import Contraction

RUNNER = Path(__file__).with_name("pgmax_runner.py")
DEFAULT_PGMAX_PYTHON = "/tmp/pgmax-venv/bin/python"


# ---------------------------------------------------------------------------- potentials
def grid_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical neighbour pairs of an ``n x n`` grid as row-major ids."""
    ids = np.arange(n * n, dtype=np.int64).reshape(n, n)
    h = np.stack([ids[:, :-1], ids[:, 1:]], -1).reshape(-1, 2)
    v = np.stack([ids[:-1], ids[1:]], -1).reshape(-1, 2)
    return h, v


def make_potentials(n: int, k: int, seed: int) -> dict[str, np.ndarray]:
    """Draw the grid's float32 potentials (same draw order as ``grid_lbp.build``).

    Returns:
        ``unary`` ``(N, N, K)``, ``h_pairs``/``v_pairs`` ``(F, 2)`` row-major variable ids,
        ``h_tables``/``v_tables`` ``(F, K, K)`` indexed ``[state of pair[0], state of pair[1]]``.
    """
    rng = np.random.default_rng(seed)
    h, v = grid_pairs(n)
    unary = rng.standard_normal((n * n, k)).astype(np.float32)
    tables = (0.5 * rng.standard_normal((len(h) + len(v), k, k))).astype(np.float32)
    return {
        "unary": unary.reshape(n, n, k),
        "h_pairs": h,
        "v_pairs": v,
        "h_tables": tables[: len(h)],
        "v_tables": tables[len(h) :],
    }


# ---------------------------------------------------------------------------- memory
def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS high-water mark (Linux ``clear_refs``); False if unable."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_gb(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) in GB; ``ru_maxrss`` where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


# ---------------------------------------------------------------------------- pgmunfold
def build_pgmunfold(
    pot: dict[str, np.ndarray], unary_mode: str
) -> tuple[pu.FactorGraph, np.ndarray]:
    """Declare the grid in pgmunfold; returns the graph and the pgmunfold id of each grid cell."""
    n, _, k = pot["unary"].shape
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (n, n), k)
    flat = x.ids.reshape(-1)
    pairs = flat[np.concatenate([pot["h_pairs"], pot["v_pairs"]])]
    tables = np.concatenate([pot["h_tables"], pot["v_tables"]])
    if unary_mode == "factor":
        fg.add_factors(flat.reshape(-1, 1), pot["unary"].reshape(n * n, k), name="unary")
    fg.add_factors(pairs, tables, name="pairwise")
    return fg, flat


def dense_unary(pot: dict[str, np.ndarray], flat: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """The ``(V, K)`` unary input of the network, rows in pgmunfold's variable order."""
    n, _, k = pot["unary"].shape
    u = torch.zeros(n * n, k, dtype=dtype)
    u[torch.from_numpy(flat)] = torch.from_numpy(pot["unary"].reshape(n * n, k)).to(dtype)
    return u


def run_pgmunfold(
    pot: dict[str, np.ndarray],
    iters: int,
    damping: float,
    repeats: int,
    unary_mode: str,
    dtype: torch.dtype = torch.float32,
    timed: bool = True,
    device: str = "cpu",
    backend: str = "torch",
) -> tuple[dict[str, Any], np.ndarray]:
    """Declare, compile and time pgmunfold BP on ``pot``.

    Args:
        pot: potentials from :func:`make_potentials`.
        iters: unfolded BP iterations.
        damping: weight of the old log-message.
        repeats: timed calls after the warm-up (median reported).
        unary_mode: ``"evidence"`` (``unary=`` input) or ``"factor"`` (unary factors).
        dtype: float dtype of the network.
        timed: ``False``: one call only (a reference run).
        device: ``"cpu"`` or ``"cuda"``. On CUDA the network uses ``contraction="matmul"``
            (no host read, so it can be captured) and is also timed as a CUDA-graph replay.
        backend: the network's ``backend`` (``"triton"``: the fused kernels, CUDA only).

    Returns:
        The result row and the marginals ``(N, N, K)`` as float64 numpy.
    """
    n, _, k = pot["unary"].shape
    reset_ok = reset_peak_rss()
    baseline = rss_gb("VmRSS")
    t0 = time.perf_counter()
    fg, flat = build_pgmunfold(pot, unary_mode)
    declare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    contraction: Contraction = "matmul" if device == "cuda" else "auto"
    net = pu.compile(
        fg,
        algorithm="bp",
        iterations=iters,
        damping=damping,
        dtype=dtype,
        contraction=contraction,
        backend=backend,  # type: ignore[arg-type]
    ).to(device)
    compile_s = time.perf_counter() - t0
    u = dense_unary(pot, flat, dtype).to(device) if unary_mode == "evidence" else None
    sync = device_sync(device)
    times: list[float] = []
    cpu: list[float] = []
    graph_s: float | None = None
    with torch.no_grad():
        t0 = time.perf_counter()
        out = net(unary=u)
        sync()
        first_call_s = time.perf_counter() - t0
        for _ in range(repeats if timed else 0):
            c0, t0 = time.process_time(), time.perf_counter()
            out = net(unary=u)
            sync()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        if device == "cuda" and timed:
            graph_s = _graph_replay_s(functools.partial(net, unary=u), repeats)
    t_med = statistics.median(times) if times else first_call_s
    marg = out.log_marginals.double().exp().cpu()[torch.from_numpy(flat)].numpy().reshape(n, n, k)
    row = {
        "impl": "pgmunfold",
        "dtype": str(dtype).removeprefix("torch."),
        "binary_fast_path": bool(net.binary_fast),
        "backend": backend,
        "torch_threads": torch.get_num_threads(),
        "declare_s": declare_s,
        "compile_s": compile_s,
        "build_s": declare_s + compile_s,
        "first_call_s": first_call_s,
        "times_s": times,
        "cpu_s": cpu,  # process CPU seconds per timed call (all threads)
        "s_per_iter": t_med / iters,
        "msgs_per_s": 2 * (2 * n * (n - 1)) * iters / t_med,
        "baseline_rss_gb": baseline,
        "peak_rss_gb": rss_gb("VmHWM"),
        "peak_rss_is_per_row": reset_ok,
        "residual": float(out.residual),
        "device": device,
    }
    if graph_s is not None:
        row["graph_s_per_iter"] = graph_s / iters
    if device == "cuda":
        row["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        torch.cuda.reset_peak_memory_stats()
    del net, out
    return row, marg


def _graph_replay_s(call: Any, repeats: int) -> float:
    """Median seconds of a CUDA-graph replay of ``call()`` (captured once, after a warm-up on a
    side stream)."""
    graph, _ = capture_cuda_graph(call)
    graph.replay()
    torch.cuda.synchronize()
    return median_time(graph.replay, torch.cuda.synchronize, max(repeats, 3))


# ---------------------------------------------------------------------------- PGMax
def pgmax_available(python: str) -> str | None:
    """``None`` when ``python`` can import jax and pgmax, else the reason it cannot."""
    if not Path(python).exists():
        return f"{python} does not exist"
    code = "import sys; sys.path.insert(0, sys.argv[1]); import pgmax_runner as r; "
    code += "r._alias_backend(); import jax, pgmax"
    try:
        proc = subprocess.run(
            [python, "-c", code, str(RUNNER.parent)], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{python}: {err}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"{python} cannot import pgmax/jax: {lines[-1] if lines else proc.returncode}"
    return None


def run_pgmax(
    python: str,
    npz: Path,
    iters: int,
    damping: float,
    repeats: int,
    unary_mode: str,
    timeout: float,
    single_thread: bool = False,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run ``pgmax_runner.py`` on ``npz`` in a subprocess; returns its row and marginals.

    ``single_thread`` asks XLA for one intra-op thread (``XLA_FLAGS``)."""
    out_json = npz.with_suffix(".pgmax.json")
    out_marg = npz.with_suffix(".pgmax.npy")
    cmd = [python, str(RUNNER), str(npz), "--iters", str(iters), "--damping", str(damping)]
    cmd += ["--repeats", str(repeats), "--unary-mode", unary_mode]
    cmd += ["--marginals-out", str(out_marg), "--json", str(out_json)]
    env = dict(os.environ)
    if single_thread:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"impl": "pgmax", "error": f"timed out after {timeout:.0f} s"}, None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        return {"impl": "pgmax", "error": f"exit {proc.returncode}: {tail}"}, None
    row = json.loads(out_json.read_text())
    row["subprocess_wall_s"] = wall
    return row, np.load(out_marg).astype(np.float64)


# ---------------------------------------------------------------------------- comparison
def marginal_diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Max / mean absolute difference and the fraction of equal arg-max states."""
    d = np.abs(a - b)
    return {
        "max_abs_diff": float(d.max()),
        "mean_abs_diff": float(d.mean()),
        "argmax_agree": float((a.argmax(-1) == b.argmax(-1)).mean()),
    }


def compare_row(n: int, k: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Generate the potentials of one (N, K), run both engines, compare the marginals."""
    pot = make_potentials(n, k, args.seed)
    npz = workdir / f"grid_N{n}_K{k}_seed{args.seed}.npz"
    np.savez(npz, **pot)  # type: ignore[arg-type]
    load0 = os.getloadavg()
    pu_row, pu_marg = run_pgmunfold(
        pot,
        args.iters,
        args.damping,
        args.repeats,
        args.unary_mode,
        device=args.device,
        backend=args.backend,
    )
    px_row, px_marg = run_pgmax(
        args.pgmax_python,
        npz,
        args.iters,
        args.damping,
        args.repeats,
        args.unary_mode,
        args.timeout,
        single_thread=args.threads == 1,
    )
    row: dict[str, Any] = {
        "N": n,
        "K": k,
        "iters": args.iters,
        "damping": args.damping,
        "unary_mode": args.unary_mode,
        "seed": args.seed,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
        "pgmunfold": pu_row,
        "pgmax": px_row,
    }
    if px_marg is not None:
        row["ratio"] = px_row["s_per_iter"] / pu_row["s_per_iter"]
        if "graph_s_per_iter" in pu_row:
            row["graph_ratio"] = px_row["s_per_iter"] / pu_row["graph_s_per_iter"]
        # the same ratio on process CPU time (median per call), less sensitive to time slicing
        # on a shared machine; it counts every busy (or spinning) thread of each engine
        row["cpu_ratio"] = statistics.median(px_row["cpu_s"]) / statistics.median(pu_row["cpu_s"])
        row.update(marginal_diff(pu_marg, px_marg))
    if args.f64_reference:
        _, ref = run_pgmunfold(
            pot, args.iters, args.damping, 0, args.unary_mode, torch.float64, timed=False
        )
        row["pgmunfold_f32_vs_f64"] = marginal_diff(pu_marg, ref)
        if px_marg is not None:
            row["pgmax_vs_pgmunfold_f64"] = marginal_diff(px_marg, ref)
    if not args.keep_files:
        for p in (npz, npz.with_suffix(".pgmax.json"), npz.with_suffix(".pgmax.npy")):
            p.unlink(missing_ok=True)
    return row


HEADER = (
    f"{'N':>5}{'K':>3}{'pu s/it':>10}{'PGMax s/it':>11}{'ratio':>7}{'cpu r':>7}{'pu Mmsg/s':>10}"
    f"{'PGMax Mmsg/s':>13}{'pu build':>9}{'PGMax b+c':>13}{'pu RSS':>8}{'PGMax RSS':>10}"
    f"{'max|dmarg|':>11}"
)


def format_row(r: dict[str, Any]) -> str:
    """One line of the table (GB for RSS, seconds for build/compile)."""
    p, x = r["pgmunfold"], r["pgmax"]
    line = (
        f"{r['N']:>5}{r['K']:>3}{p['s_per_iter']:>10.2e}"
        if "s_per_iter" in p
        else f"{r['N']:>5}{r['K']:>3}{'-':>10}"
    )
    if "error" in x:
        line += f"{'-':>11}{'-':>7}{'-':>7}{p['msgs_per_s'] / 1e6:>10.1f}{'-':>13}"
        line += f"{p['build_s']:>9.2f}{'-':>13}{p['peak_rss_gb']:>8.2f}{'-':>10}{'-':>11}"
        return line + f"   PGMax failed: {x['error'].splitlines()[-1]}"
    bc = f"{x['build_s']:.1f}+{x['compile_s']:.1f}"
    line += f"{x['s_per_iter']:>11.2e}{r['ratio']:>7.2f}{r['cpu_ratio']:>7.2f}"
    line += f"{p['msgs_per_s'] / 1e6:>10.1f}"
    line += f"{x['msgs_per_s'] / 1e6:>13.1f}{p['build_s']:>9.2f}{bc:>13}"
    line += f"{p['peak_rss_gb']:>8.2f}{x['peak_rss_gb']:>10.2f}{r['max_abs_diff']:>11.1e}"
    if "graph_ratio" in r:
        line += f"   CUDA graph: pu {p['graph_s_per_iter']:.2e} s/it, ratio {r['graph_ratio']:.2f}"
    if "backend" in x:
        line += f"   PGMax on {x['backend']}"
    return line


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 100, 300])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--include-1000", action="store_true", help="also N=1000 (for --ks-1000)")
    ap.add_argument("--ks-1000", type=int, nargs="+", default=[2])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unary-mode", choices=["evidence", "factor"], default="evidence")
    ap.add_argument("--pgmax-python", default=DEFAULT_PGMAX_PYTHON)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's); 1 also asks XLA for one thread",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds per PGMax run")
    ap.add_argument(
        "--backend",
        choices=["torch", "triton"],
        default="torch",
        help="pgmunfold's backend (triton: the fused kernels; CUDA only)",
    )
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="pgmunfold's device; PGMax runs on jax's default backend (say which: see the rows)",
    )
    ap.add_argument("--f64-reference", action="store_true", help="also diff vs pgmunfold f64")
    ap.add_argument("--workdir", default=None, help="where the .npz files go (default: temp)")
    ap.add_argument("--keep-files", action="store_true", help="keep .npz and PGMax outputs")
    ap.add_argument("--json", default=None, help="also write all rows here")
    args = ap.parse_args(argv)
    if args.iters < 1 or args.repeats < 1:
        ap.error("--iters and --repeats must be >= 1")

    reason = pgmax_available(args.pgmax_python)
    if reason is not None:
        print(f"PGMax is not available ({reason}); nothing to compare.")
        print("Install it in a separate environment, e.g.:")
        print("  python3 -m venv /tmp/pgmax-venv")
        print("  /tmp/pgmax-venv/bin/pip install jax==0.7.2 jaxlib==0.7.2 numba")
        print("  /tmp/pgmax-venv/bin/pip install --no-deps pgmax==0.6.1")
        print("and pass --pgmax-python /tmp/pgmax-venv/bin/python.")
        return 0

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    grid = [(n, k) for n in sorted(set(args.sizes)) for k in args.ks]
    if args.include_1000:
        grid += [(1000, k) for k in args.ks_1000 if (1000, k) not in grid]
    meta = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "iters": args.iters,
        "damping": args.damping,
        "repeats": args.repeats,
        "unary_mode": args.unary_mode,
        "threads_arg": args.threads,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
    }
    print(
        f"pgmunfold vs PGMax: sum-product BP, {args.iters} iterations, damping {args.damping}, "
        f"unaries as {args.unary_mode}, median of {args.repeats}; torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), load {meta['loadavg_start']}"
    )
    print("ratio = PGMax s/iter / pgmunfold s/iter (> 1: pgmunfold faster); cpu r = the same")
    print("on process CPU seconds (all threads); RSS = peak GB;")
    print("build = declare + compile (pgmunfold), build + jit compile (PGMax), seconds")
    print(HEADER, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare_pgmax_") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n, k in grid:
            row = compare_row(n, k, args, workdir)
            rows.append(row)
            line = format_row(row)
            if "pgmunfold_f32_vs_f64" in row:
                line += f"   f32-vs-f64: pu {row['pgmunfold_f32_vs_f64']['max_abs_diff']:.1e}"
                if "pgmax_vs_pgmunfold_f64" in row:
                    line += f" PGMax {row['pgmax_vs_pgmunfold_f64']['max_abs_diff']:.1e}"
            print(line, flush=True)
    meta["loadavg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
