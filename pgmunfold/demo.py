"""The demo behind ``python -m pgmunfold``: loopy BP and mean-field on a small grid, against
exact marginals; other subcommands are routed to :mod:`pgmunfold.cli` when it is present."""

from __future__ import annotations

import time

import numpy as np
import torch

import pgmunfold as pu


def _grid_demo() -> int:
    rng = np.random.default_rng(0)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (4, 4), 3)
    pairs = np.concatenate(
        [
            np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2),
            np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2),
        ]
    )
    fg.add_factors(x.ids.reshape(-1, 1), rng.normal(size=(16, 3)), name="unary")
    fg.add_factors(pairs, 0.6 * rng.normal(size=(len(pairs), 3, 3)), name="pairwise")
    exact = pu.exact_marginals(fg)
    logz = float(pu.exact_log_partition(fg))
    print(f"4x4 Potts grid, 3 states, {fg.num_factors} factors; exact log Z = {logz:.6f}")
    print(f"{'method':<28}{'max |marg err|':>16}{'log Z est.':>14}{'ms':>8}")
    for label, kw in [
        ("loopy BP, flooding", dict(algorithm="bp")),
        ("loopy BP, sequential", dict(algorithm="bp", schedule="sequential")),
        ("mean-field, sequential", dict(algorithm="mf", schedule="sequential")),
    ]:
        net = pu.compile(fg, iterations=50, dtype=torch.float64, **kw)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = net()
        ms = 1e3 * (time.perf_counter() - t0)
        err = max(float((out.marginals[k] - exact[k]).abs().max()) for k in exact)
        print(f"{label:<28}{err:>16.2e}{float(out.log_partition):>14.6f}{ms:>8.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pgmunfold``."""
    argv = list(argv or [])
    if argv:
        from pgmunfold import cli

        return int(cli.main(argv))
    return _grid_demo()
