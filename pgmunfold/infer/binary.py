"""Fast path: loopy BP on graphs of binary variables with unary and pairwise factors only,
with one scalar log-odds message per edge instead of a ``K``-vector.

For a pairwise table ``theta[x0, x1]`` and the cavity log-odds ``c`` of the variable in slot 1,
the message to slot 0 has log-odds

    ``(theta[1,0] - theta[0,0]) + g(c + theta[1,1] - theta[1,0]) - g(c + theta[0,1] - theta[0,0])``

with ``g = softplus`` (sum-product) or ``g = relu`` (max-product): one code path, the semiring a
parameter. The difference ``g(a) - g(b)`` is evaluated in a form that stays exact when ``c`` is a
clamp of +-1e30 (evidence), using ``g(x) = x + g(-x)``. Tested against the general ``K``-state
path (``tests/test_binary.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pgmunfold.compile.wiring import GroupWiring
from pgmunfold.infer.ops import NEG, Semiring

__all__ = [
    "binary_factor_messages",
    "log_odds_to_log_messages",
    "pairwise_coefficients",
    "stable_g_diff",
]


def stable_g_diff(
    c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, semiring: Semiring
) -> torch.Tensor:
    """``g(c + a) - g(c + b)`` for ``g`` softplus (sum) or relu (max), stable for huge ``|c|``.

    Uses ``g(x) = x + g(-x)`` on the side where ``c >= 0``, so that a clamp ``c = +-1e30`` never
    cancels against itself.

    Shape:
        broadcastable tensors; output: their broadcast shape.
    """
    g = F.softplus if semiring == "sum" else F.relu
    pos = (c >= 0).to(c.dtype)
    s = 1.0 - 2.0 * pos  # -1 where c >= 0, +1 elsewhere
    return pos * (a - b) + g(s * (c + a)) - g(s * (c + b))


def pairwise_coefficients(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-factor constants of the log-odds message update of binary pairwise tables.

    The message to slot ``j`` is ``off[:, j] + g(c + a[:, j]) - g(c + b[:, j])`` where ``c`` is
    the cavity log-odds of the other slot.

    Shape:
        ``theta``: ``(F, 2, 2)``; outputs ``off, a, b``: ``(F, 2)`` contiguous.
    """
    t00, t01, t10, t11 = theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1]
    off = torch.stack([t10 - t00, t01 - t00], dim=1)
    a = torch.stack([t11 - t10, t11 - t01], dim=1)
    b = torch.stack([t01 - t00, t10 - t00], dim=1)
    return off, a, b


def binary_factor_messages(
    belief: torch.Tensor,
    lo: torch.Tensor,
    coeffs: Sequence[tuple[torch.Tensor, ...]],
    groups: Sequence[GroupWiring],
    partner_var: torch.Tensor,
    partner_edge: torch.Tensor,
    semiring: Semiring,
) -> torch.Tensor:
    """Factor-to-variable log-odds messages of every edge.

    Args:
        belief: log-odds beliefs of the variables.
        lo: current messages (log-odds) in edge order.
        coeffs: per group, ``(unary_log_odds,)`` for arity 1 (shape ``(F or 1,)``) or
            :func:`pairwise_coefficients` for arity 2.
        partner_var, partner_edge: per edge, the variable and the edge of the *other* slot of
            its factor (pairwise groups; anything for unary ones).

    Shape:
        ``belief``: ``(B, V)``; ``lo``: ``(B, E)``; output: ``(B, E)``.
    """
    B, E = lo.shape
    out = lo.new_empty(B, E)
    for g, co in zip(groups, coeffs, strict=True):
        s, e = g.edge_start, g.edge_stop
        if g.arity == 1:
            out[:, s:e] = co[0].expand(B, g.num_factors)
            continue
        off, a, b = co
        c = belief.index_select(1, partner_var[s:e]) - lo.index_select(1, partner_edge[s:e])
        c = c.view(B, g.num_factors, 2)
        out[:, s:e] = (off + stable_g_diff(c, a, b, semiring)).view(B, -1)
    return out


def log_odds_to_log_messages(l: torch.Tensor) -> torch.Tensor:
    """Normalised 2-state log-messages ``[log sigmoid(-l), log sigmoid(l)]``.

    Shape:
        ``l``: ``(B, E)``; output: ``(B, E, 2)``.
    """
    return torch.stack([F.logsigmoid(-l), F.logsigmoid(l)], dim=2).clamp_min(NEG)
