"""Pictures: the factor graph, the unfolded network's parameter plan, belief maps.

Three functions, each drawing into a matplotlib ``Axes`` (a new figure when ``ax`` is None) and
returning it:

* :func:`draw` — the factor graph: variables as circles, factors as squares coloured by factor
  group; variables of 1-D and 2-D :class:`~pgmunfold.VariableArray` blocks on a grid, the rest
  by a force-directed layout.
* :func:`draw_unfolded` — the compiled network as a grid of layers (iterations) x factor groups;
  cells that use the same copy of the log-potentials (tied parameters) are chained together,
  untied copies stand apart in their own colours.
* :func:`draw_beliefs` — the marginals of a 2-D variable array as an image.

matplotlib is an optional dependency: ``pip install pgmunfold[plot]``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

from pgmunfold.graph import FactorGraph, VariableArray

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from pgmunfold.beliefs import Beliefs
    from pgmunfold.network import UnfoldedNetwork

__all__ = ["draw", "draw_beliefs", "draw_unfolded"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "pgmunfold's drawing functions need the optional dependency matplotlib: "
    "pip install pgmunfold[plot]  (or: pip install matplotlib)"
)

_LARGE = 5000  # nodes; drawing more is slow and unreadable, so it is logged


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return plt


def _new_axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    plt = _pyplot()
    _, new = plt.subplots(figsize=size)
    return new


def _short(name: Hashable) -> str:
    """Compact label: ``("x", 1, 2)`` -> ``x[1,2]``."""
    if isinstance(name, tuple) and name:
        return f"{name[0]}[{','.join(str(i) for i in name[1:])}]"
    return str(name)


def _label(name: Hashable, arrays: set[Hashable]) -> str:
    """Label inside a variable's circle: indices only for elements of grid-drawn arrays."""
    if isinstance(name, tuple) and len(name) > 1 and name[0] in arrays:
        return ",".join(str(i) for i in name[1:])
    return _short(name)


# ---------------------------------------------------------------------------- the factor graph
def _grid_positions(fg: FactorGraph) -> dict[int, tuple[float, float]]:
    """Positions of the variables of 1-D and 2-D arrays: blocks stacked top to bottom."""
    pos: dict[int, tuple[float, float]] = {}
    top = 0.0
    for arr in fg.variable_arrays:
        if arr.size == 0 or len(arr.shape) not in (1, 2):
            continue
        ids = arr.ids if len(arr.shape) == 2 else arr.ids[None, :]
        h, w = ids.shape
        rows, cols = np.indices((h, w))
        xs = cols - (w - 1) / 2.0
        ys = top - rows
        for v, x, y in zip(ids.ravel(), xs.ravel(), ys.ravel(), strict=True):
            pos[int(v)] = (float(x), float(y))
        top -= h + 1
    return pos


def layout(fg: FactorGraph, seed: int = 0) -> dict[Any, tuple[float, float]]:
    """Node positions for :func:`draw`, keyed like :meth:`FactorGraph.to_networkx`'s nodes.

    Variables of 1-D and 2-D variable arrays sit on a unit grid (one block per array, stacked
    top to bottom); other variables are placed by a seeded spring layout. A factor sits at the
    centroid of its variables (a unary factor just above-right of its variable); factors that
    would coincide are nudged apart.
    """
    import networkx as nx

    g = fg.to_networkx()
    grid = _grid_positions(fg)
    pos: dict[Any, tuple[float, float]] = {("v", v): xy for v, xy in grid.items()}
    n_vars = fg.num_variables
    if len(grid) < n_vars:
        fixed = list(pos) or None
        init = dict(pos) if pos else None
        spring = nx.spring_layout(g, pos=init, fixed=fixed, seed=seed)
        for v in range(n_vars):
            if v not in grid:
                x, y = spring[("v", v)]
                pos[("v", v)] = (float(x), float(y))
    if n_vars:
        xy = np.array([pos[("v", v)] for v in range(n_vars)])
        span = xy.max(axis=0) - xy.min(axis=0)
        spacing = float(np.sqrt(max(span[0], 1e-9) * max(span[1], 1e-9) / max(n_vars, 1)))
        spacing = spacing if np.isfinite(spacing) and spacing > 0 else 1.0
        if len(grid) == n_vars:
            spacing = 1.0
    else:
        xy = np.zeros((1, 2))
        spacing = 1.0
    taken: dict[tuple[float, float], int] = {}
    corner = (float(xy[:, 0].min()) - spacing, float(xy[:, 1].max()) + spacing)
    for node, data in g.nodes(data=True):
        if data["kind"] != "factor":
            continue
        scope = data["scope"]
        if not scope:
            base = corner
        elif len(scope) == 1:
            vx, vy = pos[("v", scope[0])]
            base = (vx + 0.3 * spacing, vy + 0.3 * spacing)
        else:
            pts = np.array([pos[("v", v)] for v in scope])
            base = (float(pts[:, 0].mean()), float(pts[:, 1].mean()))
        key = (round(base[0], 6), round(base[1], 6))
        k = taken.get(key, 0)
        taken[key] = k + 1
        shift = 0.18 * spacing * k
        pos[node] = (base[0] + shift, base[1] - shift)
    return pos


