"""Free energies: the Bethe approximation of ``log Z`` (BP), the mean-field lower bound, and the
score (unnormalised log-probability) of joint states."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pgmunfold.compile.wiring import GroupWiring
from pgmunfold.infer.ops import NEG

__all__ = ["bethe_log_partition", "entropy_terms", "mean_field_bound", "score_states"]


def _plogp(p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """``p * log p`` with ``0 log 0 = 0`` (``logp`` is finite: sentinels, never ``-inf``)."""
    return p * logp


def entropy_terms(log_p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Entropy ``-sum p log p`` over ``dims`` of normalised log-probabilities (finite)."""
    return -_plogp(log_p.exp(), log_p).sum(dim=dims)


def bethe_log_partition(
    log_marginals: torch.Tensor,
    unary: torch.Tensor,
    degree: torch.Tensor,
    factor_log_beliefs: Sequence[torch.Tensor],
    thetas: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Negative Bethe free energy, BP's estimate of ``log Z``.

    ``-F = sum_f (E_bf[theta_f] + H(b_f)) + sum_v (E_bv[unary_v] + (1 - d_v) H(b_v))``.

    Shape:
        ``log_marginals``, ``unary``: ``(B, V, K)``; ``degree``: ``(V,)`` (factors per variable);
        ``factor_log_beliefs[g]``: ``(B, F_g, *cards)``; ``thetas[g]``: ``(F_g or 1, *cards)``;
        output: ``(B,)``.
    """
    p = log_marginals.exp()
    var_term = (p * unary).sum(dim=2) + (1.0 - degree) * entropy_terms(log_marginals, (2,))
    total = var_term.sum(dim=1)
    for lb, th in zip(factor_log_beliefs, thetas, strict=True):
        b = lb.exp()
        dims = tuple(range(1, lb.dim()))
        total = total + (b * (th.unsqueeze(0) - lb)).sum(dim=dims)
    return total


def mean_field_bound(
    q: torch.Tensor,
    unary: torch.Tensor,
    slot0_expectations: Sequence[torch.Tensor],
    groups: Sequence[GroupWiring],
    edge_var: torch.Tensor,
) -> torch.Tensor:
    """Variational lower bound ``E_q[log p~] + H(q) <= log Z`` of a fully factorised ``q``.

    ``slot0_expectations[g]`` is the expected log-potential of group ``g`` as a function of its
    first scope variable (the other positions averaged under ``q``); contracting it with that
    variable's marginal gives ``E_q[theta_f]``.

    Shape:
        ``q``, ``unary``: ``(B, V, K)``; ``slot0_expectations[g]``: ``(B, F_g, cards_g[0])``;
        output: ``(B,)``.
    """
    logq = q.clamp_min(torch.finfo(q.dtype).tiny).log().clamp_min(NEG)
    total = (q * unary).sum(dim=(1, 2)) - _plogp(q, logq).sum(dim=(1, 2))
    for g, m0 in zip(groups, slot0_expectations, strict=True):
        first = edge_var[g.edge_start : g.edge_stop : g.arity]
        q0 = q[:, first, : g.cards[0]]
        total = total + (q0 * m0).sum(dim=(1, 2))
    return total


def score_states(
    states: torch.Tensor,
    unary: torch.Tensor,
    thetas: Sequence[torch.Tensor],
    groups: Sequence[GroupWiring],
    scopes: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Unnormalised log-probability of joint states (sentinels for hard zeros).

    Shape:
        ``states``: ``(B, V)`` int64; ``unary``: ``(B, V, K)``; ``scopes[g]``: ``(F_g, arity)``;
        output: ``(B,)``.
    """
    B = states.shape[0]
    total = unary.gather(2, states.unsqueeze(2)).squeeze(2).sum(dim=1)
    for g, th, sc in zip(groups, thetas, scopes, strict=True):
        flat = torch.zeros((B, g.num_factors), dtype=torch.long, device=states.device)
        for j, k in enumerate(g.cards):
            flat = flat * k + states[:, sc[:, j]]
        tab = th.reshape(th.shape[0], -1).expand(g.num_factors, -1)
        total = total + tab.unsqueeze(0).expand(B, -1, -1).gather(2, flat.unsqueeze(2)).sum(
            dim=(1, 2)
        )
    return total
