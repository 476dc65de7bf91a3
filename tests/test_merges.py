"""Merges: groups of one arity padded to one table shape, one batched reduction per iteration on
the general path (compile/wiring.py :func:`plan_merges`). Their twin is the unmerged network
(every group its own merge), which must give the same result. BP runs the per-merge contraction
(``contraction="logsumexp"``): on these small graphs ``"auto"`` would take the enumerated one,
which does not use merges (tests/test_enumerated.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from helpers import (
    assert_same_beliefs,
    assert_same_values_and_grads,
    brute_force,
    distinct_copies,
    random_graphs,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import pgmunfold as pu
from pgmunfold.compile import wiring
from pgmunfold.compile.wiring import build_wiring, plan_merges


@contextlib.contextmanager
def _unmerged() -> Iterator[None]:
    """Every group of arity >= 1 its own merge (the layout before merges)."""
    saved = wiring.plan_merges

    def singletons(cards: list[tuple[int, ...]], counts: list[int]) -> list[list[int]]:
        return [[i] for i, c in enumerate(cards) if c]

    wiring.plan_merges = singletons
    try:
        yield
    finally:
        wiring.plan_merges = saved


def test_plan_merges_by_arity_and_padding_cost():
    cards = [(2,), (3, 3), (3,), (2, 3), (), (50, 50), (2, 2), (3, 2)]
    counts = [5, 10, 4, 10, 1, 100, 10000, 1000]
    merges = plan_merges(cards, counts)
    # unaries together (5 padded entries); the 2x3 tables join the 3x3 ones (30); arity 0 is
    # left out; the 50x50 tables would pad the others by 20 * 2491 entries and the 10000 2x2
    # tables would be padded by 50000: merges of their own; the 3x2 tables join the first
    # merge that fits, the 3x3 one (1020 * 9 - (150 + 6000) = 3030 <= 4096)
    assert merges == [[0, 2], [1, 3, 7], [5], [6]]
    small = plan_merges([(2, 2), (3, 2)], [1000, 100])  # 1100 * 6 - 4600 = 2000 <= 4096
    assert small == [[0, 1]]


def test_plan_merges_first_fit_keeps_declared_order_within_a_merge():
    merges = plan_merges([(2, 2), (2, 2, 2), (2, 2), (2, 2, 2)], [3, 3, 3, 3])
    assert merges == [[0, 2], [1, 3]]


@given(random_graphs(max_vars=6, max_factors=10))
def test_merged_layout_partitions_the_edges(fg):
    w = build_wiring(fg)
    E = w.num_edges
    covered = np.zeros(E, dtype=int)
    for g, sc in zip(w.groups, w.scopes, strict=True):
        assert g.edge_stop - g.edge_start == g.num_factors * g.arity
        covered[g.edge_start : g.edge_stop] += 1
        np.testing.assert_array_equal(w.edge_var[g.edge_start : g.edge_stop], sc.reshape(-1))
    assert (covered == 1).all()
    start = 0
    for m, members in zip(w.merges, w.merge_members, strict=True):
        assert m.edge_start == start
        for i in members:  # contiguous, in order, one arity, cards padded to the largest
            g = w.groups[i]
            assert g.edge_start == start and g.arity == m.arity
            assert all(k <= km for k, km in zip(g.cards, m.cards, strict=True))
            start = g.edge_stop
        assert m.edge_stop == start
        assert m.num_factors == sum(w.groups[i].num_factors for i in members)
    assert start == E


@given(
    random_graphs(max_vars=6, max_factors=10),
    st.sampled_from(["sum", "max"]),
    st.sampled_from([None, True]),
    st.booleans(),
)
def test_merged_bp_equals_unmerged(fg, semiring, exact, untie):
    kw = dict(iterations=5, damping=0.3, semiring=semiring, exact_cavity=exact, untie=untie)
    kw.update(dtype=torch.float64, fast_path=False, contraction="logsumexp")
    net = pu.compile(fg, **kw)
    with _unmerged():
        ref = pu.compile(fg, **kw)
    assume(len(net._merges) < len(ref._merges))
    if untie:  # distinct tables per iteration: the merges are rebuilt per copy
        distinct_copies(net, ref)
    a, b = net(), ref()
    assert_same_beliefs(a, b)


@given(
    random_graphs(max_vars=6, max_factors=10, hard_zeros=False),
    st.sampled_from(["parallel", "sequential"]),
)
def test_merged_mean_field_equals_unmerged(fg, schedule):
    """Without hard zeros: with them, mean-field often ends infeasible (bound -inf), where its
    marginals are decided by sentinel rounding (docs/concepts.md, "Hard zeros")."""
    kw = dict(algorithm="mf", schedule=schedule, iterations=5, damping=0.25)
    kw.update(dtype=torch.float64, fast_path=False)
    net = pu.compile(fg, **kw)
    with _unmerged():
        ref = pu.compile(fg, **kw)
    assume(len(net._merges) < len(ref._merges))
    a, b = net(), ref()
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=1e-9, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition, atol=1e-9, rtol=0)


@given(random_graphs(max_vars=6, max_factors=5, tree=True))
def test_merged_bp_exact_on_trees(fg):
    logz, marg, _, _ = brute_force(fg)
    assume(np.isfinite(logz))
    kw = dict(dtype=torch.float64, fast_path=False, contraction="logsumexp")
    net = pu.compile(fg, iterations=len(fg) + 2, **kw)
    out = net()
    for name, m in marg.items():
        np.testing.assert_allclose(out.marginals[name].detach().numpy(), m, atol=1e-8)
    assert float(out.log_partition) == pytest.approx(logz, abs=1e-8)


def _mixed_graph() -> pu.FactorGraph:
    rng = np.random.default_rng(3)
    fg = pu.FactorGraph()
    for v, k in enumerate([2, 3, 2, 3]):
        fg.add_variable(v, k)
    fg.add_factors([[0, 1], [2, 3]], rng.normal(size=(2, 2, 3)), name="a")
    fg.add_factors([[1, 2]], rng.normal(size=(1, 3, 2)), name="b")
    fg.add_factors([[3, 0]], rng.normal(size=(1, 3, 2)), name="c")
    fg.add_factors([[0], [2]], rng.normal(size=(2, 2)), name="u2")
    fg.add_factors([[1]], rng.normal(size=(1, 3)), name="u3")
    return fg


def test_mixed_graph_merges_and_matches_unmerged():
    fg = _mixed_graph()
    kw = dict(iterations=8, dtype=torch.float64, fast_path=False, contraction="matmul")
    net = pu.compile(fg, **kw)
    assert [m.cards for m in net._merges] == [(3, 3), (3,)]
    with _unmerged():
        ref = pu.compile(fg, **kw)
    torch.testing.assert_close(net().log_marginals, ref().log_marginals, atol=1e-12, rtol=0)


@pytest.mark.parametrize("algorithm", ["bp", "mf"])
def test_gradcheck_through_merges(algorithm):
    fg = _mixed_graph()
    net = pu.compile(
        fg,
        algorithm=algorithm,
        iterations=3,
        damping=0.2,
        untie=True,
        dtype=torch.float64,
        fast_path=False,
        contraction="logsumexp",
    )
    assert len(net._merges) < len(net._mgroups) and not net.enumerated
    params = dict(net.named_parameters())
    names = list(params)

    def f(*tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.func.functional_call(net, dict(zip(names, tables, strict=True)), ())
        return out.log_marginals, out.log_partition

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params.values())
    assert torch.autograd.gradcheck(f, inputs)


# (inductor's import, torch 2.13)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("algorithm", "schedule"), [("bp", "parallel"), ("bp", "sequential"), ("mf", "parallel")]
)
def test_compile_steps_equals_eager(algorithm, schedule):
    """``compile_steps=True``: the general path's iteration through ``torch.compile``, the
    same values and gradients; pickling leaves the compiled steps behind."""
    import copy

    fg = _mixed_graph()
    kw = dict(algorithm=algorithm, schedule=schedule, iterations=3, damping=0.2)
    kw.update(fast_path=False, dtype=torch.float64, contraction="logsumexp")
    nets = [pu.compile(fg, compile_steps=c, **kw) for c in (True, False)]
    assert "compile_steps=True" in repr(nets[0])
    u0 = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert_same_values_and_grads(nets, u0, state=0)
    assert nets[0]._compiled and not nets[1]._compiled
    clone = copy.deepcopy(nets[0])
    assert clone.compile_steps and not clone._compiled
    with pytest.raises(ValueError, match="compile_steps must be True or False"):
        pu.compile(fg, compile_steps="yes")
