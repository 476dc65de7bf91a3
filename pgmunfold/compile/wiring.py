"""Compile-time wiring: flat integer index arrays describing who sends messages to whom.

Everything here is numpy, built once per graph, deterministic. An *edge* is one (factor, scope
position) pair. Edges are numbered group by group, factor by factor, slot by slot, so the edges
of group ``g`` are the contiguous block ``[edge_offset[g], edge_offset[g] + F_g * arity_g)`` and
reshape to ``(F_g, arity_g)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgmunfold.graph import FactorGraph

__all__ = ["GroupWiring", "Wiring", "build_wiring", "slot_table"]


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
class Wiring:
    """Flat index arrays of a compiled factor graph.

    Attributes:
        cards: ``(V,)`` cardinality of each variable.
        max_card: ``K``, the padded state dimension.
        groups: per group static description.
        scopes: per group ``(F, arity)`` int64 variable ids.
        edge_var: ``(E,)`` column: the variable of edge ``e``.
        degree: ``(V,)`` number of edges of each variable.
        var_slots: ``(V, D)`` column ``d`` = id of the ``d``-th edge of the variable, or ``E``
            (a padding row that holds log 1 = 0) when the variable has fewer than ``D`` edges.
        edge_slot: ``(E,)`` position ``v * D + d`` of edge ``e`` in the flattened ``var_slots``.
        state_valid: ``(V, K)`` bool, state ``k`` exists for variable ``v``.
    """

    cards: np.ndarray
    max_card: int
    groups: tuple[GroupWiring, ...]
    scopes: tuple[np.ndarray, ...]
    edge_var: np.ndarray
    degree: np.ndarray
    var_slots: np.ndarray
    edge_slot: np.ndarray
    state_valid: np.ndarray

    @property
    def num_variables(self) -> int:
        return int(self.cards.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_var.shape[0])

    @property
    def max_degree(self) -> int:
        return int(self.var_slots.shape[1])


def _slots_and_rank(edge_var: np.ndarray, num_vars: int) -> tuple[np.ndarray, np.ndarray]:
    E = edge_var.shape[0]
    degree = np.bincount(edge_var, minlength=num_vars)
    D = max(int(degree.max(initial=0)), 1)
    # stable sort of edges by variable: rank of each edge among its variable's edges
    order = np.argsort(edge_var, kind="stable")
    first = np.concatenate([[0], np.cumsum(degree)[:-1]])
    rank = np.empty(E, dtype=np.int64)
    rank[order] = np.arange(E, dtype=np.int64) - first[edge_var[order]]
    slots = np.full((num_vars, D), E, dtype=np.int64)
    slots[edge_var, rank] = np.arange(E, dtype=np.int64)
    return slots, rank


def slot_table(edge_var: np.ndarray, num_vars: int) -> np.ndarray:
    """``(V, D)``: row ``v`` lists the edges of variable ``v`` in edge order, padded with ``E``
    (``D`` = the largest degree, at least 1).

    Shape:
        ``edge_var``: ``(E,)`` int64; output: ``(V, D)`` int64.
    """
    return _slots_and_rank(edge_var, num_vars)[0]


def build_wiring(fg: FactorGraph) -> Wiring:
    """Build the :class:`Wiring` of ``fg`` (numpy, vectorised, deterministic)."""
    fg.validate()
    cards = np.asarray(fg.cardinalities, dtype=np.int64)
    V = cards.shape[0]
    K = int(cards.max())
    groups = []
    scopes = []
    start = 0
    for g in fg.groups:
        E_g = g.num_factors * g.arity
        groups.append(GroupWiring(g.name, g.cards, g.num_factors, g.shared, start, start + E_g))
        scopes.append(g.scopes)
        start += E_g
    edge_var = (
        np.concatenate([s.reshape(-1) for s in scopes]) if scopes else np.zeros(0, dtype=np.int64)
    )
    degree = np.bincount(edge_var, minlength=V).astype(np.int64)
    var_slots, rank = _slots_and_rank(edge_var, V)
    edge_slot = edge_var * var_slots.shape[1] + rank
    state_valid = np.arange(K)[None, :] < cards[:, None]
    return Wiring(
        cards=cards,
        max_card=K,
        groups=tuple(groups),
        scopes=tuple(scopes),
        edge_var=edge_var,
        degree=degree,
        var_slots=var_slots,
        edge_slot=edge_slot,
        state_valid=state_valid,
    )