def draw(
    fg: FactorGraph,
    ax: Axes | None = None,
    *,
    labels: bool | None = None,
    legend: bool | None = None,
    seed: int = 0,
) -> Axes:
    """Draw a factor graph: variables as circles, factors as squares (one colour per group).

    Args:
        fg: the factor graph.
        ax: matplotlib axes to draw into (default: a new figure).
        labels: write variable names in the circles (default: when at most 40 variables);
            elements of grid-drawn arrays show their indices only.
        legend: show a legend of the factor groups (default: when at most 12 groups).
        seed: seed of the spring layout used for variables outside 1-D/2-D arrays.

    Returns:
        The axes, whose collections are one ``PathCollection`` labelled ``"variables"`` (one
            point per variable), one ``PathCollection`` per non-empty factor group labelled with
            the group's name (one point per factor), and one ``LineCollection`` labelled
            ``"edges"`` (one segment per variable-factor edge).

    Raises:
        ImportError: matplotlib is not installed (``pip install pgmunfold[plot]``).
    """
    _pyplot()
    import networkx as nx

    g = fg.to_networkx()
    n_nodes = g.number_of_nodes()
    if n_nodes > _LARGE:
        logger.warning("draw: %d nodes; drawing will be slow and crowded", n_nodes)
    pos = layout(fg, seed=seed)
    groups = fg.groups
    xy = np.array(list(pos.values())) if pos else np.zeros((1, 2))
    span = xy.max(axis=0) - xy.min(axis=0)
    width = float(np.clip(span[0] * 0.6 + 2.0, 4.0, 12.0))
    height = float(np.clip(span[1] * 0.6 + 2.0, 3.0, 12.0))
    ax = _new_axes(ax, (width, height))
    size = float(np.clip(12000.0 / max(n_nodes, 1), 15.0, 320.0))
    if labels is None:
        labels = fg.num_variables <= 40
    arrays = {a.prefix for a in fg.variable_arrays if len(a.shape) in (1, 2)}
    var_size = max(size * 1.6, 260.0) if labels else size

    edges = nx.draw_networkx_edges(g, pos, ax=ax, width=0.8, edge_color="0.55", arrows=False)
    if hasattr(edges, "set_label"):
        edges.set_label("edges")
    var_nodes = [("v", v) for v in range(fg.num_variables)]
    vc = nx.draw_networkx_nodes(
        g,
        pos,
        nodelist=var_nodes,
        node_shape="o",
        node_size=var_size,
        node_color="white",
        edgecolors="black",
        linewidths=1.0,
        ax=ax,
    )
    vc.set_label("variables")
    for gi, grp in enumerate(groups):
        nodes = [("f", gi, f) for f in range(grp.num_factors)]
        if not nodes:
            continue
        fc = nx.draw_networkx_nodes(
            g,
            pos,
            nodelist=nodes,
            node_shape="s",
            node_size=size * 0.55,
            node_color=f"C{gi % 10}",
            edgecolors="black",
            linewidths=0.5,
            ax=ax,
        )
        fc.set_label(grp.name)
    if labels:
        names = {("v", v): _label(fg.variable_name(v), arrays) for v in range(fg.num_variables)}
        nx.draw_networkx_labels(g, pos, labels=names, font_size=6, ax=ax)
    if legend is None:
        legend = 0 < len(groups) <= 12
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if fg.num_variables and len(_grid_positions(fg)) == fg.num_variables:
        ax.set_aspect("equal")
    ax.set_axis_off()
    ax.margins(0.08)
    logger.debug("draw: %d variables, %d factors", fg.num_variables, n_nodes - fg.num_variables)
    return ax


