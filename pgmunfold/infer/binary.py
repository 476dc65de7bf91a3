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
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pgmunfold.infer.ops import NEG, Semiring, softplus
from pgmunfold.infer.workspace import Workspace

__all__ = [
    "BinarySweep",
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
    g = softplus if semiring == "sum" else F.relu
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
    long as ``|d| < exp_form_limit`` (checked by the caller). ``sign = copysign(1, d)`` and
    ``kappa = expm1(sign d)``, so that the gradient at ``d = 0`` is the true one (not the zero
    subgradient of ``|d|``). ``d`` is one number per factor (:func:`interaction`), so
    ``kappa`` and ``sign`` are computed per factor, not per edge.

    Shape:
        ``off``, ``a``, ``b``: ``(F, 2)``; ``d``: ``(F, 1)`` (computed when ``None``); output:
        see :class:`ExpForm`.
    """
    d = interaction(a, b) if d is None else d
    # copysign(1, d), constant (from the detached d); kappa = expm1(|d|) whose gradient is
    # sign * exp(|d|): the message's gradient in d, through sign * log1p(kappa ...), carries
    # sign * sign = 1 on both branches, at d = +-0 included (|d|'s subgradient 0 would lose it)
    sign = torch.ones_like(d).copysign_(d.detach())
    kappa = torch.expm1(d * sign)
    shift = torch.minimum(a, b)  # b where d >= 0, else a (at a tie, kappa = 0)
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


class BinarySweep:
    """The flooding iterations of the binary path without autograd: the loop of a forward
    under ``torch.no_grad()``, on buffers allocated once and reused by every iteration.

    Each of the two state buffers (alternating by iteration) holds ``[belief | messages]``:
    the ``V`` variables' log-odds beliefs, then the ``E' + 1`` edge log-odds messages. The
    cavity of an edge (the belief of the other variable of its factor minus that variable's
    message along the factor) is then one gather from the state and one subtraction, and the
    belief, for one batch row, one ``addmv``: about half the per-iteration time of the
    functional step on small graphs, where an iteration is a dozen ops of a few microseconds
    each (``N = 32``, ``K = 2`` grid: 86-98 to 38-46 us on one CPU thread, 2026-11-27).
    One batch row runs on 1-d tensors. The functional twin, used under autograd, is
    ``UnfoldedNetwork._binary_step``; tests check both against the general path.

    Args:
        state_slots: ``(D' * V,)`` per slot row ``d * V + v``, the position in the state of
            the ``d``-th message to variable ``v`` (``V`` + its edge, or the padding edge).
        cavity_index: ``(2 (E' + 1),)`` the state positions of each edge's partner variable's
            belief, then of its partner edge's message.
        field: ``(B, V)`` the variables' log-odds field (unaries, evidence).
        damping: the damping as a 0-d tensor; ``damped``: whether it is not 0.
        semiring: ``"sum"`` or ``"max"``.
        ws: the forward's (enabled) workspace: the scratch arrays ``"bin_incoming"``
            (``(B, D' * V)``) and ``"bin_gathered"`` (``(B, 2 (E' + 1))``) are its buffers,
            free for other uses once the iterations are done, as are the two states
            ``"bin_state0"`` and ``"bin_state1"`` (``(B, V + E' + 1)``; the messages are
            views of them).
        buckets: per bucket of high-degree variables (a
            :class:`~pgmunfold.compile.wiring.SlotPlan`'s), its variables ``(V_j,)`` and the
            state positions of their further messages ``(W_j * V_j,)`` (row ``d * V_j + i``),
            added to the beliefs after the slot rows.

    Shape:
        :attr:`messages` and :attr:`previous`: ``(B, E' + 1)`` views of the state buffers;
        :meth:`belief` returns ``(B, V)``.
    """

    def __init__(
        self,
        state_slots: torch.Tensor,
        cavity_index: torch.Tensor,
        field: torch.Tensor,
        damping: torch.Tensor,
        damped: bool,
        semiring: Semiring,
        ws: Workspace,
        buckets: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    ) -> None:
        B, V = field.shape
        self.buckets = tuple(buckets)
        E1 = cavity_index.shape[0] // 2
        D = state_slots.shape[0] // V
        self.rows = () if B == 1 else (B,)  # one batch row: 1-d tensors
        self.dim = len(self.rows)  # the axis of items
        self.state_slots, self.cavity_index = state_slots, cavity_index
        self.damping, self.damped, self.semiring = damping, damped, semiring
        self.B = B
        self.set_field(field)
        states = []
        for i in range(2):  # messages start at 0 (the beliefs are written before a read)
            buf = ws(f"bin_state{i}", (*self.rows, V + E1), field)
            assert buf is not None, "BinarySweep needs an enabled workspace"
            states.append(buf.zero_())
        self._beliefs = [s[..., :V] for s in states]
        self._messages = [s[..., V:] for s in states]
        self._states = states

        def scratch(name: str, n: int) -> torch.Tensor:
            buf = ws(name, (B, n), field)
            assert buf is not None, "BinarySweep needs an enabled workspace"
            return buf[0] if B == 1 else buf

        self._incoming = scratch("bin_incoming", D * V)
        # (V, D) column-major view of the incoming messages: belief = field + incoming @ 1
        self._incoming_t = self._incoming.view(D, V).t() if B == 1 else None
        self._incoming_3d = self._incoming.view(B, D, V)
        self._ones = field.new_ones(D)
        gathered = scratch("bin_gathered", 2 * E1)
        self._gathered = gathered
        self._partner_belief, self._partner_message = gathered[..., :E1], gathered[..., E1:]
        self.t = 0

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0) if self.B == 1 else x

    @property
    def messages(self) -> torch.Tensor:
        """The messages of the last iteration (zero before the first)."""
        return self._rows(self._messages[self.t % 2])

    @property
    def previous(self) -> torch.Tensor:
        """The messages of the iteration before the last."""
        return self._rows(self._messages[(self.t + 1) % 2 if self.t else 0])

    def set_field(self, field: torch.Tensor) -> None:
        """A new field for the next iterations (untied unary factors). Shape: ``(B, V)``."""
        self.field = field[0] if self.B == 1 else field

    def _belief_into(self, s: int) -> torch.Tensor:
        """The beliefs of state ``s``'s messages, written into its belief part."""
        torch.index_select(self._states[s], self.dim, self.state_slots, out=self._incoming)
        bel = self._beliefs[s]
        if self._incoming_t is not None:
            torch.addmv(self.field, self._incoming_t, self._ones, out=bel)
        else:
            torch.sum(self._incoming_3d, dim=1, out=bel).add_(self.field)
        for v, sl in self.buckets:
            part = torch.index_select(self._states[s], self.dim, sl)
            bel.index_add_(self.dim, v, part.view(*self.rows, -1, v.shape[0]).sum(dim=self.dim))
        return bel

    def step(self, coeffs: tuple[torch.Tensor, ...]) -> None:
        """One iteration with the per-edge constants ``coeffs`` (see :func:`binary_messages`)."""
        s = self.t % 2
        self._belief_into(s)
        torch.index_select(self._states[s], self.dim, self.cavity_index, out=self._gathered)
        # in place: a third array (write-allocate) measured ~1.5x slower at N=300, B=4
        c = self._partner_belief.sub_(self._partner_message)
        out = self._messages[1 - s]
        binary_messages(c, coeffs, self.semiring, out=out)
        if self.damped:
            torch.lerp(out, self._messages[s], self.damping, out=out)
        self.t += 1

    def belief(self) -> torch.Tensor:
        """The log-odds beliefs of the last messages (a view of the state buffer)."""
        return self._rows(self._belief_into(self.t % 2))
