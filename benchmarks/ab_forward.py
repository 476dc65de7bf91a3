"""Two checkouts of pgmunfold, forward against forward: an A/B of a code change on a noisy
machine.

Each measurement is a child process started in one checkout's directory (so it imports that
checkout's package): it builds the model, warms up three calls and prints the median of
``R`` timed calls. The checkouts alternate, one child each, ``--alternations`` times; the
table gives the median and the minimum of the children's medians per checkout, and the ratio
of the medians (> 1: the second checkout is faster). Make the first checkout with
``git worktree add /tmp/old <commit>``.

Models: ``--grids N:K:T:R`` (the grid of :mod:`benchmarks.grid_lbp`: sum-product BP, damping
0.5, float32, MAP states read) and ``--uai NAME:T:R`` (an instance of the UAI 2014 set, read
as :func:`benchmarks.uai_pgmax.declare` does). ``--mode train`` times a forward plus the
backward of the summed probabilities of state 0 (grids only). ``--mode build`` times the
declaration and compilation instead, once per child (the first build of a fresh process, as
a user meets it; ``T`` still sets the iterations, ``R`` is unused).

Run: ``python -m benchmarks.ab_forward --trees /tmp/old . [--grids 300:8:1:5 ...]
[--uai CSP_11:1:200 ...] [--alternations 5] [--mode nograd|train|build] [--threads 1]
[--compile contraction=logsumexp semiring=max ...]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def forward_call(net: Any, mode: str) -> Callable[[], None]:
    """One timed call: a no-grad forward reading the MAP states (``"nograd"``), or a forward
    and the backward of the summed probabilities of state 0 (``"train"``)."""
    import torch

    def call() -> None:
        if mode == "train":
            net.zero_grad(set_to_none=True)
            net().log_marginals.exp()[..., 0].sum().backward()
        else:
            with torch.no_grad():
                net().map_states  # noqa: B018 (read: part of the call)

    return call


def compile_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as keyword arguments of ``pu.compile`` (values read as Python
    literals where they parse, else as strings: ``contraction=logsumexp``, ``damping=0.2``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def worker(
    kind: str, spec: list[str], mode: str, threads: int, options: dict[str, Any]
) -> tuple[float, str]:
    """Median seconds of the timed calls, with the package of the working directory, and
    that package's path."""
    sys.path.insert(0, os.getcwd())
    import torch

    import pgmunfold as pu

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if kind == "grid":
        from benchmarks.grid_lbp import build

        n, k, T, reps = map(int, spec)
        fg, _ = build(n, k)
        net = pu.compile(fg, iterations=T, **{"damping": 0.5, **options})
    else:
        from benchmarks.uai_pgmax import DATA, declare

        name, T, reps = spec[0], int(spec[1]), int(spec[2])
        fg, _ = declare(DATA / f"{name}.uai", -200.0)
        net = pu.compile(fg, iterations=T, **{"damping": 0.5, "dtype": torch.float32, **options})
    if mode == "build":
        return time.perf_counter() - t0, str(Path(pu.__file__).resolve())

    call = forward_call(net, mode)
    for _ in range(3):
        call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), str(Path(pu.__file__).resolve())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs=2, required=True, help="the two checkouts (A, then B)")
    ap.add_argument("--grids", nargs="*", default=[], help="N:K:T:R")
    ap.add_argument("--uai", nargs="*", default=[], help="NAME:T:R")
    ap.add_argument("--alternations", type=int, default=5)
    ap.add_argument("--mode", choices=["nograd", "train", "build"], default="nograd")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", nargs="*", default=[], help="KEY=VALUE for pu.compile")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        options = compile_options(args.compile)
        print(json.dumps(worker(args.worker[0], args.worker[1:], args.mode, args.threads, options)))
        return
    trees = [str(Path(t).resolve()) for t in args.trees]
    jobs = [("grid", g.split(":")) for g in args.grids] + [("uai", u.split(":")) for u in args.uai]
    if any(len(s) != (4 if kind == "grid" else 3) for kind, s in jobs):
        ap.error("--grids takes N:K:T:R, --uai NAME:T:R")
    print(
        f"A: {trees[0]}\nB: {trees[1]}\n{args.mode}, {args.threads} thread(s); "
        f"{args.alternations} alternations, one child per checkout each; ms; "
        f"pu.compile options: {compile_options(args.compile) or 'none'}"
    )
    print(f"{'model':<24}{'A median':>10}{'A min':>9}{'B median':>10}{'B min':>9}{'A/B':>7}")
    rows: list[dict[str, Any]] = []
    script = str(Path(__file__).resolve())
    for kind, spec in jobs:
        res: dict[int, list[float]] = {0: [], 1: []}
        for _ in range(args.alternations):
            for i, tree in enumerate(trees):
                cmd = [sys.executable, script, "--trees", *trees, "--mode", args.mode]
                cmd += ["--threads", str(args.threads), "--compile", *args.compile]
                cmd += ["--worker", kind, *spec]
                out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=True)
                seconds, package = json.loads(out.stdout.strip().splitlines()[-1])
                if not package.startswith(tree + os.sep):
                    raise SystemExit(f"the child in {tree} imported {package}")
                res[i].append(seconds * 1e3)
        a, b = statistics.median(res[0]), statistics.median(res[1])
        label = (f"grid {spec[0]} K={spec[1]}" if kind == "grid" else spec[0]) + (f" T={spec[-2]}")
        print(f"{label:<24}{a:>10.3f}{min(res[0]):>9.3f}{b:>10.3f}{min(res[1]):>9.3f}{a / b:>7.2f}")
        rows.append({"model": label, "A_ms": res[0], "B_ms": res[1], "ratio_of_medians": a / b})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