# ---------------------------------------------------------------------------- the network
def draw_unfolded(
    net: UnfoldedNetwork, ax: Axes | None = None, *, annotate: bool | None = None
) -> Axes:
    """Draw a compiled network as layers (iterations, left to right) x factor groups (rows).

    Each cell is the copy of a group's log-potentials that an iteration uses
    (``net.copy_index``). Consecutive cells using the same copy (tied parameters) are chained
    by a line; a group with a single copy is grey, the copies of an untied group have distinct
    colours. The number in a cell is the copy index.

    Args:
        net: a compiled :class:`~pgmunfold.UnfoldedNetwork`.
        ax: matplotlib axes to draw into (default: a new figure).
        annotate: write the copy number into each cell (default: at most 30 iterations).

    Returns:
        The axes, holding ``len(net.group_names) * net.iterations`` ``Rectangle`` patches (the
            cells, row by row) and one ``LineCollection`` labelled ``"ties"`` with one segment
            per pair of consecutive iterations that share a copy.

    Raises:
        ImportError: matplotlib is not installed (``pip install pgmunfold[plot]``).
    """
    _pyplot()
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Patch, Rectangle

    T = net.iterations
    names = net.group_names
    plans = list(net.copy_index.items())
    G = len(plans)
    ax = _new_axes(ax, (float(np.clip(2.5 + 0.35 * T, 5.0, 14.0)), 1.2 + 0.6 * max(G, 1)))
    if annotate is None:
        annotate = T <= 30
    tab10 = colormaps["tab10"]
    palette = [tab10(i) for i in range(10) if i != 7]  # no grey: grey means tied
    tied_colour = "#d0d0d0"
    segments: list[list[tuple[float, float]]] = []
    row_labels: list[str] = []
    for row, (name, (key, idx)) in enumerate(zip(names, plans, strict=True)):
        param = net.potentials[key]
        copies = int(param.shape[0])
        per_copy = int(param[0].numel())
        n_factors = int(param.shape[1])
        for t in range(T):
            c = int(idx[t])
            colour = tied_colour if copies == 1 else palette[c % len(palette)]
            ax.add_patch(
                Rectangle(
                    (t - 0.35, row - 0.35),
                    0.7,
                    0.7,
                    facecolor=colour,
                    edgecolor="black",
                    linewidth=0.6,
                    zorder=2,
                )
            )
            if annotate:
                ax.text(t, row, str(c), ha="center", va="center", fontsize=7, zorder=3)
            if t + 1 < T and int(idx[t + 1]) == c:
                segments.append([(t + 0.35, float(row)), (t + 0.65, float(row))])
        kind = "tied" if copies == 1 else f"{copies} copies"
        tables = "1 table" if n_factors == 1 else f"{n_factors} tables"
        row_labels.append(f"{name}\n{tables} of {per_copy // max(n_factors, 1)}, {kind}")
    ties = LineCollection(segments, colors="black", linewidths=2.0, zorder=1, label="ties")
    ax.add_collection(ties)
    ax.set_xlim(-0.7, T - 0.3)
    ax.set_ylim(G - 0.4, -0.6)
    ax.set_yticks(range(G), row_labels, fontsize=8)
    step = max(1, int(np.ceil(T / 20)))
    ticks = list(range(0, T, step))
    ax.set_xticks(ticks, [str(t + 1) for t in ticks], fontsize=8)
    ax.set_xlabel("layer (iteration)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    algo = "loopy BP" if net.algorithm == "bp" else "mean-field"
    extra = f", {net.semiring}-product" if net.algorithm == "bp" else ""
    ax.set_title(
        f"{algo}{extra}, {net.schedule} schedule: {T} layers, "
        f"{net.num_parameters()} trainable parameters",
        fontsize=9,
    )
    handles = [
        Patch(facecolor=tied_colour, edgecolor="black", label="tied: one copy for all layers"),
        Patch(facecolor=palette[1], edgecolor="black", label="untied: one colour per copy"),
    ]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18 if G > 1 else -0.4),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    return ax


