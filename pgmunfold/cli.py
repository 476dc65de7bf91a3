"""Command line: ``python -m pgmunfold infer MODEL [options]``.

Runs loopy BP or mean-field on a UAI (``.uai``) or libDAI (``.fg``) model, writes the marginals
in the UAI ``.MAR`` format and prints a one-line summary (time, iterations, convergence,
``log Z`` estimate); with ``--mar REF.MAR`` it also prints the largest and the mean absolute
marginal error against the reference.

Example::

    python -m pgmunfold infer Grids_11.uai --evid Grids_11.uai.evid --iterations 200 \\
        --damping 0.5 --out Grids_11.bp.MAR --mar Grids_11.uai.MAR
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import pgmunfold as pu
from pgmunfold.graph import FactorGraph
from pgmunfold.io import (
    format_uai_mar,
    read_fg,
    read_uai,
    read_uai_evidence,
    read_uai_mar,
    write_uai_mar,
)

__all__ = ["RunResult", "build_parser", "load_model", "main", "marginal_errors", "run_inference"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Outcome of one inference run.

    Attributes:
        marginals: probability vector per variable, in id order (UAI variable index order).
        log_partition: the network's ``log Z`` estimate (Bethe for BP, the MF lower bound).
        residual: largest change in the last iteration (messages for BP, marginals for MF).
        converged: ``residual <= tol``.
        iterations: number of iterations run.
        seconds: wall time of compilation plus the forward pass.
    """

    marginals: list[np.ndarray]
    log_partition: float
    residual: float
    converged: bool
    iterations: int
    seconds: float


def load_model(path: str | Path) -> FactorGraph:
    """Read a model by extension: ``.fg`` (libDAI), anything else as UAI."""
    p = Path(path)
    return read_fg(p) if p.suffix.lower() == ".fg" else read_uai(p)


def run_inference(
    fg: FactorGraph,
    evidence: Mapping[int, int] | None = None,
    *,
    algorithm: str = "bp",
    iterations: int = 100,
    damping: float = 0.0,
    schedule: str = "parallel",
    tol: float = 1e-6,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    backend: str = "torch",
) -> RunResult:
    """Compile ``fg`` with :func:`pgmunfold.compile` and run it once (no gradients).

    Args:
        fg: the model.
        evidence: ``{variable id: state}`` (variables of :func:`read_uai` models are named by
            their ids; for other graphs the ids are translated to names).
        algorithm, iterations, damping, schedule, backend: passed to :func:`pgmunfold.compile`.
        tol: residual below which the run counts as converged.
        dtype, device: where the network runs.
    """
    t0 = time.perf_counter()
    net = pu.compile(
        fg,
        algorithm=algorithm,  # type: ignore[arg-type]
        iterations=iterations,
        damping=damping,
        schedule=schedule,  # type: ignore[arg-type]
        dtype=dtype,
        backend=backend,  # type: ignore[arg-type]
    ).to(device)
    ev = {fg.variable_name(int(v)): int(s) for v, s in (evidence or {}).items()}
    with torch.no_grad():
        out = net(evidence=ev)
        probs = out.probs.detach().to("cpu", torch.float64).numpy()
        log_z = float(out.log_partition)
        residual = float(out.residual)
    seconds = time.perf_counter() - t0
    cards = fg.cardinalities.tolist()
    margs = [probs[i, :k].copy() for i, k in enumerate(cards)]
    return RunResult(
        margs, log_z, residual, bool(residual <= tol), int(out.iterations or iterations), seconds
    )


