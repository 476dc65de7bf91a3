"""pgmunfold against PGMax on the UAI 2014 MAR instances: small real models, many shapes.

Each ``NAME.uai`` of the data folder (default ``../shared/data/uai2014-mar``) is declared the
same way in both: its factor groups, with ``-inf`` raised to ``--floor`` (PGMax's
max-normalisation has no answer for a message row of ``-inf``; ``-200`` nats is a hard zero in
float32 all the same), and its evidence as one unary factor per observed variable (``0`` at the
observed state, ``--floor`` elsewhere). Both run sum-product flooding BP, ``--iters`` iterations
from uniform messages with log-domain damping ``--damping``, in float32; pgmunfold's time is the
minimum (``--stat min``, the least disturbed run, timeit's convention: on a shared machine the
median of a sub-millisecond forward moved by 2x between runs) or the median over ``--repeats``
forwards without autograd, PGMax's (``benchmarks/pgmax_fg_runner.py``, in its own environment,
every factor an ``EnumFactor``) the same statistic over as many calls of its compiled program;
the JSON keeps both. ``ratio`` = PGMax time / pgmunfold time (> 1: pgmunfold faster);
``max|dP|`` compares
the marginals, which agree where BP converges (``residual``: pgmunfold's last change) and may
not where it oscillates.

``--compile-steps`` compiles the general path's iteration (``compile_steps=True``); the first
forward, which compiles it, is reported and not timed.

Run: ``python -m benchmarks.uai_pgmax --pgmax-python /tmp/pgmax-venv/bin/python [--only DBN]
[--iters 50] [--repeats 15] [--passes 1] [--stat min] [--threads 1] [--compile-steps]
[--json out.json]``. ``--passes 3`` alternates the two three times per instance (each library
then has its least disturbed of three stretches of the machine's time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pgmunfold as pu
from benchmarks.common import write_json
from benchmarks.compare_pgmax import pgmax_available

RUNNER = Path(__file__).with_name("pgmax_fg_runner.py")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uai2014-mar"


def declare(path: Path, floor: float) -> tuple[pu.FactorGraph, dict[str, np.ndarray]]:
    """The instance (hard zeros at ``floor``, evidence as unary factors) as a pgmunfold graph
    and as the runner's ``.npz`` arrays."""
    src = pu.read_uai(path)
    evid = Path(str(path) + ".evid")
    evidence = pu.read_uai_evidence(evid) if evid.exists() else {}
    fg = pu.FactorGraph()
    cards = np.asarray(src.cardinalities, dtype=np.int64)
    for v, c in enumerate(cards):
        fg.add_variable(v, int(c))
    arrays: dict[str, np.ndarray] = {"cards": cards}
    blocks = [
        (g.scopes, np.broadcast_to(g.log_potentials, (g.num_factors, *g.cards)))
        for g in src.groups
        if g.arity > 0
    ]
    for v, s in evidence.items():
        t = np.full((1, int(cards[v])), floor)
        t[0, s] = 0.0
        blocks.append((np.array([[v]]), t))
    for i, (scopes, tables) in enumerate(blocks):
        tables = np.maximum(tables, floor)
        fg.add_factors(scopes, tables, name=f"g{i}")
        arrays[f"scopes_{i}"], arrays[f"tables_{i}"] = scopes, tables
    arrays["n_groups"] = np.array(len(blocks))
    return fg, arrays