# ---------------------------------------------------------------------------- belief maps
def belief_map(
    beliefs: Beliefs, array: VariableArray, state: int | None = None, index: int = 0
) -> np.ndarray:
    """The image :func:`draw_beliefs` shows, as an array.

    Args:
        beliefs: output of a network (or anything with ``log_marginals``).
        array: a 1-D or 2-D variable array of the network's graph (1-D is one row).
        state: show ``P(x = state)``; default: state 1 for binary variables, else the most
            probable state of each variable.
        index: which batch element, when the beliefs carry a batch dimension.

    Shape:
        ``beliefs.log_marginals``: ``(B, V, K)`` or ``(V, K)``; result: ``array.shape``
        (``(1, n)`` for a 1-D array), float probabilities, or int states when showing the most
        probable state.
    """
    lm = beliefs.log_marginals.detach()
    if lm.dim() == 3:
        if not -lm.shape[0] <= index < lm.shape[0]:
            raise IndexError(f"batch index {index} out of range for batch size {lm.shape[0]}")
        lm = lm[index]
    elif lm.dim() != 2:
        raise ValueError(f"log_marginals must have shape (B, V, K) or (V, K), got {lm.shape}")
    if len(array.shape) not in (1, 2):
        raise ValueError(f"draw_beliefs needs a 1-D or 2-D variable array, got shape {array.shape}")
    ids = array.ids if len(array.shape) == 2 else array.ids[None, :]
    V = lm.shape[0]
    if ids.size and int(ids.max()) >= V:
        raise ValueError(
            f"variable array {array.prefix!r} has ids up to {int(ids.max())}, but the beliefs "
            f"cover {V} variables: is it from another graph?"
        )
    k = array.cardinality
    probs = lm[:, :k].exp().cpu().double().numpy()[ids]  # (H, W, k)
    if state is None and k != 2:
        return np.asarray(probs.argmax(axis=-1))
    s = 1 if state is None else int(state)
    if not 0 <= s < k:
        raise ValueError(f"state {s} out of range [0, {k}) for variable array {array.prefix!r}")
    return np.asarray(probs[..., s])


def draw_beliefs(
    beliefs: Beliefs,
    array: VariableArray,
    ax: Axes | None = None,
    *,
    state: int | None = None,
    index: int = 0,
    cmap: str | None = None,
    colorbar: bool = True,
) -> Axes:
    """Show the marginals of a 2-D variable array (a grid model) as an image.

    Args:
        beliefs: output of a network, e.g. ``net(unary={x: ...})``.
        array: the 2-D :class:`~pgmunfold.VariableArray` (1-D arrays are shown as one row).
        ax: matplotlib axes to draw into (default: a new figure).
        state: show ``P(x = state)`` on a 0..1 colour scale; default: state 1 for binary
            variables, else the most probable state of each variable (discrete colours).
        index: which batch element, when the beliefs carry a batch dimension.
        cmap: matplotlib colormap name (default ``"viridis"``, ``"tab10"`` for states).
        colorbar: add a colour bar.

    Returns:
        The axes; ``ax.images[0]`` holds the image of shape ``array.shape`` (see
            :func:`belief_map`).

    Shape:
        ``beliefs.log_marginals``: ``(B, V, K)`` or ``(V, K)``.

    Raises:
        ImportError: matplotlib is not installed (``pip install pgmunfold[plot]``).
    """
    _pyplot()
    img = belief_map(beliefs, array, state=state, index=index)
    k = array.cardinality
    h, w = img.shape
    ax = _new_axes(ax, (float(np.clip(1.5 + 0.3 * w, 3.0, 8.0)), float(np.clip(0.3 * h + 1, 2, 8))))
    showing_states = state is None and k != 2
    if showing_states:
        im = ax.imshow(img, cmap=cmap or "tab10", vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        label = "most probable state"
    else:
        s = 1 if state is None else int(state)
        im = ax.imshow(img, cmap=cmap or "viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        label = f"P({_short(array.prefix)} = {s})"
    ax.set_title(label, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if showing_states and k <= 20:
            cb.set_ticks(list(range(k)))
    return ax
