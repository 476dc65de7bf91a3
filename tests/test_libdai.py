"""pgmunfold reproduces libDAI's own regression figures on its test graph ``testfast.fg``.

``testfast.out`` (shipped with libDAI) lists, per method, the max/avg variable error, the
max/avg factor error and the log Z error against exact inference. Same fixed points give the
same rows to the printed precision. libDAI measures errors by total variation distance.
"""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

import pgmunfold as pu

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "libdai"
pytestmark = pytest.mark.skipif(not (DATA / "testfast.fg").exists(), reason="shared data absent")


def _rows():
    rows = {}
    for line in (DATA / "testfast.out").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("BP", "MF"):
            rows[parts[0]] = [float(p) if p != "N/A" else None for p in parts[1:6]]
    return rows


def _exact_factor_marginals(fg):
    cards = [int(c) for c in fg.cardinalities]
    states = np.array(list(itertools.product(*[range(c) for c in cards])))
    logp = np.zeros(len(states))
    for scope, table in fg.factors():
        logp += table[tuple(states[:, v] for v in scope)]
    p = np.exp(logp - logp.max())
    p /= p.sum()
    out = []
    for g in fg.groups:
        for f in range(g.num_factors):
            scope = g.scopes[f]
            m = np.zeros(g.cards)
            np.add.at(m, tuple(states[:, v] for v in scope), p)
            out.append(m)
    return out


def _tv(a, b):
    """Total variation distance, libDAI's default error measure (= max abs diff when binary)."""
    return 0.5 * float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).sum())


def _close(ours, theirs):
    # printed with 4 significant digits: agree to half a unit of the last one
    assert ours == pytest.approx(theirs, rel=6e-4), (ours, theirs)


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_bp_row(schedule):
    fg = pu.read_fg(DATA / "testfast.fg")
    ref = _rows()["BP"]
    exact = pu.exact_marginals(fg)
    logz = float(pu.exact_log_partition(fg))
    out = pu.compile(fg, iterations=500, schedule=schedule, dtype=torch.float64)()
    assert float(out.residual) < 1e-9
    errs = [_tv(out.marginals[k].detach(), exact[k]) for k in exact]
    _close(max(errs), ref[0])
    _close(float(np.mean(errs)), ref[1])
    fex = _exact_factor_marginals(fg)
    fb = [b.exp().detach().numpy() for g in fg.groups for b in out.factor_log_beliefs[g.name]]
    ferrs = [_tv(a, b) for a, b in zip(fb, fex, strict=True)]
    _close(max(ferrs), ref[2])
    _close(float(np.mean(ferrs)), ref[3])
    _close(float(out.log_partition) - logz, ref[4])


@pytest.mark.parametrize("schedule", ["parallel", "sequential"])
def test_mf_row(schedule):
    fg = pu.read_fg(DATA / "testfast.fg")
    ref = _rows()["MF"]
    exact = pu.exact_marginals(fg)
    logz = float(pu.exact_log_partition(fg))
    damping = 0.5 if schedule == "parallel" else 0.0
    out = pu.compile(
        fg, algorithm="mf", iterations=500, schedule=schedule, damping=damping, dtype=torch.float64
    )()
    errs = [_tv(out.marginals[k].detach(), exact[k]) for k in exact]
    _close(max(errs), ref[0])
    _close(float(np.mean(errs)), ref[1])
    _close(float(out.log_partition) - logz, ref[4])
