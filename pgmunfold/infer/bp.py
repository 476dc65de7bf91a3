"""Loopy belief propagation layers in the log domain (sum- or max-product, one code path).

Messages live in an edge-ordered tensor ``msg`` of shape ``(B, E, K)`` (factor-to-variable
log-messages, normalised, or with :mod:`~pgmunfold.infer.enumerated` shifted to a largest
state of 0; states beyond a variable's cardinality at ``NEG``). One flooding
iteration is: gather every variable's incoming messages through its slots (:class:`Slots`: gathers,
plus one scatter into distinct rows per bucket of high-degree variables),
form the cavity of every edge as an exclusive sum (or, when the compiler proved that no hard
zero can occur, by subtraction from the belief), then one dense batched reduction per factor
group. Kernels here receive tensors and static group descriptions, never a ``FactorGraph``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pgmunfold.compile.wiring import GroupWiring
from pgmunfold.infer.ops import (
    NEG,
    DensePairwise,
    Semiring,
    dense_pairwise_messages,
    exclusive_sum,
    factor_joint,
    factor_to_variable,
    gather_rows,
    log_normalize,
)

__all__ = [
    "Slots",
    "bp_cavities",
    "bp_factor_log_beliefs",
    "bp_factor_messages",
    "gather_slots",
    "shift_to_max",
    "slot_cavities",
    "slot_sum",
    "variable_beliefs",
]


class Slots(NamedTuple):
    """Index buffers of a :class:`~pgmunfold.compile.wiring.SlotPlan` (the network's
    ``var_slots`` and ``slot_vars_j`` / ``slot_rows_j`` buffers): every variable's edges, a
    ``(V, D0)`` base table plus buckets for the few variables of higher degree.

    Shape:
        ``base``: ``(V, D0)``; ``vars[j]``: ``(V_j,)``; ``rows[j]``: ``(V_j, W_j)``; int64,
        ``E`` = padding (a message of log 1).
    """

    base: torch.Tensor
    vars: tuple[torch.Tensor, ...] = ()
    rows: tuple[torch.Tensor, ...] = ()


def gather_slots(msg: torch.Tensor, slots: Slots) -> list[torch.Tensor]:
    """Incoming messages of every variable, padded with log 1: the base table's, then each
    bucket's.

    Shape:
        ``msg``: ``(B, E, K)``; output: ``[(B, V, D0, K), (B, V_0, W_0, K), ...]``.
    """
    B, _, K = msg.shape
    padded = torch.cat([msg, msg.new_zeros(B, 1, K)], dim=1)
    return [
        gather_rows(padded, t.reshape(-1)).view(B, *t.shape, K) for t in (slots.base, *slots.rows)
    ]


def slot_sum(parts: Sequence[torch.Tensor], slots: Slots) -> torch.Tensor:
    """Per variable, the sum of its gathered incoming messages (``parts`` from
    :func:`gather_slots`): the base rows, plus each bucket's rows added at its variables.

    Shape:
        ``parts``: as :func:`gather_slots` returns; output: ``(B, V, K)``.
    """
    total = parts[0].sum(dim=2)
    for v, part in zip(slots.vars, parts[1:], strict=True):
        total = total.index_add(1, v, part.sum(dim=2))
    return total


def variable_beliefs(msg: torch.Tensor, unary: torch.Tensor, slots: Slots) -> torch.Tensor:
    """Unnormalised log beliefs ``unary + sum of incoming messages``.

    Shape:
        ``msg``: ``(B, E, K)``; ``unary``: ``(B, V, K)``; output: ``(B, V, K)``.
    """
    return unary + slot_sum(gather_slots(msg, slots), slots)


def bp_cavities(
    msg: torch.Tensor,
    unary: torch.Tensor,
    slots: Slots,
    edge_slot: torch.Tensor,
    edge_var: torch.Tensor,
    exact: bool,
) -> torch.Tensor:
    """Variable-to-factor log-messages (cavities) of every edge.

    ``exact=True`` forms each cavity as the sum of the *other* incoming messages (exact with hard
    zeros): exclusive sums within the edge's row of the base table or of its bucket, plus the
    total of the variable's other row, never a subtraction. ``exact=False`` subtracts the
    edge's own message from the belief (one pass cheaper, exact whenever no factor table holds
    ``-inf``).

    Each cavity is returned shifted by its largest state (a constant per edge, which every use
    normalises away), so a table entry added to it keeps its precision: a hub's summed
    messages reach ``-1e5`` nats, where float32 resolves only ``0.008``.

    Shape:
        ``msg``: ``(B, E, K)``; ``unary``: ``(B, V, K)``; ``edge_slot``, ``edge_var``:
        ``(E,)`` (``edge_slot``: position in the flattened slot layout, see
        :class:`~pgmunfold.compile.wiring.SlotPlan`); output: ``(B, E, K)``.
    """
    parts = gather_slots(msg, slots)
    if exact:
        cav = gather_rows(slot_cavities(unary, parts, slots.vars, dim=1), edge_slot)
    else:
        cav = gather_rows(unary + slot_sum(parts, slots), edge_var) - msg
    return shift_to_max(cav)


def shift_to_max(cav: torch.Tensor) -> torch.Tensor:
    """``cav`` minus its largest state per edge (not below ``NEG / 2``, so an impossible
    variable's cavity stays a sentinel)."""
    return cav - cav.amax(dim=-1, keepdim=True).clamp_min(NEG / 2).detach()


def slot_cavities(
    field: torch.Tensor,
    parts: Sequence[torch.Tensor],
    bucket_vars: Sequence[torch.Tensor],
    dim: int,
) -> torch.Tensor:
    """Exact cavity of every slot of a flattened slot layout ``[base rows | bucket rows ...]``
    (:class:`~pgmunfold.compile.wiring.SlotPlan`): the field, plus exclusive sums within the
    slot's row, plus the total of the variable's other row (base or bucket), if any. Never a
    subtraction, so exact with hard-zero sentinels. Serves both layouts: the general path's
    (``dim = 1``: variables before states) and the state-major pairwise path's (``dim = 2``).

    Shape:
        ``field``: ``(B, V, K)`` (``dim = 1``) or ``(B, K, V)`` (``dim = 2``); ``parts``: the
        gathered rows, base then buckets, slots on axis 2 and the rest as in ``field``
        (``(B, V_j, W_j, K)`` or ``(B, K, W_j, V_j)``); ``bucket_vars[j]``: ``(V_j,)``; output:
        ``field`` with its variable axis replaced by the flattened slots ``S``.
    """

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(dim, dim + 1)

    if not bucket_vars:
        return flat(field.unsqueeze(2) + exclusive_sum(parts[0], dim=2))
    sums = [p.sum(dim=2) for p in parts]
    # the base rows' outside: the field plus the variable's bucket row (zero if none)
    outside = field
    for v, s in zip(bucket_vars, sums[1:], strict=True):
        outside = outside.index_add(dim, v, s)
    cavs = [flat(outside.unsqueeze(2) + exclusive_sum(parts[0], dim=2))]
    for v, p in zip(bucket_vars, parts[1:], strict=True):
        out_v = field.index_select(dim, v) + sums[0].index_select(dim, v)
        cavs.append(flat(out_v.unsqueeze(2) + exclusive_sum(p, dim=2)))
    return torch.cat(cavs, dim=dim)


def _split(cav: torch.Tensor, g: GroupWiring, rows: int) -> list[torch.Tensor]:
    B, _, K = cav.shape
    q = cav.reshape(B, rows, g.arity, K)
    return [q[:, :, j, :k] for j, k in enumerate(g.cards)]


def bp_factor_messages(
    cav: torch.Tensor,
    thetas: Sequence[torch.Tensor],
    groups: Sequence[GroupWiring],
    semiring: Semiring,
    rows: Sequence[int] | None = None,
    dense: Sequence[DensePairwise | None] | None = None,
) -> torch.Tensor:
    """New normalised factor-to-variable log-messages for the edges in ``cav``.

    ``cav`` holds the cavities of the listed groups' edges, concatenated group by group: all
    edges of the graph, or (sequential schedules) ``rows[g]`` factors of each group. A listed
    group may be a merge (:func:`~pgmunfold.compile.wiring.plan_merges`: several groups of one
    arity, their tables padded with hard zeros to its cardinalities).
    ``dense[g]``, where given, is the exp-domain form of a pairwise group (sum-product): its
    messages are then one batched matrix-vector product (:func:`dense_pairwise_messages`).

    Shape:
        ``cav``: ``(B, E', K)``; ``thetas[g]``: ``(F'_g, *cards_g)`` (``F'_g`` = factors of the
        group in ``cav``, or 1 for a shared table); output: ``(B, E', K)``.
    """
    B, _, K = cav.shape
    if not groups:
        return cav.new_zeros(B, 0, K)
    out = []
    start = 0
    counts = [g.num_factors for g in groups] if rows is None else rows
    plans = [None] * len(groups) if dense is None else dense
    for g, th, n, plan in zip(groups, thetas, counts, plans, strict=True):
        block = cav.narrow(1, start, n * g.arity)
        start += n * g.arity
        if plan is not None:
            ms = dense_pairwise_messages(plan, *_split(block, g, n))
        else:
            ms = factor_to_variable(th, _split(block, g, n), semiring)
        ms = [F.pad(m, (0, K - m.shape[-1]), value=NEG) if m.shape[-1] < K else m for m in ms]
        stacked = torch.stack([m.expand(B, n, K) for m in ms], dim=2)
        out.append(stacked.reshape(B, n * g.arity, K))
    new = out[0] if len(out) == 1 else torch.cat(out, dim=1)
    return log_normalize(new)


def bp_factor_log_beliefs(
    cav: torch.Tensor, thetas: Sequence[torch.Tensor], groups: Sequence[GroupWiring]
) -> list[torch.Tensor]:
    """Normalised log factor beliefs of every group.

    Shape:
        ``cav``: ``(B, E, K)``; output ``[g]``: ``(B, F_g, *cards_g)``.
    """
    out = []
    for g, th in zip(groups, thetas, strict=True):
        block = cav[:, g.edge_start : g.edge_stop]
        joint = factor_joint(th, _split(block, g, g.num_factors))
        dims = tuple(range(2, 2 + g.arity))
        out.append((joint - torch.logsumexp(joint, dim=dims, keepdim=True)).clamp_min(NEG))
    return out
