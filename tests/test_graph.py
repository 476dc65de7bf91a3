import numpy as np
import pytest
import torch

import pgmunfold as pu


def test_declare_variables_and_arrays():
    fg = pu.FactorGraph()
    assert fg.add_variable("a", 2) == 0
    assert fg.add_variable(("b", "c"), 3) == 1
    x = fg.add_variables("x", (2, 3), 4)
    assert x.ids.shape == (2, 3) and x.ids[1, 2] == 7
    assert fg.variable_id(("x", 1, 2)) == 7 and fg.variable_name(7) == ("x", 1, 2)
    assert fg.variable_name(1) == ("b", "c")
    assert fg.cardinalities.tolist() == [2, 3] + [4] * 6
    assert ("x", 0, 0) in fg and ("x", 2, 0) not in fg
    assert fg.variables[:3] == ["a", ("b", "c"), ("x", 0, 0)]


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (lambda fg: fg.add_variable("a", 3), "'a' is declared twice"),
        (lambda fg: fg.add_variable(("x", 0, 1), 2), r"\('x', 0, 1\) is declared twice"),
        (lambda fg: fg.add_variables("x", 3, 2), "'x' is declared twice"),
        (lambda fg: fg.add_variable("z", 0), "'z': cardinality must be an integer >= 1"),
        (lambda fg: fg.add_factor(("a", "q"), np.zeros((2, 2))), "unknown variable 'q'"),
        (
            lambda fg: fg.add_factor(("a", 7), np.zeros((2, 4))),
            r"unknown variable 7 \(add_factor takes variable names; for integer ids.*add_factors",
        ),
        (
            lambda fg: fg.add_factor(("a", "b"), np.zeros((2, 2))),
            r"shape \(2, 2\), expected \(2, 3\)",
        ),
        (lambda fg: fg.add_factor(("a", "a"), np.zeros((2, 2))), "repeats a variable"),
        (lambda fg: fg.add_factor(("a",), [0.0, np.nan]), r"'a',\).*NaN at \(1,\)"),
        (lambda fg: fg.add_factor(("a",), [0.0, np.inf]), r"\+inf"),
        (lambda fg: fg.add_factor(("a",), [-np.inf, -np.inf]), "every entry.*-inf"),
        (
            lambda fg: fg.add_factors([("a", "b"), ("b", "a")], np.zeros((2, 3))),
            r"factor 1 over \('b', 'a'\) has cardinalities \(3, 2\)",
        ),
        (lambda fg: fg.add_factors(np.array([[0, 99]]), np.zeros((2, 2))), "variable id 99"),
        (
            lambda fg: fg.add_factors(np.array([[0, 1]]), np.zeros((5, 2, 3))),
            r"expected \(1, 2, 3\) \(stacked\) or \(2, 3\)",
        ),
        (
            lambda fg: fg.add_factors(np.array([[2, 3], [4, 4]]), np.zeros((2, 2))),
            r"factor 1 scope .*repeats",
        ),
    ],
)
def test_declaration_errors_name_what_is_wrong(action, match):
    fg = pu.FactorGraph()
    fg.add_variable("a", 2)
    fg.add_variable("b", 3)
    fg.add_variables("x", (2, 2), 2)
    with pytest.raises(pu.GraphError, match=match):
        action(fg)


def test_group_name_twice_and_empty_graph():
    fg = pu.FactorGraph()
    with pytest.raises(pu.GraphError, match="empty"):
        pu.compile(fg)
    fg.add_variable("a", 2)
    fg.add_factors([("a",)], np.zeros(2), name="u")
    with pytest.raises(pu.GraphError, match="'u' is used twice"):
        fg.add_factors([("a",)], np.zeros(2), name="u")


def test_singles_are_grouped_by_shape_and_torch_tables_accepted():
    fg = pu.FactorGraph()
    for n in "abc":
        fg.add_variable(n, 2)
    fg.add_factor(("a", "b"), torch.zeros(2, 2, requires_grad=True))
    fg.add_factor(("b", "c"), np.ones((2, 2)))
    fg.add_factor(("c",), np.ones(2))
    shapes = sorted((g.cards, g.num_factors) for g in fg.groups)
    assert shapes == [((2,), 1), ((2, 2), 2)]


