"""Compile-time plan of the enumerated contraction: every factor configuration as a flat entry.

The enumerated contraction (:func:`~pgmunfold.infer.enumerated.enumerated_messages`) computes
the factor-to-variable messages of *all* groups, whatever their arity and cardinalities, with
one gather, one sum and one reduction per iteration, instead of a dozen small ops per group.
Each message entry ``(edge e, state s)`` is a *row*: the reduction (log-sum-exp or max) over
the configurations of ``e``'s factor that put ``s`` at ``e``'s scope position, of the table
entry plus the cavities of the factor's *other* edges. Rows are padded to the longest (``M``
configurations), and every configuration to ``A - 1`` other edges (``A``: the largest arity).

Rows are ordered state-major, ``r = s * E + e``, so that the reductions over a row's
configurations and over an edge's states run along outer (contiguous-inner) axes, which on CPU
is several times faster than reducing a short innermost axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pgmunfold.compile.wiring import GroupWiring, SlotPlan

__all__ = [
    "LAYOUT_SLACK",
    "EnumeratedPlan",
    "RowBuckets",
    "StateLayout",
    "SweepWiring",
    "bucketed_size",
    "enumeration_size",
    "plan_buckets",
    "plan_enumeration",
    "plan_layout",
    "plan_layouts",
    "plan_row_buckets",
    "plan_sweep",
]


@dataclass(frozen=True)
class EnumeratedPlan:
    """Index arrays of the enumerated contraction over ``E`` edges of ``K`` padded states.

    Attributes:
        others: ``(A - 1, M, K * E)`` int64. ``others[i, m, s * E + e]``: the flat cavity
            index ``e' * K + x_{e'}`` of the ``i``-th other edge ``e'`` of ``e``'s factor in
            its ``m``-th configuration with state ``s`` at ``e``; ``E * K`` (a cavity of 0)
            for padding (factors of arity below ``A``, rows shorter than ``M``).
        configs: ``(M, K * E)`` int64. ``configs[m, s * E + e]``: the flat table entry of that
            configuration (tables of the groups concatenated, each ``(F_g, *cards_g)``
            flattened); ``C`` (a hard zero) for padding, and for every state beyond the
            cardinality of ``e``'s scope position.
        num_configs: ``C``, the number of table entries of all groups.
        real: the number of (configuration, position, other edge) triples a plan without
            padding would gather (``sum_g F_g prod(cards_g) a_g (a_g - 1)``).
    """

    others: np.ndarray
    configs: np.ndarray
    num_configs: int
    real: int

    @property
    def padded(self) -> int:
        """Entries gathered per iteration and batch row: ``max(A - 1, 1) * M * K * E``."""
        a1, m, r = self.others.shape
        return max(a1, 1) * m * r


def plan_enumeration(
    groups: Sequence[GroupWiring], num_edges: int, max_card: int
) -> EnumeratedPlan:
    """Plan the enumerated contraction of ``groups`` (arity >= 1, edges
    ``[edge_start, edge_stop)`` each, together covering ``[0, num_edges)``).

    Args:
        groups: the message-sending groups, with their edge ranges.
        num_edges: ``E``.
        max_card: ``K``, the padded state dimension.

    Returns:
        :class:`EnumeratedPlan`.
    """
    E, K = num_edges, max_card
    if sum(g.edge_stop - g.edge_start for g in groups) != E or any(g.arity < 1 for g in groups):
        raise ValueError("plan_enumeration needs groups of arity >= 1 covering every edge once")
    A, M, real = _extent(groups)
    C = sum(g.num_factors * int(np.prod(g.cards)) for g in groups)
    others = np.full((max(A - 1, 0), M, K * E), E * K, dtype=np.int64)
    configs = np.full((M, K * E), C, dtype=np.int64)
    offset = 0
    for g in groups:
        a, n, P = g.arity, g.num_factors, int(np.prod(g.cards))
        states = np.indices(g.cards).reshape(a, P).T  # (P, a): the state of every position
        edges = g.edge_start + np.arange(n)[:, None] * a + np.arange(a)  # (F, a)
        cav = edges[:, None, :] * K + states[None]  # (F, P, a): flat cavity index per position
        entry = offset + np.arange(n)[:, None] * P + np.arange(P)  # (F, P)
        for j, k in enumerate(g.cards):
            # configurations by their state at position j: (k, P / k), in ascending order
            order = np.argsort(states[:, j], kind="stable").reshape(k, P // k)
            rows = np.arange(k)[None, :] * E + edges[:, j, None]  # (F, k): s * E + e
            configs[: P // k, rows] = entry[:, order].transpose(2, 0, 1)
            for i, o in enumerate(x for x in range(a) if x != j):
                others[i][: P // k, rows] = cav[:, order, o].transpose(2, 0, 1)
        offset += n * P
    return EnumeratedPlan(others, configs, C, real)


def _extent(groups: Sequence[GroupWiring]) -> tuple[int, int, int]:
    """``(A, M, real)``: the largest arity, the most configurations behind one message entry,
    and the (configuration, position, other edge) triples without padding."""
    A = max((g.arity for g in groups), default=1)
    M = max((int(np.prod(g.cards)) // k for g in groups for k in g.cards), default=1)
    real = sum(g.num_factors * int(np.prod(g.cards)) * g.arity * (g.arity - 1) for g in groups)
    return A, M, real


def enumeration_size(
    groups: Sequence[GroupWiring], num_edges: int, max_card: int
) -> tuple[int, int]:
    """``(padded, real)`` of :func:`plan_enumeration`'s plan, without building it.

    Returns:
        the entries gathered per iteration and batch row (:attr:`EnumeratedPlan.padded`), and
        the (configuration, position, other edge) triples without padding
        (:attr:`EnumeratedPlan.real`).
    """
    A, M, real = _extent(groups)
    return max(A - 1, 1) * M * max_card * num_edges, real


BUCKET_OVERHEAD = 4096
""":func:`plan_row_buckets`: the cost of one more bucket, in gathered entries per batch row.
A bucket costs about 8 ops per iteration forward and as many backward (10-20 us each under
autograd on this 2-core CPU), an entry about 1-2 ns per op."""


@dataclass(frozen=True)
class RowBuckets:
    """The live message rows of the enumerated contraction, grouped into buckets of similar
    extent.

    An :class:`EnumeratedPlan` pads every row to ``M`` configurations of ``A - 1`` other edges.
    Where arities and cardinalities are mixed (Pedigree_11: arities 1 to 4, 2 and 3 states)
    most of that is padding (43592 of 72144 gathered cavities there), and a row whose state does
    not exist at its edge has no configuration at all (1265 of 3006 rows). Here each live row
    keeps only the extent of its bucket: ``(a_b, M_b)``, the most other edges and
    configurations of its rows. :func:`plan_buckets` builds them from the groups;
    :func:`plan_row_buckets`, its twin in the tests, from the padded plan.

    Attributes:
        rows: per bucket ``b``, ``(R_b,)`` int64: its message rows ``s * E + e``, ascending.
        others: per bucket, ``(a_b, M_b, R_b)`` int64: the flat cavity index ``e' * K + x``
            of each other edge of each configuration of each row (:attr:`EnumeratedPlan.others`
            at those rows, truncated to the bucket's extent), ``E * K`` for padding.
        configs: per bucket, ``(M_b, R_b)`` int64: the flat table entry of each configuration
            of each row (:attr:`EnumeratedPlan.configs` at those rows), ``C`` for padding.
        num_rows: ``K * E``, the rows of the plan.
    """

    rows: tuple[np.ndarray, ...]
    others: tuple[np.ndarray, ...]
    configs: tuple[np.ndarray, ...]
    num_rows: int

    @property
    def row_of(self) -> np.ndarray:
        """``(K * E,)`` int64: each row's position in the buckets' rows concatenated, or
        ``R = sum_b R_b`` for a row that is not live (it reads a hard zero there)."""
        return _row_of(self.rows, self.num_rows)

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """The positions of live ``rows`` (``s * E + e``, any shape) in the buckets' rows
        concatenated, without an array of all ``K * E`` rows."""
        every = np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)
        order = np.argsort(every, kind="stable")
        return order[np.searchsorted(every[order], rows)]

    @property
    def gathered(self) -> int:
        """Cavities gathered per iteration and batch row: ``sum_b a_b * M_b * R_b``."""
        return sum(o.size for o in self.others)

    @property
    def entries(self) -> tuple[np.ndarray, ...]:
        """Per bucket, ``(M_b, R_b)`` int64: the positions ``m * K * E + r`` of the bucket's
        configurations in an :class:`EnumeratedPlan`'s ``(M, K * E)`` arrays, flattened."""
        ke = self.num_rows
        return tuple(
            np.arange(c.shape[0], dtype=np.int64)[:, None] * ke + r[None, :]
            for r, c in zip(self.rows, self.configs, strict=True)
        )


def plan_row_buckets(plan: EnumeratedPlan, overhead: int = BUCKET_OVERHEAD) -> RowBuckets:
    """Group the live rows of ``plan`` into buckets by their extent ``(a, m)``: the number of
    other edges and of configurations of each row (its factor's arity less one, and the
    product of its other positions' cardinalities). Extents are visited from the largest
    (``a * m``, then ``a``, then ``m``); each joins the bucket open last if the padding that
    adds (its rows times the difference in ``a * m``, ``max(a, 1)`` for rows without other
    edges) costs less than ``overhead`` gathered entries, else it opens a new bucket. A graph
    of one factor shape has one bucket of all its live rows.

    Returns:
        :class:`RowBuckets`.
    """
    others, configs = plan.others, plan.configs
    A1 = others.shape[0]
    KE = configs.shape[1]
    pad = KE  # the flat cavity index of padding (E * K)
    n_cfg = (configs != plan.num_configs).sum(axis=0)  # real configurations: a prefix of m
    n_oth = (others[:, 0, :] != pad).sum(axis=0) if A1 else np.zeros(KE, dtype=np.int64)
    live = n_cfg > 0
    extents, counts = np.unique(np.stack([n_oth[live], n_cfg[live]]), axis=1, return_counts=True)
    buckets = _merge_extents(
        {(int(a), int(m)): int(c) for (a, m), c in zip(extents.T, counts, strict=True)}, overhead
    )
    rows_b, others_b, configs_b = [], [], []
    for a_b, m_b, members in buckets:
        mask = np.zeros(KE, dtype=bool)
        for a, m in members:
            mask |= live & (n_oth == a) & (n_cfg == m)
        r = np.flatnonzero(mask).astype(np.int64)
        rows_b.append(r)
        others_b.append(np.ascontiguousarray(others[:a_b, :m_b][:, :, r]))
        configs_b.append(np.ascontiguousarray(configs[:m_b, r]))
    return RowBuckets(tuple(rows_b), tuple(others_b), tuple(configs_b), KE)


def _row_of(rows: Sequence[np.ndarray], num_rows: int) -> np.ndarray:
    """:attr:`RowBuckets.row_of` of the buckets' ``rows`` among ``num_rows`` (``K * E``)."""
    total = sum(len(r) for r in rows)
    row_of = np.full(num_rows, total, dtype=np.int64)
    if total:
        row_of[np.concatenate(rows)] = np.arange(total)
    return row_of


def plan_buckets(
    groups: Sequence[GroupWiring],
    num_edges: int,
    max_card: int,
    overhead: int = BUCKET_OVERHEAD,
) -> RowBuckets:
    """The row buckets of the enumerated contraction of ``groups``, built from the groups
    directly: the same as ``plan_row_buckets(plan_enumeration(groups, num_edges, max_card),
    overhead)``, in memory proportional to the buckets' entries rather than to the padded
    plan's ``max(A - 1, 1) * M * K * E`` (a chain of 100000 binary variables with one 64-state
    variable: 800k gathered cavities, against 1.6G padded entries).

    Args:
        groups: the message-sending groups (arity >= 1, edges ``[edge_start, edge_stop)``
            each, together covering ``[0, num_edges)``).
        num_edges: ``E``.
        max_card: ``K``, the padded state dimension.
        overhead: the cost of one more bucket (:func:`plan_row_buckets`).

    Returns:
        :class:`RowBuckets`.
    """
    E, K = num_edges, max_card
    if sum(g.edge_stop - g.edge_start for g in groups) != E or any(g.arity < 1 for g in groups):
        raise ValueError("plan_buckets needs groups of arity >= 1 covering every edge once")
    merged = _merge_extents(_extent_counts(groups), overhead)
    bucket_of = {ext: b for b, (_, _, members) in enumerate(merged) for ext in members}
    C = sum(g.num_factors * int(np.prod(g.cards)) for g in groups)
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in merged]
    offset = 0
    for g in groups:
        a, n, P = g.arity, g.num_factors, int(np.prod(g.cards))
        states = np.indices(g.cards).reshape(a, P).T  # (P, a): the state of every position
        edges = g.edge_start + np.arange(n)[:, None] * a + np.arange(a)  # (F, a)
        entry = offset + np.arange(n)[:, None] * P + np.arange(P)  # (F, P)
        for j, k in enumerate(g.cards):
            m = P // k
            b = bucket_of[(a - 1, m)]
            a_b, m_b, _ = merged[b]
            # configurations by their state at position j: (k, m), in ascending order
            order = np.argsort(states[:, j], kind="stable").reshape(k, m)
            rows = np.arange(k)[None, :] * E + edges[:, j, None]  # (F, k): s * E + e
            cfg = np.full((m_b, n, k), C, dtype=np.int64)
            cfg[:m] = entry[:, order].transpose(2, 0, 1)
            oth = np.full((a_b, m_b, n, k), E * K, dtype=np.int64)
            for i, o in enumerate(x for x in range(a) if x != j):
                cav = edges[:, o, None, None] * K + states[order, o][None]  # (F, k, m)
                oth[i, :m] = cav.transpose(2, 0, 1)
            parts[b].append(
                (rows.reshape(-1), oth.reshape(a_b, m_b, n * k), cfg.reshape(m_b, n * k))
            )
        offset += n * P
    rows_b, others_b, configs_b = [], [], []
    for part in parts:
        r = np.concatenate([p[0] for p in part])
        order = np.argsort(r, kind="stable")
        rows_b.append(r[order])
        others_b.append(np.concatenate([p[1] for p in part], axis=2)[:, :, order])
        configs_b.append(np.concatenate([p[2] for p in part], axis=1)[:, order])
        part.clear()
    return RowBuckets(tuple(rows_b), tuple(others_b), tuple(configs_b), K * E)


