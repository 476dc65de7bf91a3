"""pgmpy interop: round trips keep the exact marginals; Bayesian networks keep their joint."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from helpers import brute_force, random_graphs
from hypothesis import assume, given, settings

import pgmunfold as pu
from pgmunfold.interop import from_pgmpy, to_pgmpy

pytest.importorskip("pgmpy")
from pgmpy.factors.discrete import DiscreteFactor, TabularCPD
from pgmpy.models import DiscreteBayesianNetwork, DiscreteMarkovNetwork
from pgmpy.models import FactorGraph as PgmpyFactorGraph


def _assert_same_distribution(a: pu.FactorGraph, b: pu.FactorGraph) -> None:
    assert a.variables == b.variables
    assert list(a.cardinalities) == list(b.cardinalities)
    ma, mb = pu.exact_marginals(a), pu.exact_marginals(b)
    for name in a.variables:
        np.testing.assert_allclose(mb[name].numpy(), ma[name].numpy(), atol=1e-10)
    za, zb = float(pu.exact_log_partition(a)), float(pu.exact_log_partition(b))
    assert zb == pytest.approx(za, abs=1e-9)


def _mixed_graph() -> pu.FactorGraph:
    """String, int and tuple (array) names, a 3-ary factor, hard zeros, an isolated variable."""
    rng = np.random.default_rng(3)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", shape=(2, 3), cardinality=2)
    fg.add_variable("a", 3)
    fg.add_variable(7, 2)
    fg.add_variable("isolated", 4)
    pairs = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
    fg.add_factors(pairs, rng.normal(size=(len(pairs), 2, 2)), name="h")
    t = rng.normal(size=(2, 3, 2))
    t[0, 1, :] = -np.inf
    fg.add_factor((("x", 1, 2), "a", 7), t)
    fg.add_factor(("a",), np.array([0.0, -np.inf, 0.5]))
    fg.add_factor((), np.array(0.75))  # a constant: changes Z only
    return fg


def test_round_trip_mixed_names_and_hard_zeros():
    fg = _mixed_graph()
    model = to_pgmpy(fg)
    assert isinstance(model, DiscreteMarkovNetwork)
    assert model.check_model()
    assert set(model.nodes()) == set(fg.variables)
    back = from_pgmpy(model)
    _assert_same_distribution(fg, back)
    # the hard zeros came back as -inf
    tables = [t for scope, t in back.factors() if len(scope) == 1 and t.shape == (3,)]
    assert any(np.isneginf(t[1]) for t in tables)


@settings(max_examples=20)
@given(random_graphs(max_vars=4, max_factors=5))
def test_round_trip_random_graphs(fg):
    logz, _, _, _ = brute_force(fg)
    assume(np.isfinite(logz))
    _assert_same_distribution(fg, from_pgmpy(to_pgmpy(fg)))


def test_from_markov_network_matches_product_of_factors():
    rng = np.random.default_rng(0)
    m = DiscreteMarkovNetwork([("a", "b"), ("b", "c"), ("c", "a")])
    fab = DiscreteFactor(["a", "b"], [2, 3], rng.random(6))
    fbc = DiscreteFactor(["b", "c"], [3, 2], rng.random(6))
    vals = rng.random(4)
    vals[3] = 0.0
    fca = DiscreteFactor(["c", "a"], [2, 2], vals)
    m.add_factors(fab, fbc, fca)
    fg = from_pgmpy(m)
    assert fg.variables == ["a", "b", "c"]
    joint = np.einsum("ab,bc,ca->abc", fab.values, fbc.values, fca.values)
    joint = joint / joint.sum()
    ex = pu.exact_marginals(fg)
    np.testing.assert_allclose(ex["a"].numpy(), joint.sum((1, 2)), atol=1e-12)
    np.testing.assert_allclose(ex["b"].numpy(), joint.sum((0, 2)), atol=1e-12)
    np.testing.assert_allclose(ex["c"].numpy(), joint.sum((0, 1)), atol=1e-12)
    (ca,) = [t for scope, t in fg.factors() if t.shape == (2, 2)]
    assert np.isneginf(ca[1, 1])


def _sprinkler() -> DiscreteBayesianNetwork:
    bn = DiscreteBayesianNetwork([("rain", "sprinkler"), ("rain", "wet"), ("sprinkler", "wet")])
    rain = TabularCPD("rain", 2, [[0.8], [0.2]], state_names={"rain": ["no", "yes"]})
    sprinkler = TabularCPD(
        "sprinkler",
        2,
        [[0.6, 0.99], [0.4, 0.01]],
        evidence=["rain"],
        evidence_card=[2],
        state_names={"sprinkler": ["off", "on"], "rain": ["no", "yes"]},
    )
    wet = TabularCPD(
        "wet",
        2,
        [[0.99, 0.1, 0.2, 1.0], [0.01, 0.9, 0.8, 0.0]],
        evidence=["rain", "sprinkler"],
        evidence_card=[2, 2],
        state_names={"wet": ["dry", "wet"], "rain": ["no", "yes"], "sprinkler": ["off", "on"]},
    )
    bn.add_cpds(rain, sprinkler, wet)
    assert bn.check_model()
    return bn


def test_bayesian_network_joint():
    fg = from_pgmpy(_sprinkler())
    assert fg.variables == ["rain", "sprinkler", "wet"]
    assert float(pu.exact_log_partition(fg)) == pytest.approx(0.0, abs=1e-12)
    p_rain = {0: 0.8, 1: 0.2}
    p_spr = {(0, 0): 0.6, (0, 1): 0.4, (1, 0): 0.99, (1, 1): 0.01}  # (rain, sprinkler)
    p_wet = {(0, 0): 0.01, (0, 1): 0.9, (1, 0): 0.8, (1, 1): 0.0}  # P(wet | rain, sprinkler)
    for r, s, w in itertools.product(range(2), repeat=3):
        pw = p_wet[(r, s)] if w == 1 else 1.0 - p_wet[(r, s)]
        expected = p_rain[r] * p_spr[(r, s)] * pw
        ev = {"rain": r, "sprinkler": s, "wet": w}
        logp = float(pu.exact_log_partition(fg, evidence=ev))
        assert np.exp(logp) == pytest.approx(expected, abs=1e-12)
    # and the Markov-network export keeps that joint
    _assert_same_distribution(fg, from_pgmpy(to_pgmpy(fg)))


def test_state_names_are_aligned_across_factors():
    m = DiscreteMarkovNetwork([("a", "b")])
    fa = DiscreteFactor(["a"], [3], [1.0, 2.0, 3.0], state_names={"a": ["lo", "mid", "hi"]})
    # the same states listed in another order: values follow that order
    fab = DiscreteFactor(
        ["a", "b"],
        [3, 2],
        [[5.0, 5.0], [1.0, 1.0], [2.0, 2.0]],
        state_names={"a": ["hi", "lo", "mid"], "b": [0, 1]},
    )
    m.add_factors(fa, fab)
    fg = from_pgmpy(m)
    # in fa's order (lo, mid, hi): 1*1, 2*2, 3*5
    expected = np.array([1.0, 4.0, 15.0]) / 20.0
    np.testing.assert_allclose(pu.exact_marginals(fg)["a"].numpy(), expected, atol=1e-12)


def test_from_pgmpy_factor_graph():
    rng = np.random.default_rng(1)
    g = PgmpyFactorGraph()
    g.add_nodes_from(["p", "q", "r"])
    f1 = DiscreteFactor(["p", "q"], [2, 2], rng.random(4))
    f2 = DiscreteFactor(["q", "r"], [2, 3], rng.random(6))
    g.add_factors(f1, f2)
    g.add_nodes_from([f1, f2])
    g.add_edges_from([("p", f1), ("q", f1), ("q", f2), ("r", f2)])
    fg = from_pgmpy(g)
    assert fg.variables == ["p", "q", "r"]
    joint = np.einsum("pq,qr->pqr", f1.values, f2.values)
    joint /= joint.sum()
    np.testing.assert_allclose(pu.exact_marginals(fg)["r"].numpy(), joint.sum((0, 1)), atol=1e-12)


def test_from_pgmpy_errors():
    with pytest.raises(TypeError, match="unsupported model type"):
        from_pgmpy(object())
    m = DiscreteMarkovNetwork()
    m.add_nodes_from(["a", "b"])
    m.add_factors(DiscreteFactor(["a"], [2], [1.0, 2.0]))
    with pytest.raises(pu.GraphError, match="cardinality is unknown"):
        from_pgmpy(m)
    m2 = DiscreteMarkovNetwork()
    m2.add_nodes_from(["a"])
    m2.add_factors(DiscreteFactor(["a"], [2], [1.0, -2.0]))
    with pytest.raises(pu.GraphError, match="negative"):
        from_pgmpy(m2)


def test_to_pgmpy_rescales_huge_tables(caplog):
    fg = pu.FactorGraph()
    fg.add_variable("a", 2)
    fg.add_factor(("a",), np.array([800.0, 801.0]))
    with caplog.at_level("WARNING", logger="pgmunfold.interop"):
        model = to_pgmpy(fg)
    assert "rescaled" in caplog.text
    back = from_pgmpy(model)
    np.testing.assert_allclose(
        pu.exact_marginals(back)["a"].numpy(), pu.exact_marginals(fg)["a"].numpy(), atol=1e-12
    )


def test_missing_pgmpy_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pgmpy.models", None)
    with pytest.raises(ImportError, match="pip install pgmpy"):
        to_pgmpy(_mixed_graph())