def test_to_networkx_and_tree_test():
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 4, 2)
    fg.add_factors(np.stack([x.ids[:-1], x.ids[1:]], 1), np.zeros((2, 2)))
    g = fg.to_networkx()
    assert g.number_of_nodes() == 4 + 3 and g.number_of_edges() == 6
    assert g.nodes[("v", 0)]["name"] == ("x", 0) and g.nodes[("f", 0, 1)]["scope"] == (1, 2)
    assert fg.is_tree()
    fg.add_factors(np.array([[0, 3]]), np.zeros((2, 2)))
    assert not fg.is_tree()


def test_million_variable_grid_declares_from_arrays():
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (300, 300), 2)
    pairs = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
    fg.add_factors(pairs, np.zeros((len(pairs), 2, 2)))
    assert fg.num_factors == 300 * 299 and len(fg) == 90000


def test_the_graph_owns_its_tables_and_scopes():
    """Editing the caller's arrays after declaration changes nothing (an edit to NaN would
    otherwise skip the declaration-time checks): numpy float64 arrays and CPU tensors, which
    ``np.asarray`` would share, included."""
    fg = pu.FactorGraph()
    fg.add_variables("x", 3, 2)
    tabs = np.zeros((2, 2, 2))
    scopes = np.array([[0, 1], [1, 2]])
    single = torch.zeros(2, 2, dtype=torch.float64)
    fg.add_factors(scopes, tabs, name="pair")
    fg.add_factor([("x", 0), ("x", 2)], single)
    tabs[0, 0, 0] = np.nan
    scopes[0, 0] = 2
    single[0, 0] = 7.0
    net = pu.compile(fg)
    pair = net.log_potentials("pair")
    assert torch.equal(pair, torch.zeros_like(pair))
    for name in net.group_names:
        assert not net.log_potentials(name).isnan().any()
        assert float(net.log_potentials(name).abs().max()) == 0.0
    assert fg.groups[0].scopes[0].tolist() == [0, 1]


@pytest.mark.parametrize("arity", [2, 3, 4, 5, 6])
def test_repeated_variable_found_at_every_arity_and_position(arity):
    # (arity <= 4 compares every pair of positions, larger arities sort each row)
    fg = pu.FactorGraph()
    fg.add_variables("x", 8, 2)
    rng = np.random.default_rng(arity)
    ok = np.stack([rng.permutation(8)[:arity] for _ in range(5)])
    fg.add_factors(ok, np.zeros((5,) + (2,) * arity), name="fine")
    for i in range(arity):
        for j in range(i + 1, arity):
            bad = ok.copy()
            bad[3, j] = bad[3, i]
            with pytest.raises(pu.GraphError, match=r"factor 3 scope .*repeats a variable"):
                fg.add_factors(bad, np.zeros((5,) + (2,) * arity), name=f"bad{i}{j}")


def test_table_checks_in_a_graph_of_one_cardinality():
    # (one cardinality skips the per-factor shape check; the table checks stay)
    fg = pu.FactorGraph()
    fg.add_variables("x", 4, 3)
    scopes = np.array([[0, 1], [1, 2], [2, 3]])
    tables = np.zeros((3, 3, 3))
    tables[1, 0, 0] = -np.inf  # a hard zero is fine
    fg.add_factors(scopes, tables, name="fine")
    for value, match in [(np.nan, r"NaN at \(2, 1, 2\)"), (np.inf, r"\+inf at \(2, 1, 2\)")]:
        t = tables.copy()
        t[2, 1, 2] = value
        with pytest.raises(pu.GraphError, match=match):
            fg.add_factors(scopes, t)
    t = tables.copy()
    t[2] = -np.inf
    with pytest.raises(pu.GraphError, match=r"\(factor 2\): every entry .*-inf"):
        fg.add_factors(scopes, t)
    with pytest.raises(pu.GraphError, match=r"shape \(3, 2, 3\), expected \(3, 3, 3\)"):
        fg.add_factors(scopes, np.zeros((3, 2, 3)))
