"""Naive (fully factorised) mean-field layers.

The state is a tensor of marginals ``q`` of shape ``(B, V, K)``. The mean field of a variable is
its unary plus, for every factor it belongs to, the expected log-potential under the other scope
variables' marginals: one batched contraction (einsum) per factor group, gathered back to the
variables through their slots (:class:`~pgmunfold.infer.bp.Slots`: gathers, plus one scatter into
distinct rows per bucket of high-degree variables).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pgmunfold.compile.wiring import GroupWiring
from pgmunfold.infer.bp import Slots, gather_slots, slot_sum
from pgmunfold.infer.ops import contract_expectation, gather_rows

__all__ = ["mf_expected_potentials", "mf_field"]


def mf_expected_potentials(
    q: torch.Tensor,
    thetas: Sequence[torch.Tensor],
    groups: Sequence[GroupWiring],
    edge_var: torch.Tensor,
) -> list[list[torch.Tensor]]:
    """Expected log-potentials of each group's scope positions under the other positions.

    Shape:
        ``q``: ``(B, V, K)``; ``edge_var``: ``(E,)``; output ``[g][i]``: ``(B, F_g, cards_g[i])``.
    """
    B, _, K = q.shape
    qe = gather_rows(q, edge_var)  # (B, E, K)
    out = []
    for g, th in zip(groups, thetas, strict=True):
        block = qe[:, g.edge_start : g.edge_stop].reshape(B, g.num_factors, g.arity, K)
        probs = [block[:, :, j, :k] for j, k in enumerate(g.cards)]
        out.append(contract_expectation(th, probs))
    return out


def mf_field(
    q: torch.Tensor,
    unary: torch.Tensor,
    thetas: Sequence[torch.Tensor],
    groups: Sequence[GroupWiring],
    edge_var: torch.Tensor,
    slots: Slots,
) -> torch.Tensor:
    """Mean field (unnormalised log of the updated marginals) of every variable.

    ``groups`` cover all edges in edge order: the network passes its merges
    (:func:`~pgmunfold.compile.wiring.plan_merges`), tables padded with 0 (padded states have
    probability 0).

    Shape:
        ``q``: ``(B, V, K)``; ``unary``: ``(B, V, K)``; output: ``(B, V, K)``.
    """
    B, _, K = q.shape
    if not groups:
        return unary
    parts = []
    for g, ms in zip(groups, mf_expected_potentials(q, thetas, groups, edge_var), strict=True):
        ms = [F.pad(m, (0, K - m.shape[-1])) if m.shape[-1] < K else m for m in ms]
        parts.append(torch.stack(ms, dim=2).reshape(B, g.num_factors * g.arity, K))
    contrib = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return unary + slot_sum(gather_slots(contrib, slots), slots)