def marginal_errors(
    marginals: Sequence[np.ndarray], reference: Sequence[np.ndarray]
) -> tuple[float, float]:
    """Largest and mean (over variables) of ``max_x |p_i(x) - q_i(x)|``.

    Raises:
        ValueError: when the number of variables or a cardinality differs.
    """
    if len(marginals) != len(reference):
        raise ValueError(
            f"the reference has {len(reference)} variables, the model {len(marginals)}"
        )
    errs = np.zeros(len(marginals))
    for i, (p, q) in enumerate(zip(marginals, reference, strict=True)):
        if p.shape != q.shape:
            raise ValueError(f"variable {i}: the reference has {q.size} states, the model {p.size}")
        errs[i] = float(np.abs(p - q).max()) if p.size else 0.0
    if not len(errs):
        return 0.0, 0.0
    return float(errs.max()), float(errs.mean())


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pgmunfold`` argument parser (subcommand ``infer``)."""
    parser = argparse.ArgumentParser(
        prog="python -m pgmunfold",
        description="Unfolded loopy BP / mean-field inference on discrete factor graphs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inf = sub.add_parser(
        "infer",
        help="marginals of a UAI (.uai) or libDAI (.fg) model",
        description="Run BP or mean-field on MODEL, write UAI-format marginals, print a summary.",
    )
    inf.add_argument("model", metavar="MODEL", help="model file (.uai, or .fg for libDAI)")
    inf.add_argument("--evid", metavar="FILE", help="UAI evidence file")
    inf.add_argument("--algorithm", choices=("bp", "mf"), default="bp")
    inf.add_argument("--iterations", type=_positive_int, default=100, metavar="T")
    inf.add_argument("--damping", type=_damping, default=0.0, metavar="D", help="in [0, 1)")
    inf.add_argument("--schedule", choices=("parallel", "sequential"), default="parallel")
    inf.add_argument(
        "--out",
        metavar="FILE.MAR",
        help="output marginals (default: MODEL's file name + .MAR in the current directory; "
        "an existing file is only overwritten when named here; '-' writes them to stdout and "
        "the summary to stderr)",
    )
    inf.add_argument("--mar", metavar="REF.MAR", help="reference marginals to score against")
    inf.add_argument("--tol", type=float, default=1e-6, help="convergence tolerance")
    inf.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    inf.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    inf.add_argument(
        "--backend",
        choices=("torch", "triton"),
        default="torch",
        help="triton: fused GPU kernels (experimental; CUDA, parallel schedule, pairwise models)",
    )
    inf.add_argument("-v", "--verbose", action="store_true", help="log diagnostics")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _damping(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``main(["infer", "model.uai", ...])``; returns the exit status.

    Errors in the input files (``ValueError``, e.g. :class:`~pgmunfold.io.FormatError`) and
    unreadable files are reported on stderr with exit status 2.
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _infer(args)
    except (ValueError, OSError) as exc:
        print(f"python -m pgmunfold {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _infer(args: argparse.Namespace) -> int:
    model = Path(args.model)
    t0 = time.perf_counter()
    fg = load_model(model)
    evidence = read_uai_evidence(args.evid, fg=fg) if args.evid else {}
    reference = read_uai_mar(args.mar) if args.mar else None
    if reference is not None:  # check the shapes before running
        marginal_errors([np.zeros(int(k)) for k in fg.cardinalities.tolist()], reference)
    out_path = _output_path(args, model)
    logger.info(
        "read %s: %d variables, %d factors in %d groups, %d observed (%.3f s)",
        model,
        len(fg),
        fg.num_factors,
        len(fg.groups),
        len(evidence),
        time.perf_counter() - t0,
    )
    res = run_inference(
        fg,
        evidence,
        algorithm=args.algorithm,
        iterations=args.iterations,
        damping=args.damping,
        schedule=args.schedule,
        tol=args.tol,
        dtype=torch.float64 if args.dtype == "float64" else torch.float32,
        device=args.device,
        backend=args.backend,
    )
    if out_path is None:
        sys.stdout.write(format_uai_mar(res.marginals))
    else:
        write_uai_mar(res.marginals, out_path)
    state = "converged" if res.converged else "not converged"
    summary = (
        f"{model.name}: {args.algorithm} {args.schedule} damping={args.damping:g}"
        f"{'' if args.backend == 'torch' else ' backend=' + args.backend}: "
        f"{res.seconds:.3f} s, {res.iterations} iterations, residual {res.residual:.2e} "
        f"({state}), log Z = {res.log_partition:.6f}"
    )
    if reference is not None:
        mx, mean = marginal_errors(res.marginals, reference)
        summary += f", max |err| = {mx:.3e}, mean |err| = {mean:.3e}"
    if out_path is not None:
        summary += f" -> {out_path}"
    print(summary, file=sys.stderr if out_path is None else sys.stdout)
    return 0


def _output_path(args: argparse.Namespace, model: Path) -> Path | None:
    if args.out == "-":
        return None
    if args.out is not None:
        return Path(args.out)
    path = Path.cwd() / f"{model.name}.MAR"
    if path.exists():
        raise ValueError(
            f"{path} exists; name it with --out to overwrite it, or choose another --out"
        )
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
