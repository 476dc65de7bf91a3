"""Accuracy of unfolded BP and mean-field on the UAI 2014 MAR benchmark instances.

For every ``NAME.uai`` in the data folder (default ``../shared/data/uai2014-mar`` next to the
repository) with its ``.evid`` evidence and exact ``.MAR`` marginals, runs

* BP with the flooding (parallel) and the sequential schedule, no damping; when neither
  converges, damped BP (``--retry-damping``), parallel then sequential, stopping at the first
  that converges (every attempt gets a row);
* mean-field, sequential schedule (monotone free energy).

Each configuration is compiled for ``T = start, 2 start, 4 start, ...`` iterations up to its cap
until the last-iteration residual drops to ``--tol``; the ``iters`` column is that ``T`` (an upper
bound, within a factor 2, on the iterations needed), ``sec`` the time of that last run
(compilation + forward). Errors are ``max_x |p_i(x) - q_i(x)|``, maximised (``max err``) and
averaged (``mean err``) over variables, against the exact ``.MAR``.

Usage::

    python benchmarks/uai_mar.py [--only Grids] [--algorithms bp,mf] [--max-iterations 1600]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgmunfold.cli import RunResult, load_model, marginal_errors, run_inference
from pgmunfold.graph import FactorGraph
from pgmunfold.io import read_uai_evidence, read_uai_mar

logger = logging.getLogger("uai_mar")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "uai2014-mar"


@dataclass
class Config:
    algorithm: str
    schedule: str
    damping: float
    cap: int

    @property
    def label(self) -> str:
        sched = "par" if self.schedule == "parallel" else "seq"
        return f"{self.algorithm} {sched} d={self.damping:g}"


def doubling(start: int, cap: int) -> Iterator[int]:
    t = start
    while t < cap:
        yield t
        t *= 2
    yield cap


def solve(fg: FactorGraph, ev: dict[int, int], cfg: Config, args: argparse.Namespace) -> RunResult:
    """Run ``cfg`` with doubling iteration counts until converged, the cap, or the budget."""
    res: RunResult | None = None
    for t in doubling(min(args.start, cfg.cap), cfg.cap):
        res = run_inference(
            fg,
            ev,
            algorithm=cfg.algorithm,
            iterations=t,
            damping=cfg.damping,
            schedule=cfg.schedule,
            tol=args.tol,
            device=args.device,
        )
        logger.info("%s T=%d residual %.2e %.2fs", cfg.label, t, res.residual, res.seconds)
        if res.converged or res.seconds > args.budget:
            break
    assert res is not None
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", default="", help="substring of the instance names to run")
    parser.add_argument("--algorithms", default="bp,mf")
    parser.add_argument("--start", type=int, default=25, help="first iteration count")
    parser.add_argument("--max-iterations", type=int, default=1600, help="cap, parallel BP / MF")
    parser.add_argument("--max-sequential", type=int, default=400, help="cap, sequential BP")
    parser.add_argument("--retry-damping", type=float, default=0.5)
    parser.add_argument("--no-retry", action="store_true")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="stop doubling after a run longer than this (seconds)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    algorithms = args.algorithms.split(",")
    files = sorted(p for p in args.data.glob("*.uai") if args.only in p.name)
    if not files:
        raise SystemExit(f"no .uai files matching {args.only!r} in {args.data}")
    head = (
        f"| {'instance':<22} | {'vars':>5} | {'factors':>7} | {'arity/card':>10} | "
        f"{'method':<15} | {'conv':<4} | {'iters':>5} | {'sec':>7} | {'max err':>9} | "
        f"{'mean err':>9} | {'log Z':>10} |"
    )
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|", flush=True)
    t_all = time.perf_counter()
    for path in files:
        fg = load_model(path)
        evid = path.with_name(path.name + ".evid")
        ev = read_uai_evidence(evid, fg=fg) if evid.exists() else {}
        ref = read_uai_mar(path.with_name(path.name + ".MAR"))
        arity = max((g.arity for g in fg.groups), default=0)
        card = int(fg.cardinalities.max()) if len(fg) else 0
        rows: list[tuple[Config, RunResult]] = []
        if "bp" in algorithms:
            first = [
                Config("bp", "parallel", 0.0, args.max_iterations),
                Config("bp", "sequential", 0.0, args.max_sequential),
            ]
            rows += [(cfg, solve(fg, ev, cfg, args)) for cfg in first]
            if not args.no_retry and not any(r.converged for _, r in rows):
                d = args.retry_damping
                for cfg in (
                    Config("bp", "parallel", d, args.max_iterations),
                    Config("bp", "sequential", d, args.max_sequential),
                ):
                    rows.append((cfg, solve(fg, ev, cfg, args)))
                    if rows[-1][1].converged:
                        break
        if "mf" in algorithms:
            cfg = Config("mf", "sequential", 0.0, args.max_iterations)
            rows.append((cfg, solve(fg, ev, cfg, args)))
        for cfg, res in rows:
            mx, mean = marginal_errors(res.marginals, ref)
            print(
                f"| {path.stem:<22} | {len(fg):>5} | {fg.num_factors:>7} | "
                f"{f'{arity}/{card}':>10} | {cfg.label:<15} | "
                f"{'yes' if res.converged else 'NO':<4} | {res.iterations:>5} | "
                f"{res.seconds:>7.2f} | {mx:>9.2e} | {mean:>9.2e} | "
                f"{res.log_partition:>10.4f} |",
                flush=True,
            )
    logger.warning("total %.1f s", time.perf_counter() - t_all)


if __name__ == "__main__":
    main()
