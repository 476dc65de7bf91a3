"""What fresh memory costs a forward on CPU: page faults per call, with glibc's default
allocator settings and with settings that keep freed memory mapped.

glibc gives large freed blocks back to the kernel (``munmap``, or trimming the heap's top),
so the next allocation of that size faults its pages in again, one by one. On the virtual
machines measured here a fault costs about 3 us (0.75 ms per MB), more than the arithmetic
of a memory-bound BP iteration on the same bytes. pgmunfold keeps its no-grad buffers
between forwards (:class:`~pgmunfold.infer.workspace.WorkspacePool`), but what autograd
saves, and each result, are fresh tensors. The environment variables
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` (read by glibc at start-up) make it
keep freed memory for reuse instead; the price is a resident size that stays at its peak.

This script times the same calls in child processes with and without those variables,
alternated ``--passes`` times, and prints the median time and the faults per call. Model:
the N x N grid of :mod:`benchmarks.grid_lbp` (sum-product BP, damping 0.5, float32); a
training call is a forward plus the backward of the summed probabilities of state 0.

Run: ``python -m benchmarks.page_faults [--sizes 32 100 300] [--ks 2 8] [--iters 10]
[--modes nograd train] [--passes 2] [--repeats 10] [--threads 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

TUNED = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}
"""Keep blocks up to 1 GiB on the heap, and never trim its top below 4 GiB."""


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker(n: int, k: int, iters: int, mode: str, repeats: int, threads: int) -> dict[str, Any]:
    """Median seconds and mean minor page faults per call, in this process."""
    import pgmunfold as pu
    from benchmarks.ab_forward import forward_call
    from benchmarks.grid_lbp import build

    torch.set_num_threads(threads)
    fg, _ = build(n, k)
    net = pu.compile(fg, iterations=iters, damping=0.5)

    call = forward_call(net, mode)
    for _ in range(3):
        call()
    times, faults = [], 0
    for _ in range(repeats):
        f0, t0 = _faults(), time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        faults += _faults() - f0
    return {"s_per_call": statistics.median(times), "faults_per_call": faults / repeats}


def run_child(args: argparse.Namespace, n: int, k: int, mode: str, tuned: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in TUNED}
    if tuned:
        env.update(TUNED)
    cmd = [sys.executable, "-m", "benchmarks.page_faults", "--worker"]
    cmd += ["--sizes", str(n), "--ks", str(k), "--iters", str(args.iters), "--modes", mode]
    cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 100, 300])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--modes", nargs="+", choices=["nograd", "train"], default=["nograd", "train"])
    ap.add_argument("--passes", type=int, default=2, help="alternations of the two settings")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per child")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        r = worker(args.sizes[0], args.ks[0], args.iters, args.modes[0], args.repeats, args.threads)
        print(json.dumps(r))
        return
    print(
        f"torch {torch.__version__}, cpu, {args.threads} thread(s), T={args.iters}; median of"
        f" {args.repeats} calls per child, best child of {args.passes}; faults: MB per call"
    )
    print(
        f"{'N':>5}{'K':>3} {'mode':<7}{'default ms':>12}{'(MB)':>8}{'tuned ms':>10}{'(MB)':>8}"
        f"{'default/tuned':>15}"
    )
    rows = []
    for n in args.sizes:
        for k in args.ks:
            for mode in args.modes:
                runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
                for _ in range(args.passes):
                    for tuned in (False, True):
                        runs[tuned].append(run_child(args, n, k, mode, tuned))
                best = {t: min(r, key=lambda x: x["s_per_call"]) for t, r in runs.items()}
                row = {"N": n, "K": k, "T": args.iters, "mode": mode}
                for t, name in ((False, "default"), (True, "tuned")):
                    row[f"{name}_s"] = best[t]["s_per_call"]
                    row[f"{name}_faults"] = best[t]["faults_per_call"]
                    row[f"{name}_all_s"] = [r["s_per_call"] for r in runs[t]]
                rows.append(row)
                mb = 4096 / 2**20
                print(
                    f"{n:>5}{k:>3} {mode:<7}{row['default_s'] * 1e3:>12.2f}"
                    f"{row['default_faults'] * mb:>8.1f}{row['tuned_s'] * 1e3:>10.2f}"
                    f"{row['tuned_faults'] * mb:>8.1f}{row['default_s'] / row['tuned_s']:>15.2f}"
                )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
