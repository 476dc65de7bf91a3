"""The enumerated contraction: factor-to-variable messages of every group in a few flat ops.

Per iteration (:func:`enumerated_messages`): one gather of the other edges' cavities of every
configuration of every message row, a sum over them, the table entry added, one reduction over
the row's configurations (log-sum-exp or max: one code path) and a shift of every message to
a largest state of 0.
The cost does not grow with the number of factor groups or shapes, which is what small models
with many shapes (UAI's Pedigree, Promedus) need: there the per-group path's dozens of small ops
per group dominate. The index arrays come from
:func:`~pgmunfold.compile.enumerate.plan_enumeration`; the per-group
:func:`~pgmunfold.infer.bp.bp_factor_messages` is its naive twin in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pgmunfold.infer.ops import NEG, Semiring, exp_floor, floored_exp
from pgmunfold.infer.workspace import Workspace

__all__ = ["EnumeratedSweep", "enumerated_messages", "enumerated_tables"]


def enumerated_tables(
    tables: Sequence[torch.Tensor], counts: Sequence[int], configs: torch.Tensor
) -> torch.Tensor:
    """Every message row's table entries (once per forward and combination of untied copies).

    Shape:
        ``tables[g]``: ``(F_g, *cards_g)``, or ``(1, *cards_g)`` for a shared table (expanded to
        its ``counts[g] = F_g`` factors); ``configs``: ``(M, K * E)``; output: ``(M, K * E)``.
    """
    parts = [t.expand(n, *t.shape[1:]).reshape(-1) for t, n in zip(tables, counts, strict=True)]
    flat = torch.cat([*parts, tables[0].new_full((1,), NEG)])
    return flat.index_select(0, configs.reshape(-1)).view(configs.shape)


def enumerated_messages(
    cav: torch.Tensor, entries: torch.Tensor, others: torch.Tensor, semiring: Semiring
) -> torch.Tensor:
    """Factor-to-variable log-messages of every edge, each shifted to a largest state of 0.

    ``out[b, e, s] = reduce_m (entries[m, r] + sum_i cav[b, others[i, m, r]])`` with
    ``r = s * E + e``, minus its maximum over ``s``; ``reduce`` is log-sum-exp (``"sum"``) or
    max. The other edges' cavities are summed explicitly (never the factor's total minus the
    own edge), so hard zeros propagate exactly. Messages are not normalised to sum to one:
    every use of a log-message is invariant to a constant per edge (cavities are shifted,
    beliefs and the residual normalised), and the shift keeps them small, which is what their
    sums need in float32.

    Shape:
        ``cav``: ``(B, E, K)`` (shifted cavities, :func:`~pgmunfold.infer.bp.bp_cavities`);
        ``entries``: ``(M, K * E)`` (:func:`enumerated_tables`); ``others``:
        ``(A - 1, M, K * E)`` int64 into ``cav`` flattened plus one zero entry; output:
        ``(B, E, K)``.
    """
    B, E, K = cav.shape
    M, R = entries.shape
    z = entries.unsqueeze(0)
    if others.shape[0]:
        flat = F.pad(cav.reshape(B, E * K), (0, 1))  # one cavity of 0, for padding
        idx = others.reshape(-1)
        got = flat[0].index_select(0, idx).unsqueeze(0) if B == 1 else flat.index_select(1, idx)
        got = got.view(B, others.shape[0], M, R)
        z = z + (got[:, 0] if others.shape[0] == 1 else got.sum(dim=1))
    else:
        z = z.expand(B, M, R)
    if semiring == "sum":
        top = z.detach().amax(dim=1, keepdim=True)
        red = floored_exp(z - top).sum(dim=1).log() + top.squeeze(1)
    else:
        red = z.amax(dim=1)
    red = red.view(B, K, E)
    # the shift is not detached: its gradient projects out the constant direction, which no
    # later use of a message sees; detached, that component of the gradient was carried
    # through every iteration and cost float64 gradients 4 digits (tests/test_enumerated.py)
    out = (red - red.amax(dim=1, keepdim=True)).clamp_min(NEG)
    return out.transpose(1, 2).contiguous()


class EnumeratedSweep:
    """The flooding iterations of the enumerated contraction without autograd: the loop of a
    forward under ``torch.no_grad()``, state-major and flat, on buffers allocated once and
    reused by every iteration.

    The functional step (:func:`~pgmunfold.infer.bp.bp_cavities`, then
    :func:`enumerated_messages`) works in the ``(B, E, K)`` layout of the general path: each
    iteration pads the messages for the slot gather, pads the cavities for the configuration
    gather, and transposes the state-major result back (about 50 ops per iteration on
    Pedigree_11, most of them small). Here messages stay state-major (``s * E + e``) with a
    trailing zero, beliefs and the field likewise (``s * V + v``), so every gather reads its
    padding from that zero and the new messages are written straight into the other of two
    message buffers: about 25 ops per iteration. Cavities are formed by subtraction from the
    belief, or, with ``exact`` (hard zeros, slot plans without buckets), as a prefix plus a
    suffix sum of the other incoming messages (two cumulative sums, no subtraction). The
    functional step is its twin in the tests, and the path under autograd.

    Args:
        wiring: the index arrays (:class:`~pgmunfold.compile.enumerate.SweepWiring`, as
            tensors on the field's device): ``bel_slots``, ``bucket_pos``, ``bucket_slots``,
            ``cav_var``, ``others``, ``exact`` (``None``: cavities by subtraction).
        msg: the initial messages ``(B, E, K)``.
        field: the variables' unary log-potentials ``(B, V, K)``.
        damping: log-domain damping (0: none).
        semiring: ``"sum"`` or ``"max"``.
        ws: the forward's (enabled) workspace.

    Shape:
        :attr:`messages`, :attr:`previous`: ``(B, E, K)``.
    """

    def __init__(
        self,
        wiring: tuple[
            torch.Tensor,
            Sequence[torch.Tensor],
            Sequence[torch.Tensor],
            torch.Tensor,
            torch.Tensor,
            Sequence[torch.Tensor] | None,
        ],
        msg: torch.Tensor,
        field: torch.Tensor,
        damping: float,
        semiring: Semiring,
        ws: Workspace,
    ) -> None:
        self.bel_slots, bucket_pos, bucket_slots, self.cav_var, others, exact = wiring
        self.exact = None if exact is None else tuple(exact)
        self.buckets = tuple(zip(bucket_pos, bucket_slots, strict=True))
        B, E, K = msg.shape
        V = field.shape[1]
        self.B, self.E, self.K = B, E, K
        self.damping, self.semiring = damping, semiring
        self.A1, self.M = others.shape[0], others.shape[1]
        self.others = others.reshape(-1)
        self.rows = () if B == 1 else (B,)  # one batch row: 1-d tensors
        self.dim = len(self.rows)
        KE, KV = K * E, K * V

        def flat(x: torch.Tensor, n: int) -> torch.Tensor:  # (B, n, K) -> (*rows, K n + 1)
            out = x.new_zeros(B, K * n + 1)
            out[:, : K * n].view(B, K, n).copy_(x.transpose(1, 2))
            return out[0] if B == 1 else out

        self.field = flat(field, V)
        # each state: the messages (K E + 1), then, for exact cavities, the field (K V + 1)
        states = [flat(msg, E) for _ in range(2)]
        if self.exact is not None:
            states = [torch.cat([x, self.field], dim=-1) for x in states]
        self._msgs = [x[..., : KE + 1] for x in states]
        self._full = states

        def scratch(name: str, n: int) -> torch.Tensor:
            buf = ws(name, (B, n), field)
            assert buf is not None, "EnumeratedSweep needs an enabled workspace"
            return buf[0] if B == 1 else buf

        if self.exact is None:
            self._inc = scratch("enum_inc", self.bel_slots.shape[0])
            self._bel = scratch("enum_bel", KV + 1)
        else:
            self._pre = scratch("enum_pre", self.exact[0].shape[0])
            self._suf = scratch("enum_suf", self.exact[1].shape[0])
            self._part = scratch("enum_part", KE + 1)
            self._width = KV + 1
        self._cav = scratch("enum_cav", KE + 1)
        self._got = scratch("enum_got", self.others.shape[0])
        self._z = scratch("enum_z", self.M * KE) if self.A1 > 1 else None
        self._red = scratch("enum_red", KE)
        self.t = 0

    def _states(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(*rows, K * n)`` part of a flat vector as ``(*rows, K, n)``."""
        n = (x.shape[-1] - 1) // self.K
        return x[..., : self.K * n].view(*self.rows, self.K, n)

    def _edges(self, x: torch.Tensor) -> torch.Tensor:
        """A flat message vector as ``(B, E, K)`` (a copy)."""
        return self._states(x).reshape(self.B, self.K, self.E).transpose(1, 2).contiguous()

    @property
    def messages(self) -> torch.Tensor:
        """The messages of the last iteration."""
        return self._edges(self._msgs[self.t % 2])

    @property
    def previous(self) -> torch.Tensor:
        """The messages of the iteration before the last (the initial ones before any)."""
        return self._edges(self._msgs[(self.t + 1) % 2 if self.t else 0])

    def step(self, entries: torch.Tensor) -> None:
        """One iteration with the table entries of every message row (:func:`enumerated_tables`,
        ``(M, K * E)``)."""
        d, rows = self.dim, self.rows
        msg, out = self._msgs[self.t % 2], self._msgs[1 - self.t % 2]
        if self.exact is None:
            # beliefs (trailing zero: field's plus padding slots'), then the cavities by
            # subtraction (trailing zero: 0 - 0)
            torch.index_select(msg, d, self.bel_slots, out=self._inc)
            bel = torch.sum(self._inc.view(*rows, -1, self._bel.shape[-1]), dim=d, out=self._bel)
            bel.add_(self.field)
            for pos, sl in self.buckets:
                part = torch.index_select(msg, d, sl).view(*rows, -1, pos.shape[0]).sum(dim=d)
                bel.index_add_(d, pos, part)
            cav = torch.index_select(bel, d, self.cav_var, out=self._cav).sub_(msg)
        else:  # exact: the prefix plus the suffix sum around each edge's own slot
            state = self._full[self.t % 2]
            pre_slots, suf_slots, lo, hi = self.exact
            for buf, sl in ((self._pre, pre_slots), (self._suf, suf_slots)):
                torch.index_select(state, d, sl, out=buf)
                buf.view(*rows, -1, self._width).cumsum_(dim=d)
            cav = torch.index_select(self._pre, d, lo, out=self._cav)
            cav.add_(torch.index_select(self._suf, d, hi, out=self._part))
        # each cavity shifted to a largest state of 0
        c3 = self._states(cav)
        c3.sub_(c3.amax(dim=d, keepdim=True).clamp_min_(NEG / 2))
        # every configuration of every row: the other edges' cavities plus the table entry
        got = torch.index_select(cav, d, self.others, out=self._got)
        if self._z is not None:
            z = torch.sum(got.view(*rows, self.A1, -1), dim=d, out=self._z)
        else:
            z = got
        z3 = z.add_(entries.view(-1)).view(*rows, self.M, -1)
        if self.semiring == "sum":
            top = z3.amax(dim=d, keepdim=True)
            z3.sub_(top).clamp_min_(exp_floor(z.dtype)).exp_()  # floored_exp, in place
            red = torch.sum(z3, dim=d, out=self._red).log_().add_(top.squeeze(d))
        else:
            red = torch.amax(z3, dim=d, out=self._red)
        r3 = red.view(*rows, self.K, self.E)
        new = self._states(out)
        torch.sub(r3, r3.amax(dim=d, keepdim=True), out=new).clamp_min_(NEG)
        if self.damping != 0.0:
            torch.lerp(new, self._states(msg), self.damping, out=new)
        self.t += 1
