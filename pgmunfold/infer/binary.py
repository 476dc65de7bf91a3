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

from typing import NamedTuple

import torch
import torch.nn.functional as F

from pgmunfold.infer.ops import NEG, Semiring

__all__ = [
    "ExpForm",
    "binary_messages",
    "exp_form_coefficients",
    "exp_form_limit",
    "interaction",
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
    the cavity log-odds of the other slot: ``off = [t10 - t00, t01 - t00]``, ``a = [t11 - t10,
    t11 - t01]``, ``b = [t01 - t00, t10 - t00]`` (each difference formed directly, exact up to
    one rounding however large the entries). Four passes over ``(F, 2)`` outputs, each written
    contiguous.

    Shape:
        ``theta``: ``(F, 2, 2)``; outputs ``off, a, b``: ``(F, 2)`` contiguous.
    """
    v = theta.reshape(theta.shape[0], 4)  # columns t00, t01, t10, t11
    b = v[:, 1:3] - v[:, :1]
    a = v[:, 3:] - v[:, 1:3].flip(1)
    return b.flip(1), a, b


class ExpForm(NamedTuple):
    """Sum-product constants of :func:`exp_form_coefficients` (see there).

    Shape:
        every field ``(E,)``, one entry per edge, or, as made by
        :func:`exp_form_coefficients`, ``off`` and ``shift`` ``(F, 2)`` (per slot) and ``kappa``
        and ``sign`` ``(F, 1)`` (the same for both slots of a factor).
    """

    off: torch.Tensor
    shift: torch.Tensor
    kappa: torch.Tensor
    sign: torch.Tensor


def exp_form_limit(dtype: torch.dtype) -> float:
    """Largest ``|a - b|`` for which ``expm1(|a - b|)`` is finite with margin in ``dtype``."""
    return 700.0 if dtype == torch.float64 else 80.0


def interaction(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``d = a - b = t11 - t10 - t01 + t00``, the same for both slots of a factor (from slot
    0's columns of :func:`pairwise_coefficients`).

    Shape:
        ``a``, ``b``: ``(F, 2)``; output: ``(F, 1)``.
    """
    return a[:, :1] - b[:, :1]


def exp_form_coefficients(
    off: torch.Tensor, a: torch.Tensor, b: torch.Tensor, d: torch.Tensor | None = None
) -> ExpForm:
    """Rewrite ``softplus(c + a) - softplus(c + b)`` as ``sign log1p(kappa sigmoid(c + shift))``.

    With ``d = a - b >= 0``: ``1 + expm1(d) sigmoid(c + b) = (1 + e^(c+a)) / (1 + e^(c+b))``; for
    ``d < 0`` swap ``a`` and ``b`` and negate. Five elementwise passes per iteration instead of
    about a dozen, exact for every ``c`` (sigmoid saturates cleanly at the +-1e30 clamps) as
    long as ``|d| < exp_form_limit`` (checked by the caller). ``kappa`` is formed branch by
    branch so that its gradient at ``d = 0`` is the true one (not the zero subgradient of
    ``|d|``). ``d`` is one number per factor (:func:`interaction`), so ``kappa`` and ``sign``
    are computed per factor, not per edge.

    Shape:
        ``off``, ``a``, ``b``: ``(F, 2)``; ``d``: ``(F, 1)`` (computed when ``None``); output:
        see :class:`ExpForm`.
    """
    d = interaction(a, b) if d is None else d
    pos = d >= 0
    kappa = torch.where(pos, torch.expm1(d), torch.expm1(-d))
    shift = torch.minimum(a, b)  # b where d >= 0, else a (at a tie, kappa = 0)
    sign = torch.where(pos, 1.0, -1.0).to(d.dtype)
    return ExpForm(off, shift, kappa, sign)


def binary_messages(
    c: torch.Tensor,
    coeffs: tuple[torch.Tensor, ...],
    semiring: Semiring,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Factor-to-variable log-odds messages of every pairwise edge.

    Args:
        c: per edge, the cavity log-odds of the *other* variable of its factor.
        coeffs: per edge, :func:`pairwise_coefficients` ``(off, a, b)`` or their
            :class:`ExpForm` (sum-product), concatenated over groups. An edge whose
            coefficients are all zero gets the message 0 exactly (the padding edge).
        out: where to write the result (no-grad only; ``c`` is then overwritten); ``None``:
            allocate.

    Shape:
        ``c``, ``out``: ``(B, E)``; every coefficient ``(E,)``; output: ``(B, E)``.
    """
    if isinstance(coeffs, ExpForm):  # sum-product, |a - b| checked small enough
        if out is not None:
            f = c.add_(coeffs.shift).sigmoid_().mul_(coeffs.kappa).log1p_()
        else:
            f = torch.log1p(coeffs.kappa * torch.sigmoid(c + coeffs.shift))
        return torch.addcmul(coeffs.off, coeffs.sign, f, out=out)
    off, a, b = coeffs
    return torch.add(off, stable_g_diff(c, a, b, semiring), out=out)


def log_odds_to_log_messages(l: torch.Tensor) -> torch.Tensor:
    """Normalised 2-state log-messages ``[log sigmoid(-l), log sigmoid(l)]``.

    Shape:
        ``l``: ``(B, E)``; output: ``(B, E, 2)``.
    """
    return torch.stack([F.logsigmoid(-l), F.logsigmoid(l)], dim=2).clamp_min(NEG)
