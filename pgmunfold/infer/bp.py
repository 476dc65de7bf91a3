"""Loopy belief propagation layers in the log domain (sum- or max-product, one code path).

Messages live in an edge-ordered tensor ``msg`` of shape ``(B, E, K)`` (factor-to-variable
log-messages, normalised, states beyond a variable's cardinality at ``NEG``). One flooding
iteration is: gather every variable's incoming messages through ``var_slots`` (no scatter),
form the cavity of every edge as an exclusive sum (or, when the compiler proved that no hard
zero can occur, by subtraction from the belief), then one dense batched reduction per factor
group. Kernels here receive tensors and static group descriptions, never a ``FactorGraph``.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    "bp_cavities",
    "bp_factor_log_beliefs",
    "bp_factor_messages",
    "gather_slots",
    "variable_beliefs",
]


def gather_slots(msg: torch.Tensor, var_slots: torch.Tensor) -> torch.Tensor:
    """Incoming messages of every variable, padded with log 1.

    Shape:
        ``msg``: ``(B, E, K)``; ``var_slots``: ``(V, D)`` int64 (``E`` = padding);
        output: ``(B, V, D, K)``.
    """
    B, _, K = msg.shape
    padded = torch.cat([msg, msg.new_zeros(B, 1, K)], dim=1)
    return gather_rows(padded, var_slots.reshape(-1)).view(B, *var_slots.shape, K)


def variable_beliefs(
    msg: torch.Tensor, unary: torch.Tensor, var_slots: torch.Tensor
) -> torch.Tensor:
    """Unnormalised log beliefs ``unary + sum of incoming messages``.

    Shape:
        ``msg``: ``(B, E, K)``; ``unary``: ``(B, V, K)``; output: ``(B, V, K)``.
    """
    return unary + gather_slots(msg, var_slots).sum(dim=2)


def bp_cavities(
    msg: torch.Tensor,
    unary: torch.Tensor,
    var_slots: torch.Tensor,
    edge_slot: torch.Tensor,
    edge_var: torch.Tensor,
    exact: bool,
) -> torch.Tensor:
    """Variable-to-factor log-messages (cavities) of every edge.

    ``exact=True`` forms each cavity as the sum of the *other* incoming messages (exact with hard
    zeros); ``exact=False`` subtracts the edge's own message from the belief (one pass cheaper,
    exact whenever no factor table holds ``-inf``).

    Shape:
        ``msg``: ``(B, E, K)``; ``unary``: ``(B, V, K)``; ``var_slots``: ``(V, D)``;
        ``edge_slot``, ``edge_var``: ``(E,)``; output: ``(B, E, K)``.
    """
    B, _, K = msg.shape
    g = gather_slots(msg, var_slots)
    if exact:
        cav = unary.unsqueeze(2) + exclusive_sum(g, dim=2)
        return gather_rows(cav.reshape(B, -1, K), edge_slot)
    return gather_rows(unary + g.sum(dim=2), edge_var) - msg


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
    edges of the graph, or (sequential schedules) ``rows[g]`` factors of each group.
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