def _merge_extents(
    counts: dict[tuple[int, int], int], overhead: int
) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """:func:`plan_row_buckets`'s grouping of row extents ``(a, m)`` (``counts``: rows per
    extent) into buckets ``(a_b, M_b, member extents)``."""
    keys = sorted(counts, key=lambda k: (max(k[0], 1) * k[1], k[0], k[1]), reverse=True)
    buckets: list[tuple[int, int, list[tuple[int, int]]]] = []
    for a, m in keys:
        if buckets:
            a_b, m_b, members = buckets[-1]
            extra = counts[(a, m)] * (max(a_b, 1) * m_b - max(a, 1) * m)
            if extra < overhead:
                members.append((a, m))
                buckets[-1] = (max(a_b, a), max(m_b, m), members)
                continue
        buckets.append((a, m, [(a, m)]))
    return buckets


def bucketed_size(groups: Sequence[GroupWiring], overhead: int = BUCKET_OVERHEAD) -> int:
    """:attr:`RowBuckets.gathered` of the plan of ``groups`` (:func:`plan_row_buckets`), without
    building it: the cavities the enumerated contraction gathers per iteration and batch row."""
    counts = _extent_counts(groups)
    return sum(
        a_b * m_b * sum(counts[e] for e in members)
        for a_b, m_b, members in _merge_extents(counts, overhead)
    )


