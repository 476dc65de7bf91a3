"""Pictures, headless: the expected nodes, edges, cells and images end up on the axes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import pgmunfold as pu
from pgmunfold.draw import belief_map, draw, draw_beliefs, draw_unfolded, layout

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _grid(h: int = 3, w: int = 4, k: int = 2) -> tuple[pu.FactorGraph, pu.VariableArray]:
    fg = pu.FactorGraph()
    x = fg.add_variables("x", shape=(h, w), cardinality=k)
    pairs = np.concatenate(
        [
            np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2),
            np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2),
        ]
    )
    fg.add_factors(pairs, np.eye(k), name="smooth")
    fg.add_factors(x.ids.reshape(-1, 1), np.zeros((h * w, k)), name="unary")
    return fg, x


def _counts(ax):
    paths = {
        c.get_label(): len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)
    }
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    return paths, lines


def test_draw_grid_nodes_and_edges():
    fg, _ = _grid(3, 4)
    ax = draw(fg)
    paths, lines = _counts(ax)
    n_pairs = 3 * 3 + 2 * 4
    assert paths == {"variables": 12, "smooth": n_pairs, "unary": 12}
    assert len(lines) == 1 and lines[0].get_label() == "edges"
    assert len(lines[0].get_segments()) == 2 * n_pairs + 12
    assert len(lines[0].get_segments()) == fg.to_networkx().number_of_edges()
    assert len(ax.texts) == 12  # one label per variable


def test_grid_layout_is_a_grid():
    fg, x = _grid(3, 4)
    pos = layout(fg)
    xy = np.array([pos[("v", int(v))] for v in x.ids.ravel()]).reshape(3, 4, 2)
    np.testing.assert_allclose(np.diff(xy[..., 0], axis=1), 1.0)  # columns one apart
    np.testing.assert_allclose(np.diff(xy[..., 1], axis=0), -1.0)  # rows one apart, downwards
    # a pairwise factor sits between its two variables
    a, b = (int(v) for v in x.ids[0, :2])
    fpos = pos[("f", 0, 0)]
    np.testing.assert_allclose(fpos, (np.array(pos[("v", a)]) + pos[("v", b)]) / 2)


def test_draw_general_graph_into_given_axes():
    fg = pu.FactorGraph()
    for n in "abcde":
        fg.add_variable(n, 3)
    fg.add_factor(("a", "b"), np.zeros((3, 3)))
    fg.add_factor(("b", "c", "d"), np.zeros((3, 3, 3)))
    fg.add_factor(("a", "c"), np.zeros((3, 3)))
    fg.add_factor(("e",), np.zeros(3))
    fg.add_variable("lonely", 2)
    _, ax0 = plt.subplots()
    ax = draw(fg, ax=ax0, labels=False, legend=False)
    assert ax is ax0
    paths, lines = _counts(ax)
    assert paths["variables"] == 6
    assert sum(v for k, v in paths.items() if k != "variables") == 4
    assert len(lines[0].get_segments()) == 2 + 3 + 2 + 1
    assert not ax.texts and ax.get_legend() is None


def test_draw_mixed_arrays_and_singles():
    fg, x = _grid(2, 2)
    h = fg.add_variables("h", shape=3, cardinality=2)  # a 1-D array: one row
    fg.add_variable("z", 2)
    fg.add_factors(np.stack([h.ids, x.ids.ravel()[:3]], -1), np.zeros((2, 2)), name="hx")
    fg.add_factor(("z", ("h", 0)), np.zeros((2, 2)))
    ax = draw(fg)
    paths, lines = _counts(ax)
    assert paths["variables"] == 4 + 3 + 1
    assert len(lines[0].get_segments()) == fg.to_networkx().number_of_edges()
    pos = layout(fg)
    ys = {pos[("v", int(v))][1] for v in h.ids}
    assert len(ys) == 1  # the 1-D array is one row


@pytest.mark.parametrize(
    ("kwargs", "ties"),
    [
        ({}, {"smooth": 4, "unary": 4}),  # tied: every consecutive pair shares
        ({"untie": True}, {"smooth": 0, "unary": 0}),
        ({"untie": ["unary"]}, {"smooth": 4, "unary": 0}),
        ({"untie_last": 2}, {"smooth": 2, "unary": 2}),  # iterations 1-3 share one copy
    ],
)
def test_draw_unfolded_cells_and_ties(kwargs, ties):
    fg, _ = _grid(2, 2)
    net = pu.compile(fg, iterations=5, **kwargs)
    ax = draw_unfolded(net)
    cells = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(cells) == len(net.group_names) * net.iterations
    (tie_lines,) = [c for c in ax.collections if c.get_label() == "ties"]
    assert len(tie_lines.get_segments()) == sum(ties.values())
    # the copy numbers are written in the cells, row by row
    numbers = [int(t.get_text()) for t in ax.texts]
    assert numbers == [c for key in net.copy_index for c in net.copy_index[key]]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert [lab.split("\n")[0] for lab in labels] == net.group_names


def test_draw_unfolded_many_iterations_has_no_numbers():
    fg, _ = _grid(2, 2)
    net = pu.compile(fg, algorithm="mf", iterations=40, untie=True)
    ax = draw_unfolded(net)
    assert len(ax.patches) == 2 * 40 and not ax.texts


def test_draw_beliefs_binary_and_batched():
    fg, x = _grid(3, 4)
    net = pu.compile(fg, iterations=10)
    unary = torch.randn(3, 3, 4, 2)
    out = net(unary={x: unary})
    ax = draw_beliefs(out, x, index=2)
    img = np.asarray(ax.images[0].get_array())
    assert img.shape == (3, 4)
    for i, j in [(0, 0), (2, 3), (1, 2)]:
        assert img[i, j] == pytest.approx(float(out.marginals[("x", i, j)][2, 1]), abs=1e-6)
    np.testing.assert_allclose(belief_map(out, x, state=0, index=2), 1.0 - img, atol=1e-6)


def test_draw_beliefs_multistate_shows_most_probable_state():
    fg, x = _grid(2, 3, k=3)
    net = pu.compile(fg, iterations=5)
    out = net(unary={x: 4.0 * torch.randn(2, 3, 3)})
    ax = draw_beliefs(out, x, colorbar=False)
    img = np.asarray(ax.images[0].get_array())
    expected = np.array([[int(out.map[("x", i, j)]) for j in range(3)] for i in range(2)])
    np.testing.assert_array_equal(img, expected)
    ax2 = draw_beliefs(out, x, state=2)
    assert ax2.images[0].get_clim() == (0.0, 1.0)


def test_draw_beliefs_errors():
    fg, x = _grid(2, 2)
    out = pu.compile(fg, iterations=2)()
    with pytest.raises(ValueError, match="out of range"):
        draw_beliefs(out, x, state=2)
    cube = pu.FactorGraph()
    c = cube.add_variables("c", shape=(2, 2, 2), cardinality=2)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        draw_beliefs(out, c)
    other = pu.FactorGraph()
    other.add_variable("pad", 2)
    big = other.add_variables("y", shape=(3, 3), cardinality=2)
    with pytest.raises(ValueError, match="another graph"):
        draw_beliefs(out, big)


def test_missing_matplotlib_message(monkeypatch):
    fg, _ = _grid(2, 2)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install pgmunfold\[plot\]"):
        draw(fg)
