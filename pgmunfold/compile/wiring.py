"""Compile-time wiring: flat integer index arrays describing who sends messages to whom.

Everything here is numpy, built once per graph, deterministic. An *edge* is one (factor, scope
position) pair. Edges are numbered group by group, factor by factor, slot by slot, so the edges
of group ``g`` are the contiguous block ``[edge_start, edge_stop)`` and reshape to
``(F_g, arity_g)``. The groups are laid out merge by merge (:func:`plan_merges`: groups of one
arity whose tables pad to one shape cheaply), each merge's groups in declared order, so that a
merge's edges are contiguous too; without merges that is the declared order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgmunfold.graph import FactorGraph

__all__ = [
    "GroupWiring",
    "SlotPlan",
    "Wiring",
    "base_width",
    "build_wiring",
    "plan_merges",
    "plan_slots",
    "run_rank",
]


@dataclass(frozen=True)
class GroupWiring:
    """Static description of one factor group.

    Attributes:
        name: the declared group name.
        cards: cardinality of each scope position.
        num_factors: ``F``.
        shared: one table for all factors.
        edge_start, edge_stop: the group's edge block.
    """

    name: str
    cards: tuple[int, ...]
    num_factors: int
    shared: bool
    edge_start: int
    edge_stop: int

    @property
    def arity(self) -> int:
        return len(self.cards)


@dataclass(frozen=True)
class SlotPlan:
    """Where every variable finds its incoming edges, for a reduction over them by gathers only.

    Padding every variable to the largest degree ``D`` costs ``V * D`` slots: fine on grids,
    quadratic on a star (one hub with ``V - 1`` edges). So a variable's first ``D0`` edges
    (``D0 <= D``, chosen by :func:`plan_slots`) sit in a base table over all variables, and the
    rest of the edges of the few variables with more go to *buckets*: variables whose overflow
    counts share a power of two, padded to their bucket's widest, so the padding stays below
    about twice the overflow. A variable is in at most one bucket. Flattened, the slots are laid
    out ``[base (V * D0) | rows[0] (V_0 * W_0) | rows[1] | ...]``.

    Attributes:
        base: ``(V, D0)`` column ``d``: id of the variable's ``d``-th edge (edge order), or
            ``E`` (padding: a row that holds log 1 = 0).
        vars: per bucket ``j``, ``(V_j,)`` its variables (ascending, distinct).
        rows: per bucket ``j``, ``(V_j, W_j)`` column ``d``: id of the variable's ``D0 + d``-th
            edge, or ``E``.
        edge_slot: ``(E,)`` position of edge ``e`` in the flattened layout.
    """

    base: np.ndarray
    vars: tuple[np.ndarray, ...]
    rows: tuple[np.ndarray, ...]
    edge_slot: np.ndarray

    @property
    def compact(self) -> bool:
        """No buckets: every variable's edges are in the ``(V, D)`` base table."""
        return not self.vars


_MERGE_SLACK = 4096
"""Padded entries a merge may add (:func:`plan_merges`): about what one more group's dozen
small ops per iteration cost, which is all a merge saves."""


def plan_merges(cards: list[tuple[int, ...]], counts: list[int]) -> list[list[int]]:
    """Groups to evaluate as one padded block: per arity, in declared order, each group joins
    the first earlier merge of its arity whose padded entries (factors times the per-axis
    largest cardinalities) exceed the real ones by at most :data:`_MERGE_SLACK`, or starts a
    new merge. A merge saves a fixed number of ops per iteration, so only small padding pays:
    many small groups merge, large groups of different shapes stay apart. Groups of arity 0
    (no edges) are left out. Merges are listed by their first group, so a graph without
    merges keeps the declared order.

    Args:
        cards: per group, the cardinality of each scope position.
        counts: per group, its number of factors ``F``.

    Returns:
        the merges, each a list of group indices, ascending.
    """
    merges: list[list[int]] = []
    shape: list[tuple[int, ...]] = []
    real: list[int] = []
    rows: list[int] = []
    for i, (c, n) in enumerate(zip(cards, counts, strict=True)):
        if not c:
            continue
        size = n * int(np.prod(c))
        for j, m in enumerate(merges):
            if len(shape[j]) != len(c):
                continue
            padded = tuple(max(a, b) for a, b in zip(shape[j], c, strict=True))
            cost = (rows[j] + n) * int(np.prod(padded))
            if cost <= real[j] + size + _MERGE_SLACK:
                m.append(i)
                shape[j], real[j], rows[j] = padded, real[j] + size, rows[j] + n
                break
        else:
            merges.append([i])
            shape.append(c)
            real.append(size)
            rows.append(n)
    return merges


_BUCKET_COST = 4096
"""The fixed cost of one more bucket (three small ops per use), in slots, for :func:`plan_slots`."""


_MAX_BASE_WIDTH: int | None = None
"""When set (tests), :func:`plan_slots` caps the base width ``D0`` at this, so that small graphs
exercise the buckets."""