def _extent_counts(groups: Sequence[GroupWiring]) -> dict[tuple[int, int], int]:
    """The live rows of the groups' plan per extent ``(a, m)``: scope position ``j`` of a group
    gives ``F_g * k_j`` rows of ``a_g - 1`` other edges and ``prod(cards_g) / k_j``
    configurations."""
    counts: dict[tuple[int, int], int] = {}
    for g in groups:
        P = int(np.prod(g.cards))
        for k in g.cards:
            key = (g.arity - 1, P // k)
            counts[key] = counts.get(key, 0) + g.num_factors * k
    return counts


LAYOUT_SLACK = 1.5
""":func:`plan_layouts`: items of mixed cardinalities share one class of ``K`` states (the padded
state-major layout) while that holds at most this many times the states that exist. Each
further class costs about 7 small ops per iteration of the no-grad loop (Pedigree_11, 2 and 3
states: 340-370 against 272-343 us per iteration with one class per cardinality)."""


@dataclass(frozen=True)
class StateLayout:
    """Where the no-grad enumerated loop keeps each (item, state) pair of ``n`` items (edges or
    variables) with cardinalities ``card`` in a flat vector of ``L`` entries: items grouped
    into classes of equal width ``k_c`` (ascending), each class state-major. The pair
    ``(i, s)`` of an item of class ``c`` (``n_c`` items, ``i`` its ``j``-th) is at
    ``offset_c + s * n_c + j``, so a reduction over every item's states is one ``(k_c, n_c)``
    view per class. :func:`plan_layout` makes one class per cardinality (``L = sum(card)``:
    only the states that exist), or, where that saves little, one class of width ``K`` (the
    padded state-major layout ``s * n + i``: ``L = n K``, whose positions beyond an item's
    cardinality hold hard zeros). Nothing here is of the padded size ``n * K`` unless the
    layout is (one 1000-state variable among 100000 binary ones would make it 500 times the
    states that exist).

    Attributes:
        first: ``(n,)`` int64: the position of ``(i, 0)``, ``offset_c + j``.
        stride: ``(n,)`` int64: ``n_c``, the step from one state of ``i`` to the next.
        width: ``(n,)`` int64: ``k_c``, the states of ``i``'s class.
        card: ``(n,)`` int64: the items' cardinalities (at most their width).
        source: ``(L,)`` int64: the flat index ``i * K + s`` in ``(n, K)`` of each position.
        classes: per class, ``(offset_c, k_c, n_c)``.
    """

    first: np.ndarray
    stride: np.ndarray
    width: np.ndarray
    card: np.ndarray
    source: np.ndarray
    classes: tuple[tuple[int, int, int], ...]

    @property
    def size(self) -> int:
        """``L``: the number of positions."""
        return int(self.source.shape[0])

    @property
    def padded(self) -> bool:
        """Some positions are states beyond their item's cardinality."""
        return self.size > int(self.card.sum())

    def at(self, items: np.ndarray, states: np.ndarray) -> np.ndarray:
        """The positions of ``(items, states)`` (broadcast), ``L`` where the item is ``n``
        (padding) or the state is beyond its class's width."""
        n, L = self.first.shape[0], self.size
        if n == 0:
            return np.full(np.broadcast(items, states).shape, L, dtype=np.int64)
        i = np.minimum(items, n - 1)
        ok = (items < n) & (states < self.width[i])
        return np.where(ok, self.first[i] + states * self.stride[i], L).astype(np.int64)


def plan_layouts(
    edge_card: np.ndarray, var_card: np.ndarray, max_card: int
) -> tuple[StateLayout, StateLayout]:
    """The :class:`StateLayout` of the edges (cardinalities ``edge_card`` ``(E,)``) and of the
    variables (``var_card`` ``(V,)``): both padded (one class of width ``max_card``) while the
    edges' padded layout holds at most :data:`LAYOUT_SLACK` times their states that exist,
    else both with one class per cardinality. (The two go together: a padded message state
    reads the belief of the same padded state of its variable, a hard zero.)"""
    padded = len(edge_card) * max_card <= LAYOUT_SLACK * int(np.sum(edge_card))
    return plan_layout(edge_card, max_card, padded), plan_layout(var_card, max_card, padded)


def plan_layout(card: np.ndarray, max_card: int, padded: bool = False) -> StateLayout:
    """The :class:`StateLayout` of items of cardinalities ``card`` ``(n,)`` (each at most
    ``max_card``): one class per cardinality, or, ``padded``, one class of width
    ``max_card``."""
    card = np.asarray(card, dtype=np.int64)
    n, K = card.shape[0], max_card
    width = np.full(n, K, dtype=np.int64) if padded else card
    first = np.zeros(n, dtype=np.int64)
    stride = np.zeros(n, dtype=np.int64)
    sources, classes = [], []
    offset = 0
    for k in np.unique(width):
        items = np.flatnonzero(width == k)
        k, m = int(k), len(items)
        first[items] = offset + np.arange(m)
        stride[items] = m
        sources.append((items[None, :] * K + np.arange(k)[:, None]).reshape(-1))
        classes.append((offset, k, m))
        offset += k * m
    source = np.concatenate(sources).astype(np.int64) if sources else np.zeros(0, np.int64)
    return StateLayout(first, stride, width, card, source, tuple(classes))


@dataclass(frozen=True)
class SweepWiring:
    """Flat index arrays of the no-grad enumerated loop
    (:class:`~pgmunfold.infer.enumerated.EnumeratedSweep`), over ``V`` variables, ``E`` edges
    and ``K`` padded states. Messages and beliefs (or the field) are flat vectors of only the
    states that exist, laid out by :class:`StateLayout` (``messages``, ``L`` positions;
    ``beliefs``, ``LV`` positions), each with a trailing entry that is always 0: a message
    ``(e, s)`` is at ``messages.at(e, s)`` of an ``(L + 1,)`` vector, a belief ``(v, s)`` at
    ``beliefs.at(v, s)`` of an ``(LV + 1,)`` vector. With one cardinality ``K`` everywhere,
    ``s * E + e`` and ``s * V + v``.

    Attributes:
        messages: the edges' :class:`StateLayout` (an edge has its variable's cardinality).
        beliefs: the variables' :class:`StateLayout`.
        bel_slots: ``(D0 * (LV + 1),)``: entry ``d * (LV + 1) + p`` is the message position of
            the ``d``-th edge ``e`` (the base slot table) of the variable at belief position
            ``p``, in the same state, or ``L`` (padding, and the last entry of each ``d``).
        bucket_pos: per bucket of high-degree variables, ``(N_j,)``: the belief positions of
            the states of its variables (``N_j`` of them).
        bucket_slots: per bucket, ``(W_j * N_j,)``: entry ``d * N_j + i`` is the message
            position of the ``(D0 + d)``-th edge of the variable at ``bucket_pos[i]``, in the
            same state, or ``L``.
        cav_var: ``(L + 1,)``: the belief position of each message position's variable and
            state; the last is ``LV``.
        others: per row bucket ``b`` (:class:`RowBuckets`), ``(a_b, M_b, R_b)``: the
            bucket's :attr:`RowBuckets.others`, as message positions (``e' * K + x`` becomes
            ``messages.at(e', x)``; padding ``L``).
        row_of: ``(L,)``: each message position's row in the buckets' rows concatenated, or
            ``R`` (their number; a hard zero) for a state that does not exist at its edge
            (only in a padded layout).
        exact: exact cavities (hard zeros), for a slot plan without buckets only, else
            ``None``: ``(pre_slots, suf_slots, cav_lo, cav_hi)``, over a state vector
            ``[messages (L + 1) | field (LV + 1)]``. ``pre_slots`` ``((D0 + 1) * (LV + 1),)``
            gathers the field, then the ``D0`` slot rows of ``bel_slots``; its cumulative sum
            over rows, the *prefix* table, holds in row ``j`` the field plus the first ``j``
            incoming messages. ``suf_slots`` (the same size) gathers a row of zeros, then the
            slot rows in reverse order; row ``j`` of its cumulative sum, the *suffix* table,
            holds the last ``j`` incoming messages. Edge ``e`` in slot ``d`` of its variable
            ``v`` has the cavity ``prefix[d] + suffix[D0 - 1 - d]`` at ``v``'s belief
            position: ``cav_lo``, ``cav_hi`` ``(L + 1,)`` are those flat positions (the last:
            column ``LV`` of row 0, a 0 in both tables). No message is ever subtracted.
    """

    messages: StateLayout
    beliefs: StateLayout
    bel_slots: np.ndarray
    bucket_pos: tuple[np.ndarray, ...]
    bucket_slots: tuple[np.ndarray, ...]
    cav_var: np.ndarray
    others: tuple[np.ndarray, ...]
    row_of: np.ndarray
    exact: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


def plan_sweep(
    buckets: RowBuckets,
    slots: SlotPlan,
    edge_var: np.ndarray,
    layouts: tuple[StateLayout, StateLayout],
    max_card: int,
    exact: bool = False,
) -> SweepWiring:
    """The :class:`SweepWiring` of a graph: its enumerated contraction's row ``buckets``
    (:func:`plan_buckets`), slot plan ``slots``, edge variables ``edge_var`` ``(E,)``, the
    layouts of the edges' and the variables' states (:func:`plan_layouts`) and ``K``; ``exact``:
    also the exact cavities' arrays (when the slot plan has no buckets)."""
    ml, vl = layouts
    K, E = max_card, len(edge_var)
    L, LV = ml.size, vl.size
    # the belief positions' variables and states, and each variable's slot row at them
    bv, bs = vl.source // K, vl.source % K
    base = ml.at(slots.base[bv].T, bs[None, :])  # (D0, LV); edge E (padding): L
    bel_slots = np.concatenate([base, np.full((base.shape[0], 1), L)], axis=1).reshape(-1)
    bucket_pos, bucket_slots = [], []
    for v, r in zip(slots.vars, slots.rows, strict=True):
        # the states of the bucket's variables, state-major, as the layout
        st = np.repeat(np.arange(K), len(v))
        i = np.tile(np.arange(len(v)), K)
        keep = st < vl.width[v][i]
        i, st = i[keep], st[keep]
        bucket_pos.append(vl.at(v[i], st))
        bucket_slots.append(ml.at(r[i].T, st[None, :]).reshape(-1))
    me, ms = ml.source // K, ml.source % K  # each message position's edge and state
    cav_var = np.append(vl.at(edge_var[me], ms), LV)

    def position(o: np.ndarray) -> np.ndarray:  # e' * K + x (padding E * K) -> its position
        return ml.at(o // K, o % K)

    exact_arrays = None
    if exact and slots.compact:
        d0, width = slots.base.shape[1], LV + 1
        slot_rows = bel_slots.reshape(d0, width)
        field = L + 1 + np.arange(width)  # the field's positions in the state
        pre_slots = np.concatenate([field[None], slot_rows]).reshape(-1)
        suf_slots = np.concatenate([np.full((1, width), L), slot_rows[::-1]]).reshape(-1)
        d = (slots.edge_slot % d0)[me]  # each message's edge's slot in its variable's row
        col = cav_var[:-1]
        cav_lo = np.append(d * width + col, LV)
        cav_hi = np.append((d0 - 1 - d) * width + col, LV)
        exact_arrays = (pre_slots.astype(np.int64), suf_slots.astype(np.int64), cav_lo, cav_hi)
    # each message position's row; R (not reduced: a hard zero) for a state that does not
    # exist at its edge (a padded layout's)
    live = ms < ml.card[me]
    R = sum(len(r) for r in buckets.rows)
    row_of = np.full(L, R, dtype=np.int64)
    row_of[live] = buckets.positions(ms[live] * E + me[live])
    return SweepWiring(
        ml,
        vl,
        bel_slots.astype(np.int64),
        tuple(bucket_pos),
        tuple(bucket_slots),
        cav_var.astype(np.int64),
        tuple(position(o) for o in buckets.others),
        row_of,
        exact_arrays,
    )
