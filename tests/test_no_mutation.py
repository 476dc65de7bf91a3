"""A forward (and its backward) never writes into the parameters or the inputs it reads, on
every path, with and without autograd (``torch.nn`` convention; several paths read the
parameters without copying them)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers import grid

import pgmunfold as pu


def _general(hard: bool) -> pu.FactorGraph:
    """A loopy graph with factors of arity 1 to 3, mixed cardinalities and a shared table."""
    rng = np.random.default_rng(3)
    fg = pu.FactorGraph()
    for v, c in enumerate([2, 3, 2, 4, 3]):
        fg.add_variable(v, c)
    fg.add_factors(np.array([[0], [2]]), rng.normal(size=(2, 2)), name="u")
    t3 = rng.normal(size=(1, 2, 3, 2))
    if hard:
        t3[0, 0, 0, 0] = -np.inf
    fg.add_factors(np.array([[0, 1, 2]]), t3, name="t3")
    fg.add_factors(np.array([[1, 4], [4, 1]]), rng.normal(size=(3, 3)), name="shared")
    fg.add_factors(np.array([[0, 3], [2, 3]]), rng.normal(size=(2, 2, 4)), name="p")
    return fg


def _graphs() -> dict[str, pu.FactorGraph]:
    return {
        "binary": grid(3, 2)[0],
        "binary-hard": grid(3, 2, hard=True)[0],
        "pairwise": grid(3, 3)[0],
        "pairwise-hard": grid(3, 3, hard=True)[0],
        "general": _general(False),
        "general-hard": _general(True),
    }


CONFIGS = [
    {},
    {"semiring": "max"},
    {"contraction": "logsumexp"},
    {"contraction": "enumerate"},
    {"fast_path": False},
    {"schedule": "sequential"},
    {"algorithm": "mf"},
    {"exact_cavity": True},
    {"untie": True, "damping": 0.3},
]


@pytest.mark.parametrize(("name", "cfg"), list(itertools.product(_graphs(), CONFIGS)))
def test_forward_and_backward_leave_parameters_and_inputs_alone(name, cfg):
    fg = _graphs()[name]
    net = pu.compile(fg, iterations=3, dtype=torch.float64, **cfg)
    with torch.no_grad():  # perturb every table so that a write-back would show
        for p in net.parameters():
            p.add_(torch.randn_like(p).mul_(0.1).nan_to_num_(neginf=0.0))
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    B, V, K = 2, len(fg.cardinalities), int(max(fg.cardinalities))
    unary = torch.randn(B, V, K, dtype=torch.float64)
    unary_before = unary.clone()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = net(unary=unary)
            loss = out.log_marginals.exp()[..., 0].sum()
            if cfg.get("algorithm", "bp") == "bp" and cfg.get("semiring", "sum") == "sum":
                loss = loss + out.log_partition.sum()
            out.map_states  # noqa: B018 (read: every output)
        if grad:
            loss.backward()
        for k, v in net.state_dict().items():
            assert torch.equal(v, before[k]), f"{name} {cfg}: forward (grad={grad}) wrote {k}"
        assert torch.equal(unary, unary_before), f"{name} {cfg}: forward wrote its input"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("untie", [False, True])
def test_parameters_are_copies_of_the_graphs_tables(dtype, untie):
    # (compiling copies each table once; training must never write into the graph's tables)
    fg = _general(True)
    before = [g.log_potentials.copy() for g in fg.groups]
    net = pu.compile(fg, iterations=2, dtype=dtype, untie=untie)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    for g, b in zip(fg.groups, before, strict=True):
        np.testing.assert_array_equal(g.log_potentials, b)
    again = pu.compile(fg, iterations=2, dtype=dtype, untie=untie)
    for p, q in zip(net.parameters(), again.parameters(), strict=True):
        finite = torch.isfinite(q)
        torch.testing.assert_close(p[finite], q[finite] + 1.0)