def _edge_rank(edge_var: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """``(E,)`` rank of each edge among its variable's edges, in edge order."""
    E = edge_var.shape[0]
    # (a 32-bit key sorts faster; sorted, the edges' variables are each variable's id repeated
    # by its degree, so the rank there is a position less its variable's first: no gathers)
    key = edge_var.astype(np.int32) if degree.shape[0] <= np.iinfo(np.int32).max else edge_var
    order = np.argsort(key, kind="stable")
    degree = np.asarray(degree, dtype=np.int64)
    rank = np.empty(E, dtype=np.int64)
    rank[order] = np.arange(E, dtype=np.int64) - np.repeat(np.cumsum(degree) - degree, degree)
    return rank


def _bucket_of(over: np.ndarray) -> np.ndarray:
    """Bucket of an overflow count ``o >= 1``: ``ceil(log2(o))`` (1 -> 0, 2 -> 1, 3..4 -> 2)."""
    return np.ceil(np.log2(np.maximum(over, 1))).astype(np.int64)


def _plan_cost(hist: np.ndarray, d0: int) -> int:
    """Slots (plus :data:`_BUCKET_COST` per bucket) of the plan with base width ``d0``, for
    variables whose degree histogram is ``hist`` (``hist[d]`` variables of degree ``d``)."""
    cost = int(hist.sum()) * d0
    over = np.arange(d0 + 1, hist.shape[0]) - d0  # the overflow of each degree above d0
    n = hist[d0 + 1 :]
    if over.size and n.any():
        over, n = over[n > 0], n[n > 0]
        b = _bucket_of(over)
        width = np.zeros(int(b.max()) + 1, dtype=np.int64)
        np.maximum.at(width, b, over)
        count = np.bincount(b, weights=n).astype(np.int64)
        cost += int((width * count).sum()) + _BUCKET_COST * int((count > 0).sum())
    return cost


def base_width(degree: np.ndarray) -> int:
    """The base width ``D0`` :func:`plan_slots` takes for variables of these degrees: the
    largest degree ``D`` (at least 1; one table, as on a grid) unless a narrower base with
    buckets needs less than half the slots (a few high-degree variables); then, among powers of
    two below ``D``, the one of fewest slots.

    Shape:
        ``degree``: ``(V,)`` int64.
    """
    D = max(int(degree.max(initial=0)), 1)
    d0 = D
    if D > 1:
        hist = np.bincount(degree, minlength=D + 1)
        widths = [1 << i for i in range(D.bit_length()) if (1 << i) < D]
        best = min(widths, key=lambda w: _plan_cost(hist, w))
        if 2 * _plan_cost(hist, best) < _plan_cost(hist, D):
            d0 = best
    return d0 if _MAX_BASE_WIDTH is None else min(d0, _MAX_BASE_WIDTH)


def run_rank(plan: SlotPlan, edge_var: np.ndarray, start: int, stop: int) -> np.ndarray | None:
    """The rank of each edge of the run ``start:stop`` among its variable's edges in that run
    (what :func:`plan_slots` of ``edge_var[start:stop]`` would sort for), read off ``plan``,
    the slot plan of all of ``edge_var``, when it is one table; ``None`` when it has buckets.

    Shape:
        ``edge_var``: ``(E,)`` int64; output: ``(stop - start,)`` int64.
    """
    if not plan.compact:
        return None
    run = edge_var[start:stop]
    before = np.bincount(edge_var[:start], minlength=plan.base.shape[0])  # (edges earlier)
    return plan.edge_slot[start:stop] - run * plan.base.shape[1] - before[run]


def plan_slots(
    edge_var: np.ndarray, num_vars: int, buckets: bool = True, rank: np.ndarray | None = None
) -> SlotPlan:
    """The :class:`SlotPlan` of edges ``edge_var`` over ``num_vars`` variables.

    The base width ``D0`` is :func:`base_width`'s; ``buckets=False`` forces the largest degree
    (one table). ``rank``: each edge's rank among its variable's edges in edge order, when
    known (:func:`run_rank`; skips the sort).

    Shape:
        ``edge_var``: ``(E,)`` int64; ``rank``: ``(E,)`` int64; see :class:`SlotPlan` for the
        output.
    """
    E = edge_var.shape[0]
    degree = np.bincount(edge_var, minlength=num_vars).astype(np.int64)
    d0 = base_width(degree) if buckets else max(int(degree.max(initial=0)), 1)
    rank = _edge_rank(edge_var, degree) if rank is None else rank
    ids = np.arange(E, dtype=np.int64)
    base = np.full((num_vars, d0), E, dtype=np.int64)
    if d0 >= degree.max(initial=0):  # one table
        edge_slot = edge_var * d0
        edge_slot += rank
        base.reshape(-1)[edge_slot] = ids  # (a flat scatter: cheaper than a 2-d one)
        return SlotPlan(base, (), (), edge_slot)
    edge_slot = np.empty(E, dtype=np.int64)
    inb = rank < d0
    base[edge_var[inb], rank[inb]] = ids[inb]
    edge_slot[inb] = edge_var[inb] * d0 + rank[inb]
    over = degree - d0
    heavy = np.nonzero(over > 0)[0]
    bucket = np.full(num_vars, -1, dtype=np.int64)
    bucket[heavy] = _bucket_of(over[heavy])
    local = np.zeros(num_vars, dtype=np.int64)  # a heavy variable's row in its bucket
    vars_, rows = [], []
    offset = num_vars * d0
    for b in np.unique(bucket[heavy]):
        members = heavy[bucket[heavy] == b]
        local[members] = np.arange(members.shape[0])
        width = int(over[members].max())
        table = np.full((members.shape[0], width), E, dtype=np.int64)
        sel = ~inb & (bucket[edge_var] == b)
        r, c = local[edge_var[sel]], rank[sel] - d0
        table[r, c] = ids[sel]
        edge_slot[sel] = offset + r * width + c
        offset += table.size
        vars_.append(members)
        rows.append(table)
    return SlotPlan(base, tuple(vars_), tuple(rows), edge_slot)


@dataclass(frozen=True)
class Wiring:
    """Flat index arrays of a compiled factor graph.

    Attributes:
        cards: ``(V,)`` cardinality of each variable.
        max_card: ``K``, the padded state dimension.
        groups: per group static description.
        scopes: per group ``(F, arity)`` int64 variable ids.
        edge_var: ``(E,)`` column: the variable of edge ``e``.
        degree: ``(V,)`` number of edges of each variable.
        slots: where each variable's edges are (:class:`SlotPlan`: a ``(V, D0)`` table, plus
            buckets for the few variables of higher degree, if any).
        state_valid: ``(V, K)`` bool, state ``k`` exists for variable ``v``.
        merges: per merge (:func:`plan_merges`), one :class:`GroupWiring` for its groups
            together: cards padded to the largest per scope position, ``num_factors`` summed,
            ``shared`` only for a single shared group, its contiguous edge block.
        merge_members: per merge, its groups (indices into ``groups``) in edge order.
    """

    cards: np.ndarray
    max_card: int
    groups: tuple[GroupWiring, ...]
    scopes: tuple[np.ndarray, ...]
    edge_var: np.ndarray
    degree: np.ndarray
    slots: SlotPlan
    state_valid: np.ndarray
    merges: tuple[GroupWiring, ...] = ()
    merge_members: tuple[tuple[int, ...], ...] = ()

    @property
    def num_variables(self) -> int:
        return int(self.cards.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_var.shape[0])

    @property
    def max_degree(self) -> int:
        """The largest degree (at least 1)."""
        return max(int(self.degree.max(initial=0)), 1)


def build_wiring(fg: FactorGraph) -> Wiring:
    """Build the :class:`Wiring` of ``fg`` (numpy, vectorised, deterministic)."""
    fg.validate()
    cards = np.asarray(fg.cardinalities, dtype=np.int64)
    V = cards.shape[0]
    K = int(cards.max())
    members = plan_merges([g.cards for g in fg.groups], [g.num_factors for g in fg.groups])
    span: dict[int, tuple[int, int]] = {}
    merges = []
    start = 0
    for m in members:
        first = start
        for i in m:
            g = fg.groups[i]
            span[i] = (start, start + g.num_factors * g.arity)
            start = span[i][1]
        gs = [fg.groups[i] for i in m]
        cards_m = tuple(int(max(c)) for c in zip(*(g.cards for g in gs), strict=True))
        n = sum(g.num_factors for g in gs)
        shared = len(gs) == 1 and gs[0].shared
        name = "+".join(g.name for g in gs)
        merges.append(GroupWiring(name, cards_m, n, shared, first, start))
    groups = []
    for i, g in enumerate(fg.groups):
        s0, s1 = span.get(i, (start, start))  # arity 0: no edges
        groups.append(GroupWiring(g.name, g.cards, g.num_factors, g.shared, s0, s1))
    scopes = [g.scopes for g in fg.groups]
    order = [i for m in members for i in m]
    edge_var = (
        np.concatenate([scopes[i].reshape(-1) for i in order])
        if order
        else np.zeros(0, dtype=np.int64)
    )
    degree = np.bincount(edge_var, minlength=V).astype(np.int64)
    state_valid = np.arange(K)[None, :] < cards[:, None]
    return Wiring(
        cards=cards,
        max_card=K,
        groups=tuple(groups),
        scopes=tuple(scopes),
        edge_var=edge_var,
        degree=degree,
        slots=plan_slots(edge_var, V),
        state_valid=state_valid,
        merges=tuple(merges),
        merge_members=tuple(tuple(m) for m in members),
    )