def instance_paths(data: Path, only: str) -> list[Path]:
    """The ``*.uai`` files of ``data`` whose name contains ``only``, sorted; none: says so."""
    paths = [p for p in sorted(data.glob("*.uai")) if only in p.stem]
    if not paths:
        print(f"no instance matching {only!r} in {data}")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", default="", help="instances whose name contains this")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--stat", choices=["min", "median"], default="min")
    ap.add_argument(
        "--passes", type=int, default=1, help="per instance, alternate the two this many times"
    )
    ap.add_argument("--floor", type=float, default=-200.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (PGMax: XLA's own)")
    ap.add_argument("--pgmax-python", default="/tmp/pgmax-venv/bin/python")
    ap.add_argument(
        "--compile-steps",
        action="store_true",
        help="pu.compile(..., compile_steps=True); its compile time is reported, not timed",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    why = pgmax_available(args.pgmax_python)
    if why is not None:
        print(f"PGMax not available ({why}): nothing to compare")
        return 0
    paths = instance_paths(args.data, args.only)
    if not paths:
        return 1
    torch.set_num_threads(args.threads)
    print(
        f"cpu, torch {torch.__version__}, {args.threads} thread(s); BP, {args.iters} iterations;"
        f" {args.stat} of {args.passes} x {args.repeats} runs"
    )
    print(
        f"{'instance':<24}{'path':>9}{'s/iter':>10}{'PGMax':>10}{'ratio':>7}{'max|dP|':>9}{'residual':>10}"
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            fg, arrays = declare(path, args.floor)
            npz, marg_out = Path(tmp) / "g.npz", Path(tmp) / "m.npy"
            # (numpy's stubs: ``**arrays`` could bind savez's ``allow_pickle: bool``)
            np.savez(npz, **arrays)  # type: ignore[arg-type]
            net = pu.compile(
                fg,
                iterations=args.iters,
                damping=args.damping,
                dtype=torch.float32,
                compile_steps=args.compile_steps,
            )
            times: list[float] = []
            with torch.no_grad():
                t0 = time.perf_counter()
                out = net()  # (with --compile-steps: compiles the step)
                first = time.perf_counter() - t0
            cmd = [args.pgmax_python, str(RUNNER), str(npz), "--iters", str(args.iters)]
            cmd += ["--damping", str(args.damping), "--repeats", str(args.repeats)]
            cmd += ["--marginals-out", str(marg_out)]
            runs: list[dict[str, Any]] = []
            for _ in range(args.passes):  # the two alternate: each sees the same machine
                with torch.no_grad():
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        out = net()
                        times.append(time.perf_counter() - t0)
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    break
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            path_name = (
                "binary" if net.binary_fast else "pairwise" if net.pairwise_fast else "general"
            )
            row: dict[str, Any] = {"instance": path.stem, "path": path_name}
            row["median_s_per_iter"] = statistics.median(times) / args.iters
            row["min_s_per_iter"] = min(times) / args.iters
            row["s_per_iter"] = row[f"{args.stat}_s_per_iter"]
            row["residual"] = float(out.residual)
            row["first_forward_s"] = first
            line = f"{path.stem:<24}{path_name:>9}{row['s_per_iter']:>10.2e}"
            if proc.returncode:
                row["pgmax_error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1]
                line += f"  PGMax: {row['pgmax_error'][:70]}"
            else:
                row["pgmax"] = {k: v for k, v in runs[0].items() if not k.endswith("per_iter")}
                row["pgmax"]["min_s_per_iter"] = min(r["min_s_per_iter"] for r in runs)
                # (the median of each pass's median)
                median = statistics.median(r["s_per_iter"] for r in runs)
                row["pgmax"]["median_s_per_iter"] = median
                row["pgmax"]["s_per_iter"] = row["pgmax"][f"{args.stat}_s_per_iter"]
                row["ratio"] = row["pgmax"]["s_per_iter"] / row["s_per_iter"]
                row["max_abs_diff"] = float(np.abs(out.probs.numpy() - np.load(marg_out)).max())
                line += f"{row['pgmax']['s_per_iter']:>10.2e}{row['ratio']:>7.2f}"
                line += f"{row['max_abs_diff']:>9.1e}{row['residual']:>10.1e}"
            if args.compile_steps:
                line += f"  first forward {first:.1f} s"
            print(line, flush=True)
            rows.append(row)
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
