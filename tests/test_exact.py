import numpy as np
import pytest
import torch
from helpers import brute_force, random_graphs
from hypothesis import assume, given

import pgmunfold as pu


@given(random_graphs())
def test_exact_matches_enumeration(fg):
    logz, marg, best, _ = brute_force(fg)
    assume(np.isfinite(logz))
    assert float(pu.exact_log_partition(fg)) == pytest.approx(logz, abs=1e-9)
    ex = pu.exact_marginals(fg)
    for name, m in marg.items():
        np.testing.assert_allclose(ex[name].numpy(), m, atol=1e-9)
    states, score = pu.exact_map(fg)
    assert float(score) == pytest.approx(best, abs=1e-9)
    # the decoded state really has the best score
    x = [states[fg.variable_name(v)] for v in range(len(fg))]
    total = sum(float(t[tuple(x[v] for v in s)]) for s, t in fg.factors())
    assert total == pytest.approx(best, abs=1e-9)


@given(random_graphs(max_vars=4))
def test_exact_evidence_is_conditioning(fg):
    ev = {"v0": 0}
    logz, marg, _, _ = brute_force(fg, ev)
    assume(np.isfinite(logz))
    assert float(pu.exact_log_partition(fg, ev)) == pytest.approx(logz, abs=1e-9)
    ex = pu.exact_marginals(fg, ev)
    for name, m in marg.items():
        np.testing.assert_allclose(ex[name].numpy(), m, atol=1e-9)


def test_exact_too_large_names_size():
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (6, 6), 4)
    pairs = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
    pairs = np.concatenate([pairs, np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2)])
    fg.add_factors(pairs, np.zeros((4, 4)))
    with pytest.raises(
        pu.ExactInferenceTooLarge, match=r"1024 entries.*state space has 4\.72e\+21"
    ):
        pu.exact_log_partition(fg, max_table_size=1000)


def test_exact_isolated_variables_and_zero_model():
    fg = pu.FactorGraph()
    fg.add_variable("a", 3)
    fg.add_variable("b", 2)
    assert float(pu.exact_log_partition(fg)) == pytest.approx(np.log(6))
    fg.add_factor(("a",), np.array([0.0, -np.inf, -np.inf]))
    fg.add_factor(("a", "b"), np.array([[-np.inf, -np.inf], [0, 0], [0, 0]]))
    with pytest.raises(pu.GraphError, match="probability zero everywhere"):
        pu.exact_marginals(fg)
    assert float(pu.exact_log_partition(fg)) == -np.inf
    fg2 = pu.FactorGraph()
    fg2.add_variable("a", 3)
    fg2.add_variable("b", 2)
    fg2.add_factor(("a", "b"), np.array([[-np.inf, -np.inf], [0, 0], [0, np.log(3)]]))
    assert pu.exact_marginals(fg2, {"a": 1})["b"].tolist() == [0.5, 0.5]
    np.testing.assert_allclose(pu.exact_marginals(fg2)["a"].numpy(), [0, 2 / 6, 4 / 6])
    with pytest.raises(pu.GraphError, match="out of range"):
        pu.exact_marginals(fg2, {"a": 3})


def test_exact_returns_float64_tensors():
    fg = pu.FactorGraph()
    fg.add_variable("a", 2)
    fg.add_factor(("a",), torch.tensor([0.0, 1.0]))
    m = pu.exact_marginals(fg)["a"]
    assert m.dtype == torch.float64 and m.shape == (2,)
    assert m[1] / m[0] == pytest.approx(np.e)
