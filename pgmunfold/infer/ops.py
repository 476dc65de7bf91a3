"""Pure tensor kernels shared by the inference layers (no graph objects here).

Hard zeros: log-potentials of ``-inf`` are replaced by the finite sentinel :data:`NEG` (``-1e30``)
inside the kernels. Every sum of sentinels stays finite in float32 and float64, products with
probabilities that underflow to exactly 0 stay 0, and gradients never meet ``inf - inf``: no NaN
is produced, in the forward or the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

__all__ = [
    "NEG",
    "DensePairwise",
    "Semiring",
    "contract_expectation",
    "dense_pairwise",
    "dense_pairwise_messages",
    "dense_range_limit",
    "exclusive_sum",
    "exp_floor",
    "factor_to_variable",
    "floored_exp",
    "gather_rows",
    "log_normalize",
    "semiring_reduce",
    "softplus",
]

NEG = -1e30
"""Finite stand-in for log(0)."""

Semiring = Literal["sum", "max"]


def floored_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` of a max-shifted log-value (``x <= 0``) that is summed with the maximum's
    term 1: ``x`` is first raised to -87 (float32; -707 in float64), the smallest power of
    ``e`` that is a normal number.

    On CPU, ``exp`` of an argument whose result underflows (a sentinel, a padded state, a
    log-potential of -200) runs 4-35x slower than of a moderate one (measured here, 24k
    float32 entries: 27 us for ``N(0, 1)``, 350 us at ``-1e30``, 1000 us at ``-100``). The
    floor costs one pass and changes nothing the sum can see: a raised term is below
    ``exp(-87) = 1.6e-38`` of the maximum's term (float64: ``1e-307``), far under the dtype's
    resolution; its gradient, already below that, becomes 0.

    Shape:
        any; output: the same.
    """
    return x.clamp_min(exp_floor(x.dtype)).exp()


def exp_floor(dtype: torch.dtype) -> float:
    """The floor of :func:`floored_exp`: -707 for float64, else -87."""
    return -707.0 if dtype == torch.float64 else -87.0


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` to the resolution of ``x``'s dtype. ``torch``'s softplus returns
    ``x`` itself above ``threshold=20``, dropping ``log1p(exp(-x))``, up to 2e-9: below float32's
    resolution but not float64's. The threshold here is 37 for float64 (``exp(-37)`` < 1e-16).

    Shape:
        any; output: the same.
    """
    return torch.nn.functional.softplus(x, threshold=37.0 if x.dtype == torch.float64 else 20.0)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[:, index]``: whole rows of ``K`` states, gathered as a 2-d ``index_select`` along dim
    0 of ``x`` flattened to ``(B * N, K)``. On CPU this is 1.2-3x faster forward, and its
    backward (``index_add_``) 1.4-6x faster, than a 3-d ``index_select`` along dim 1.

    Shape:
        ``x``: ``(B, N, K)``; ``index``: ``(M,)`` int64; output: ``(B, M, K)``.
    """
    B, N, K = x.shape
    if B == 1:
        return x[0].index_select(0, index).unsqueeze(0)
    offsets = torch.arange(0, B * N, N, device=index.device).unsqueeze(1)
    flat = (offsets + index).reshape(-1)
    return x.reshape(B * N, K).index_select(0, flat).view(B, -1, K)


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
    return floored_exp(x - m).sum(dim=dims).log() + m.squeeze(dims)


def log_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shift log-values so that they log-sum-exp to 0 along ``dim`` (sentinels stay finite).

    The maximum is subtracted first (exactly, for values of one magnitude), so huge potentials
    in float32 still give probabilities that sum to one.
    """
    y = x - x.amax(dim=dim, keepdim=True).detach()
    return (y - floored_exp(y).sum(dim=dim, keepdim=True).log()).clamp_min(NEG)


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


class DensePairwise(NamedTuple):
    """Exp-domain form of a group of pairwise log-potential tables (sum-product only).

    Attributes:
        e0: ``exp(theta - r0)``, rows (slot-0 state) scaled to a maximum of 1.
        r0: the row maxima ``max_{x1} theta[f, x0, x1]`` (detached).
        e1: ``exp(theta^T - r1)``, the same for the transposed tables.
        r1: ``max_{x0} theta[f, x0, x1]`` (detached).

    Shape:
        ``e0``: ``(F, k0, k1)``; ``r0``: ``(F, k0)``; ``e1``: ``(F, k1, k0)``; ``r1``: ``(F, k1)``
        (``F = 1`` for a shared table).
    """

    e0: torch.Tensor
    r0: torch.Tensor
    e1: torch.Tensor
    r1: torch.Tensor


def dense_range_limit(dtype: torch.dtype) -> float:
    """Largest log-range of a table for which :func:`dense_pairwise_messages` is exact.

    Each row sum is at least ``exp(-range)`` (the row's entry at the cavity's arg-max), so it
    never underflows, and the terms lost to underflow are below ``1e-12`` of it.
    """
    return 600.0 if dtype == torch.float64 else 60.0


def dense_pairwise(theta: torch.Tensor) -> DensePairwise:
    """Precompute the exp-domain tables (once per forward, not per iteration).

    Shape:
        ``theta``: ``(F, k0, k1)``.
    """
    r0 = theta.detach().amax(dim=2)
    tt = theta.transpose(1, 2)
    r1 = tt.detach().amax(dim=2)
    return DensePairwise((theta - r0.unsqueeze(2)).exp(), r0, (tt - r1.unsqueeze(2)).exp(), r1)


def _matvec(e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``out[b, f, a] = sum_c e[f, a, c] p[b, f, c]`` (a plain matmul for a shared table)."""
    if e.shape[0] == 1:
        return p @ e[0].transpose(0, 1)
    return torch.einsum("fac,bfc->bfa", e, p)


def dense_pairwise_messages(
    d: DensePairwise, q0: torch.Tensor, q1: torch.Tensor
) -> list[torch.Tensor]:
    """Sum-product messages of pairwise factors as one batched matrix-vector product each.

    ``m0[b, f, x0] = log sum_{x1} exp(theta[f, x0, x1] + q1[b, f, x1])``, computed as
    ``r0 + c1 + log(e0 @ exp(q1 - c1))`` with ``c1 = max q1``: one pass over the ``K x K``
    tables instead of several; equal to :func:`factor_to_variable` whenever the tables' log-range
    is below :func:`dense_range_limit` (the compiler checks it).

    Shape:
        ``q0``: ``(B, F, k0)``; ``q1``: ``(B, F, k1)``; output: ``[(B, F, k0), (B, F, k1)]``.
    """
    c1 = q1.detach().amax(dim=2, keepdim=True)
    c0 = q0.detach().amax(dim=2, keepdim=True)
    m0 = _matvec(d.e0, floored_exp(q1 - c1)).log() + d.r0.unsqueeze(0) + c1
    m1 = _matvec(d.e1, floored_exp(q0 - c0)).log() + d.r1.unsqueeze(0) + c0
    return [m0, m1]
