"""Pure tensor kernels shared by the inference layers (no graph objects here).

Hard zeros: log-potentials of ``-inf`` are replaced by the finite sentinel :data:`NEG` (``-1e30``)
inside the kernels. Every sum of sentinels stays finite in float32 and float64, products with
probabilities that underflow to exactly 0 stay 0, and gradients never meet ``inf - inf``: no NaN
is produced, in the forward or the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = [
    "NEG",
    "Semiring",
    "contract_expectation",
    "exclusive_sum",
    "factor_to_variable",
    "log_normalize",
    "semiring_reduce",
]

NEG = -1e30
"""Finite stand-in for log(0)."""

Semiring = Literal["sum", "max"]


def semiring_reduce(x: torch.Tensor, dims: Sequence[int], semiring: Semiring) -> torch.Tensor:
    """Reduce ``x`` over ``dims`` with log-sum-exp (``"sum"``) or max (``"max"``)."""
    if not dims:
        return x
    if semiring == "sum":
        return finite_logsumexp(x, tuple(dims))
    return torch.amax(x, dim=tuple(dims))


def finite_logsumexp(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``log sum exp`` over ``dims`` for finite inputs (sentinels, never ``inf``).

    Skips the infinity masking of :func:`torch.logsumexp` (three extra passes on CPU). The
    shift is detached: the result does not depend on it, and neither does the gradient.
    """
    m = x.detach().amax(dim=dims, keepdim=True)
    return (x - m).exp().sum(dim=dims).log() + m.squeeze(dims)


def log_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shift log-values so that they log-sum-exp to 0 along ``dim`` (sentinels stay finite).

    The maximum is subtracted first (exactly, for values of one magnitude), so huge potentials
    in float32 still give probabilities that sum to one.
    """
    y = x - x.amax(dim=dim, keepdim=True).detach()
    return (y - y.exp().sum(dim=dim, keepdim=True).log()).clamp_min(NEG)


def exclusive_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of all *other* entries along ``dim``, without subtraction (exact with sentinels).

    ``out[..., d, ...] = sum_{d' != d} x[..., d', ...]``, computed as an exclusive prefix sum plus
    an exclusive suffix sum, so that hard zeros (``NEG``) never cancel.

    Shape:
        ``x``: any; output: same as ``x``.
    """
    n = x.shape[dim]
    if n == 1:
        return torch.zeros_like(x)
    head = x.narrow(dim, 0, n - 1).cumsum(dim)
    tail = x.narrow(dim, 1, n - 1).flip(dim).cumsum(dim).flip(dim)
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.cat([zero, head], dim) + torch.cat([tail, zero], dim)


def _expand_slot(q: torch.Tensor, slot: int, arity: int) -> torch.Tensor:
    """``(B, F, k)`` -> ``(B, F, 1, .., k, .., 1)`` with ``k`` at table axis ``slot``."""
    shape = [q.shape[0], q.shape[1]] + [1] * arity
    shape[2 + slot] = q.shape[2]
    return q.reshape(shape)


def factor_to_variable(
    theta: torch.Tensor, cavities: Sequence[torch.Tensor], semiring: Semiring
) -> list[torch.Tensor]:
    """Unnormalised factor-to-variable log-messages for one group of factors.

    ``out[i][b, f, x_i] = reduce_{x_{-i}} (theta[f, x] + sum_{j != i} cavities[j][b, f, x_j])``,
    with ``reduce`` log-sum-exp or max. The sum over ``j != i`` is formed explicitly (no
    subtraction of the cavity of slot ``i``), so hard zeros propagate exactly.

    Shape:
        ``theta``: ``(F, *cards)`` or ``(1, *cards)``; ``cavities[j]``: ``(B, F, cards[j])``;
        ``out[i]``: ``(B, F, cards[i])``.
    """
    arity = len(cavities)
    tab = theta.unsqueeze(0)
    if arity == 1:
        return [tab.expand(cavities[0].shape)]
    expanded = [_expand_slot(q, j, arity) for j, q in enumerate(cavities)]
    out = []
    for i in range(arity):
        acc = tab
        for j in range(arity):
            if j != i:
                acc = acc + expanded[j]
        dims = [2 + j for j in range(arity) if j != i]
        out.append(semiring_reduce(acc, dims, semiring))
    return out


def factor_joint(theta: torch.Tensor, cavities: Sequence[torch.Tensor]) -> torch.Tensor:
    """Unnormalised log factor beliefs ``theta[f, x] + sum_j cavities[j][b, f, x_j]``.

    Shape:
        ``theta``: ``(F, *cards)`` or ``(1, *cards)``; ``cavities[j]``: ``(B, F, cards[j])``;
        output: ``(B, F, *cards)``.
    """
    arity = len(cavities)
    acc = theta.unsqueeze(0)
    for j, q in enumerate(cavities):
        acc = acc + _expand_slot(q, j, arity)
    return acc


def contract_expectation(theta: torch.Tensor, probs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Mean-field messages: expected log-potential of each slot under the other slots' marginals.

    ``out[i][b, f, x_i] = sum_{x_{-i}} theta[f, x] prod_{j != i} probs[j][b, f, x_j]``.

    Shape:
        ``theta``: ``(F, *cards)`` or ``(1, *cards)``; ``probs[j]``: ``(B, F, cards[j])``;
        ``out[i]``: ``(B, F, cards[i])``.
    """
    arity = len(probs)
    letters = "abcdefghijklmnopqrstuvwxy"[:arity]
    if arity > len(letters):
        raise ValueError(f"factor arity {arity} exceeds the supported maximum of 25")
    F, B = theta.shape[0], probs[0].shape[0]
    tab = theta.expand(probs[0].shape[1], *theta.shape[1:]) if F == 1 else theta
    out = []
    for i in range(arity):
        others = [j for j in range(arity) if j != i]
        if not others:
            out.append(tab.unsqueeze(0).expand(B, *tab.shape))
            continue
        spec = "f" + letters + "," + ",".join("zf" + letters[j] for j in others)
        spec += "->zf" + letters[i]
        out.append(torch.einsum(spec, tab, *(probs[j] for j in others)))
    return out
