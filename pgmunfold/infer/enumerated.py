"""The enumerated contraction: factor-to-variable messages of every group in a few flat ops.

Per iteration (:func:`enumerated_messages`): one gather of the other edges' cavities of every
configuration of every message row, a sum over them, the table entry added, one reduction over
the row's configurations (log-sum-exp or max: one code path) and a shift of every message to
a largest state of 0.
The cost does not grow with the number of factor groups or shapes, which is what small models
with many shapes (UAI's Pedigree, Promedus) need: there the per-group path's dozens of small ops
per group dominate. The index arrays come from
:func:`~pgmunfold.compile.enumerate.plan_enumeration`; the per-group
:func:`~pgmunfold.infer.bp.bp_factor_messages` is its naive twin in the tests. Mean-field's
expected log-potentials (:func:`enumerated_expectations`) use the same plan, with a product of
the other variables' marginals and a sum over the configurations; the per-group einsum
(:func:`~pgmunfold.infer.ops.contract_expectation`) is their twin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pgmunfold.infer.ops import NEG, Semiring, exp_floor, floored_exp, log_normalize
from pgmunfold.infer.workspace import Workspace

__all__ = [
    "EnumeratedSweep",
    "FlatStep",
    "SweepLayout",
    "SweepWiringTensors",
    "bucketed_expectations",
    "bucketed_messages",
    "enumerated_expectations",
    "enumerated_messages",
    "enumerated_tables",
]


def enumerated_tables(
    tables: Sequence[torch.Tensor],
    counts: Sequence[int],
    configs: torch.Tensor,
    pad: float = NEG,
) -> torch.Tensor:
    """Every message row's table entries (once per forward and combination of untied copies);
    padding configurations read ``pad`` (a hard zero for BP, 0 for mean-field).

    Shape:
        ``tables[g]``: ``(F_g, *cards_g)``, or ``(1, *cards_g)`` for a shared table (expanded to
        its ``counts[g] = F_g`` factors); ``configs``: ``(M, K * E)``; output: ``(M, K * E)``.
    """
    parts = [t.expand(n, *t.shape[1:]).reshape(-1) for t, n in zip(tables, counts, strict=True)]
    flat = torch.cat([*parts, tables[0].new_full((1,), pad)])
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
    flat = F.pad(cav.reshape(B, E * K), (0, 1))  # one cavity of 0, for padding
    return _shifted(_row_reduce(flat, entries, others, semiring), K, E)


def bucketed_messages(
    cav: torch.Tensor,
    entries: Sequence[torch.Tensor],
    others: Sequence[torch.Tensor],
    row_of: torch.Tensor | None,
    semiring: Semiring,
) -> torch.Tensor:
    """:func:`enumerated_messages` over the live rows only, bucket by bucket
    (:func:`~pgmunfold.compile.enumerate.plan_buckets`): each bucket gathers and reduces
    its rows at its own extent, and the rows whose state does not exist at their edge are hard
    zeros without being computed. On Pedigree_11 that gathers 32722 cavities per iteration and
    batch row instead of 72144, and reduces 11906 configurations instead of 24048; under
    autograd the backward's scatter shrinks alike. :func:`enumerated_messages` (one bucket of
    every row) is its twin in the tests.

    Shape:
        ``cav``: ``(B, E, K)``; ``entries[b]``: ``(M_b, R_b)``; ``others[b]``:
        ``(a_b, M_b, R_b)`` int64 into ``cav`` flattened plus one zero entry; ``row_of``:
        ``(K * E,)`` int64 into the buckets' rows concatenated plus one hard zero, or ``None``
        when the buckets' rows, concatenated, are every row in order; output: ``(B, E, K)``.
    """
    B, E, K = cav.shape
    flat = F.pad(cav.reshape(B, E * K), (0, 1))  # one cavity of 0, for padding
    reds = [_row_reduce(flat, z, o, semiring) for z, o in zip(entries, others, strict=True)]
    if row_of is None:
        red = reds[0] if len(reds) == 1 else torch.cat(reds, dim=1)
    else:
        red = torch.cat([*reds, cav.new_full((B, 1), NEG)], dim=1).index_select(1, row_of)
    return _shifted(red, K, E)


def _row_reduce(
    flat: torch.Tensor, entries: torch.Tensor, others: torch.Tensor, semiring: Semiring
) -> torch.Tensor:
    """``reduce_m (entries[m, r] + sum_i flat[b, others[i, m, r]])``: log-sum-exp (``"sum"``)
    or max over each row's configurations.

    Shape:
        ``flat``: ``(B, N + 1)`` (the cavities flattened, then 0); ``entries``: ``(M, R)``;
        ``others``: ``(a, M, R)`` int64 into ``flat``; output: ``(B, R)``.
    """
    B = flat.shape[0]
    a, M, R = others.shape
    if not a:  # rows without other edges: the entries alone
        return _reduce_configs(entries, 0, semiring).expand(B, R)
    idx = others.reshape(-1)
    got = flat[0].index_select(0, idx).unsqueeze(0) if B == 1 else flat.index_select(1, idx)
    got = got.view(B, a, M, R)
    z = entries.unsqueeze(0) + (got[:, 0] if a == 1 else got.sum(dim=1))
    return _reduce_configs(z, 1, semiring)


def _reduce_configs(z: torch.Tensor, dim: int, semiring: Semiring) -> torch.Tensor:
    """Log-sum-exp (``"sum"``, of terms floored below the maximum: :func:`floored_exp`) or
    max of ``z`` over ``dim``, the configurations. Shape: ``dim`` removed."""
    if semiring == "sum":
        top = z.detach().amax(dim=dim, keepdim=True)
        return floored_exp(z - top).sum(dim=dim).log() + top.squeeze(dim)
    return z.amax(dim=dim)


def _shifted(red: torch.Tensor, K: int, E: int) -> torch.Tensor:
    """The reduced rows ``(B, K * E)`` (state-major) as messages ``(B, E, K)``, each shifted to
    a largest state of 0 (not below the sentinel)."""
    red = red.view(-1, K, E)
    # the shift is not detached: its gradient projects out the constant direction, which no
    # later use of a message sees; detached, that component of the gradient was carried
    # through every iteration and cost float64 gradients 4 digits (tests/test_enumerated.py)
    out = (red - red.amax(dim=1, keepdim=True)).clamp_min(NEG)
    return out.transpose(1, 2).contiguous()


def enumerated_expectations(
    q: torch.Tensor,
    entries: torch.Tensor,
    others: torch.Tensor,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """Mean-field messages of every edge: the expected log-potential of each state of the
    edge's variable under the marginals of its factor's other variables.

    ``out[b, e, s] = sum_m entries[m, r] * prod_i q[b, others[i, m, r]]`` (``q`` flattened
    ``v * K + x``) with ``r = s * E + e``: the plan of :func:`enumerated_messages`, its other
    edges addressed by their variables' marginals, with a product where BP sums cavities and
    a sum over the row's configurations where BP reduces. Padding configurations must read a
    table entry of 0 (not a hard zero), so that they add nothing; hard zeros of the tables are
    the sentinel ``NEG``, which weighs a configuration down by ``NEG`` times its probability,
    as the per-merge contraction (:func:`~pgmunfold.infer.meanfield.mf_field`) does. With an
    enabled workspace ``ws`` (no autograd) the gathered marginals, their products and the sum
    are written into reused buffers (a fresh ``(B, A - 1, M, K E)`` tensor per iteration costs
    page faults on CPU).

    Shape:
        ``q``: ``(B, V, K)``; ``entries``: ``(M, K * E)``; ``others``: ``(A - 1, M, K * E)``
        int64 into ``q`` flattened plus one entry of 1 (``V * K``); output: ``(B, E, K)``.
    """
    B, V, K = q.shape
    flat = F.pad(q.reshape(B, V * K), (0, 1), value=1.0)  # one marginal of 1, for padding
    z = _row_expectations(flat, entries, others, ws, "enum_mf")
    return z.view(B, K, -1).transpose(1, 2).contiguous()


def bucketed_expectations(
    q: torch.Tensor,
    entries: Sequence[torch.Tensor],
    others: Sequence[torch.Tensor],
    row_of: torch.Tensor | None,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """:func:`enumerated_expectations` over the live rows only, bucket by bucket
    (:func:`~pgmunfold.compile.enumerate.plan_buckets`, as :func:`bucketed_messages`): the
    rows whose state does not exist at their edge read 0 without being computed.
    :func:`enumerated_expectations` over every row of the plan is its twin in the tests.

    Shape:
        ``q``: ``(B, V, K)``; ``entries[b]``: ``(M_b, R_b)``; ``others[b]``: ``(a_b, M_b, R_b)``
        int64 into ``q`` flattened plus one entry of 1; ``row_of``: ``(K * E,)`` int64 into
        the buckets' rows concatenated plus one 0, or ``None`` when the buckets' rows,
        concatenated, are every row in order; output: ``(B, E, K)``.
    """
    B, V, K = q.shape
    flat = F.pad(q.reshape(B, V * K), (0, 1), value=1.0)  # one marginal of 1, for padding
    zs = [
        _row_expectations(flat, z, o, ws, f"enum_mf_{b}")
        for b, (z, o) in enumerate(zip(entries, others, strict=True))
    ]
    if row_of is None:
        red = zs[0] if len(zs) == 1 else torch.cat(zs, dim=1)
    else:
        red = torch.cat([*zs, q.new_zeros(B, 1)], dim=1).index_select(1, row_of)
    return red.view(B, K, -1).transpose(1, 2).contiguous()


def _row_expectations(
    flat: torch.Tensor,
    entries: torch.Tensor,
    others: torch.Tensor,
    ws: Workspace | None,
    name: str,
) -> torch.Tensor:
    """``sum_m entries[m, r] * prod_i flat[b, others[i, m, r]]``; with an enabled workspace
    ``ws``, in place into its buffers ``name + "_got"`` and ``name + "_z"``.

    Shape:
        ``flat``: ``(B, N + 1)`` (the marginals flattened, then 1); ``entries``: ``(M, R)``;
        ``others``: ``(a, M, R)`` int64 into ``flat``; output: ``(B, R)``.
    """
    B = flat.shape[0]
    a, M, R = others.shape
    if not a:
        return entries.sum(dim=0).expand(B, R)
    out = z_out = None
    if ws is not None:
        out, z_out = ws(f"{name}_got", (B, a * M * R), flat), ws(f"{name}_z", (B, R), flat)
    got = torch.index_select(flat, 1, others.reshape(-1), out=out).view(B, a, M, R)
    w = got[:, 0]
    if out is None:  # (autograd: every product its own tensor)
        for i in range(1, a):
            w = w * got[:, i]
        return (w * entries).sum(dim=1)
    for i in range(1, a):
        w.mul_(got[:, i])
    return torch.sum(w.mul_(entries), dim=1, out=z_out)


def padded_states(
    x: torch.Tensor, layout: SweepLayout, B: int, K: int, fill: float = NEG
) -> torch.Tensor:
    """A flat vector of ``layout``'s positions (a trailing entry allowed) as ``(B, n, K)``,
    ``fill`` at the states that do not exist (a copy; autograd-safe).

    Shape:
        ``x``: ``(B, L(+1))``, or ``(L(+1),)`` for one batch row; output: ``(B, n, K)``.
    """
    L, n = layout.source.shape[0], layout.items
    out = x.new_full((B, n * K), fill)
    return out.index_copy_(1, layout.source, x.reshape(B, -1)[:, :L]).view(B, n, K)


class _GatherBucket(NamedTuple):
    """:class:`EnumeratedSweep`'s buffers of one row bucket with other edges."""

    bucket: int  # its position among the row buckets
    others: torch.Tensor  # (a_b M_b R_b,) positions in the flat cavity
    got: torch.Tensor  # (*rows, a_b M_b R_b) the gathered cavities
    parts: tuple[torch.Tensor, ...]  # got, one slice per other edge
    z: torch.Tensor  # (*rows, M_b R_b) configurations: summed cavities plus the entry
    z3: torch.Tensor  # z as (*rows, M_b, R_b)
    red: torch.Tensor  # (*rows, R_b) the reduced rows (a view of the sweep's buffer)
    top3: torch.Tensor  # (*rows, 1, R_b) each row's largest configuration
    top: torch.Tensor  # top3 as (*rows, R_b)


class SweepLayout(NamedTuple):
    """Where :class:`EnumeratedSweep` keeps the states of ``n`` items (edges or variables) of
    ``K`` padded states in a flat vector of ``L`` positions
    (:class:`~pgmunfold.compile.enumerate.StateLayout`, as tensors)."""

    source: torch.Tensor  # (L,) int64: each position's i * K + s
    items: int  # n
    classes: tuple[tuple[int, int, int], ...]  # (offset_c, k_c, n_c) per cardinality class


class SweepWiringTensors(NamedTuple):
    """:class:`~pgmunfold.compile.enumerate.SweepWiring` as tensors on the field's device."""

    messages: SweepLayout
    beliefs: SweepLayout
    bel_slots: torch.Tensor
    bucket_pos: Sequence[torch.Tensor]
    bucket_slots: Sequence[torch.Tensor]
    cav_var: torch.Tensor
    others: Sequence[torch.Tensor]
    row_of: torch.Tensor
    exact: Sequence[torch.Tensor] | None

    def reduced_rows(self) -> tuple[int, bool]:
        """The number ``R`` of rows the buckets reduce (concatenated), and whether they are
        gathered back to the message layout (``row_of``): in another order than the layout's,
        or fewer (a padded layout's positions of states that do not exist then read a trailing
        hard zero)."""
        R = sum(int(o.shape[2]) for o in self.others)
        L = int(self.messages.source.shape[0])
        return R, bool(len(self.others) > 1 or len(self.messages.classes) > 1 or R < L)


class EnumeratedSweep:
    """The flooding iterations of the enumerated contraction without autograd: the loop of a
    forward under ``torch.no_grad()``, flat, on buffers allocated once and reused by every
    iteration.

    The functional step (:func:`~pgmunfold.infer.bp.bp_cavities`, then
    :func:`bucketed_messages`) works in the ``(B, E, K)`` layout of the general path: each
    iteration pads the messages for the slot gather, pads the cavities for the configuration
    gather, and transposes the state-major result back (about 50 ops per iteration on
    Pedigree_11, most of them small). Here messages, beliefs and the field are flat vectors of
    only the states that exist (:class:`~pgmunfold.compile.enumerate.StateLayout`: items of one
    cardinality state-major, class after class) with a trailing zero, so every gather reads its
    padding from that zero, no state beyond a variable's cardinality costs anything (one
    64-state variable among binary ones pads the ``(B, E, K)`` layout 32-fold), and the new
    messages are written straight into the other of two message buffers: about 25 ops per
    iteration, on views made once (a reduction over the states of every edge is one op per
    cardinality class). Cavities are formed by subtraction from the belief, or, with ``exact``
    (hard zeros, slot plans without buckets), as a prefix plus a suffix sum of the other
    incoming messages (two cumulative sums, no subtraction). The message rows are reduced in
    the functional step's row buckets (:func:`~pgmunfold.compile.enumerate.plan_buckets`), each
    at its own extent, and gathered back to the layout (``row_of``) where their order differs.
    The functional step is its twin in the tests, and the path under autograd.

    Args:
        wiring: the index arrays (:class:`SweepWiringTensors`).
        init: the initial log-messages of every batch row at the message positions ``(L,)``
            (normalised here, per edge).
        field: the variables' unary log-potentials ``(B, V, K)``.
        damping: log-domain damping (0: none).
        semiring: ``"sum"`` or ``"max"``.
        ws: the forward's (enabled) workspace.

    Shape:
        :attr:`messages`, :attr:`previous`: ``(B, E, K)``; :meth:`step`'s ``entries``:
        ``[(M_b, R_b)]``, one per row bucket; :meth:`residual`: ``(B,)``;
        :meth:`log_marginals`: ``(B, V, K)``.
    """

    def __init__(
        self,
        wiring: SweepWiringTensors,
        init: torch.Tensor,
        field: torch.Tensor,
        damping: float,
        semiring: Semiring,
        ws: Workspace,
    ) -> None:
        self.wiring = w = wiring
        self.exact = None if w.exact is None else tuple(w.exact)
        self.buckets = tuple(zip(w.bucket_pos, w.bucket_slots, strict=True))
        B, V, K = field.shape
        E = w.messages.items
        self.B, self.E, self.K, self.V = B, E, K, V
        self.damping, self.semiring = damping, semiring
        rows = () if B == 1 else (B,)  # one batch row: 1-d tensors
        self.batch, self.dim = rows, len(rows)
        L, LV = w.messages.source.shape[0], w.beliefs.source.shape[0]
        self.L, self.LV = L, LV

        def flat(x: torch.Tensor, layout: SweepLayout) -> torch.Tensor:
            """``(B, n, K)`` -> ``(*rows, L + 1)``: the layout's states, then a 0."""
            out = x.new_zeros(B, layout.source.shape[0] + 1)
            out[:, :-1] = x.reshape(B, -1).index_select(1, layout.source)
            return out[0] if B == 1 else out

        def scratch(name: str, n: int) -> torch.Tensor:
            buf = ws(name, (B, n), field)
            assert buf is not None, "EnumeratedSweep needs an enabled workspace"
            return buf[0] if B == 1 else buf

        self.field = flat(field, w.beliefs)
        # each state: the messages (L + 1), then, for exact cavities, the field (LV + 1)
        full = [field.new_zeros(*rows, L + 1) for _ in range(2)]
        for at, k, n in w.messages.classes:  # every edge's initial message normalised
            c = init[at : at + k * n].view(k, n)
            full[0][..., at : at + k * n].view(*rows, k, n).copy_(log_normalize(c, dim=0))
        full[1].copy_(full[0])
        if self.exact is not None:
            full = [torch.cat([x, self.field], dim=-1) for x in full]
        self._full = full
        self._msgs = [x[..., : L + 1] for x in full]
        self._msg_flat = [x[..., :L] for x in full]  # (without the trailing zero)
        self._msg_states = [self._views(x, w.messages) for x in self._msgs]
        if self.exact is None:
            self._inc = scratch("enum_inc", w.bel_slots.shape[0])
            self._bel = scratch("enum_bel", LV + 1)
            self._inc_rows = self._inc.view(*rows, -1, LV + 1)
        else:
            self._pre = scratch("enum_pre", self.exact[0].shape[0])
            self._suf = scratch("enum_suf", self.exact[1].shape[0])
            # (buffer, its rows, slots): the prefix table, then the suffix table
            self._scans = tuple(
                (x, x.view(*rows, -1, LV + 1), sl)
                for x, sl in ((self._pre, self.exact[0]), (self._suf, self.exact[1]))
            )
            self._part = scratch("enum_part", L + 1)
        self._cav = scratch("enum_cav", L + 1)
        self._cav_states = self._views(self._cav, w.messages)
        R, self._reorder = w.reduced_rows()
        self._red = scratch("enum_red", R + 1 if R < L else L)
        if R < L:
            self._red[..., R].fill_(NEG)
        self._red_all = scratch("enum_red_all", L) if self._reorder else self._red
        self._red_states = self._views(self._red_all, w.messages)
        # per row bucket with other edges: its others, the gathered cavities (one slice per
        # other edge, summed by a chain of adds: faster than a reduction over a short outer
        # axis), the summed configurations z (M_b, R_b), their maximum per row, and the
        # bucket's reduced rows; per bucket without (unary factors): its extent and rows
        self._gathered: list[_GatherBucket] = []
        self._constant: list[tuple[int, tuple[int, int], torch.Tensor]] = []
        off = 0
        for b, o in enumerate(w.others):
            a, M, n = (int(x) for x in o.shape)
            red = self._red[..., off : off + n]
            if a:
                got = scratch(f"enum_got_{b}", a * M * n)
                z = got if a == 1 else scratch(f"enum_z_{b}", M * n)
                top = scratch(f"enum_top_{b}", n)
                parts = tuple(got.split(M * n, dim=-1))
                z3, top3 = z.view(*rows, M, n), top.view(*rows, 1, n)
                self._gathered.append(
                    _GatherBucket(b, o.reshape(-1), got, parts, z, z3, red, top3, top)
                )
            else:
                self._constant.append((b, (M, n), red))
            off += n
        # the maxima over an edge's states (cavities, messages), per cardinality class
        self._edge_max = [
            scratch(f"enum_edge_max_{c}", n).view(*rows, 1, n)
            for c, (_, _, n) in enumerate(w.messages.classes)
        ]
        self._entries: Sequence[torch.Tensor] | None = None
        self.t = 0

    def _views(self, x: torch.Tensor, layout: SweepLayout) -> list[torch.Tensor]:
        """A flat vector's ``(*rows, k_c, n_c)`` view per class of ``layout``."""
        return [x[..., o : o + k * n].view(*self.batch, k, n) for o, k, n in layout.classes]

    def _padded(self, x: torch.Tensor, layout: SweepLayout) -> torch.Tensor:
        """A flat vector as ``(B, n, K)`` (a copy), ``NEG`` at the states that do not exist."""
        return padded_states(x, layout, self.B, self.K)

    @property
    def messages(self) -> torch.Tensor:
        """The messages of the last iteration."""
        return self._padded(self._msgs[self.t % 2], self.wiring.messages)

    @property
    def previous(self) -> torch.Tensor:
        """The messages of the iteration before the last (the initial ones before any)."""
        old = self._msgs[(self.t + 1) % 2 if self.t else 0]
        return self._padded(old, self.wiring.messages)

    def _shift(self, x: list[torch.Tensor], out: list[torch.Tensor]) -> None:
        """Every edge's states ``x`` (class views) minus their maximum, into ``out``."""
        d = self.dim
        for xc, oc, top in zip(x, out, self._edge_max, strict=True):
            torch.amax(xc, dim=d, keepdim=True, out=top)
            torch.sub(xc, top.clamp_min_(NEG / 2), out=oc)

    def residual(self) -> torch.Tensor:
        """The largest change of a normalised message probability in the last iteration (as
        the general path's ``_max_change`` of the padded messages: the states that do not
        exist are 0 in both). Shape: ``(B,)``."""
        d, probs = self.dim, []
        # (in the cavities' and the reduced rows' buffers, free once the iterations are done)
        old = (self.t + 1) % 2 if self.t else 0
        for p, i in ((self._cav, self.t % 2), (self._red_all, old)):
            states = self._views(p, self.wiring.messages)
            self._shift(self._msg_states[i], states)
            for c in states:
                c.exp_().div_(c.sum(dim=d, keepdim=True))
            probs.append(p[..., : self.L])
        change = probs[0].sub_(probs[1]).abs_()
        return change.amax(dim=-1).reshape(self.B)

    def log_marginals(self) -> torch.Tensor:
        """The normalised log beliefs of the variables from the last messages, ``NEG`` at the
        states that do not exist. Shape: ``(B, V, K)``."""
        d = self.dim
        bel = self._beliefs(self._msgs[self.t % 2], self._full[self.t % 2])
        for c in self._views(bel, self.wiring.beliefs):
            c.copy_(log_normalize(c, dim=d))
        return self._padded(bel, self.wiring.beliefs)

    def _beliefs(self, msg: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The variables' beliefs (field plus incoming messages) of the messages ``msg``
        (``state``: the same with the field after, for exact cavities), in a reused buffer."""
        d = self.dim
        if self.exact is None:
            torch.index_select(msg, d, self.wiring.bel_slots, out=self._inc)
            bel = torch.sum(self._inc_rows, dim=d, out=self._bel)
            bel.add_(self.field)
            for pos, sl in self.buckets:
                part = torch.index_select(msg, d, sl).view(*self.batch, -1, pos.shape[0])
                bel.index_add_(d, pos, part.sum(dim=d))
            return bel
        # exact cavities (no buckets): the last row of the prefix table
        pre, pre_rows, sl = self._scans[0]
        torch.index_select(state, d, sl, out=pre)
        return torch.sum(pre_rows, dim=d)

    def _new_entries(self, entries: Sequence[torch.Tensor]) -> None:
        """Reduce the row buckets without other edges (unary factors) once per table: their
        rows do not depend on the cavities."""
        if self._entries is not entries:
            self._entries = entries
            for b, extent, red in self._constant:
                red.copy_(_reduce_configs(entries[b].view(extent), 0, self.semiring))

    def step(self, entries: Sequence[torch.Tensor]) -> None:
        """One iteration with the table entries of every row bucket (``(M_b, R_b)`` each, the
        same sequence object for the same tables)."""
        d = self.dim
        i = self.t % 2
        msg = self._msgs[i]
        if self.exact is None:
            # beliefs (trailing zero: field's plus padding slots'), then the cavities by
            # subtraction (trailing zero: 0 - 0)
            bel = self._beliefs(msg, msg)
            cav = torch.index_select(bel, d, self.wiring.cav_var, out=self._cav).sub_(msg)
        else:  # exact: the prefix plus the suffix sum around each edge's own slot
            state = self._full[i]
            for buf, table, sl in self._scans:
                torch.index_select(state, d, sl, out=buf)
                table.cumsum_(dim=d)
            lo, hi = self.exact[2:]
            cav = torch.index_select(self._pre, d, lo, out=self._cav)
            cav.add_(torch.index_select(self._suf, d, hi, out=self._part))
        # each cavity shifted to a largest state of 0
        self._shift(self._cav_states, self._cav_states)
        # every configuration of every row: the other edges' cavities plus the entry,
        # reduced over the row's configurations
        floor = exp_floor(cav.dtype)
        self._new_entries(entries)
        for g in self._gathered:  # (rows without other edges: reduced once per table)
            torch.index_select(cav, d, g.others, out=g.got)
            z, z3, parts = g.z, g.z3, g.parts
            if len(parts) > 1:
                torch.add(parts[0], parts[1], out=z)
                for p in parts[2:]:
                    z.add_(p)
            z.add_(entries[g.bucket].view(-1))
            if self.semiring == "sum":
                torch.amax(z3, dim=d, keepdim=True, out=g.top3)
                z3.sub_(g.top3).clamp_min_(floor).exp_()  # floored_exp, in place
                torch.sum(z3, dim=d, out=g.red).log_().add_(g.top)
            else:
                torch.amax(z3, dim=d, out=g.red)
        if self._reorder:
            torch.index_select(self._red, d, self.wiring.row_of, out=self._red_all)
        new = self._msg_states[1 - i]
        for rc, nc, top in zip(self._red_states, new, self._edge_max, strict=True):
            torch.sub(rc, torch.amax(rc, dim=d, keepdim=True, out=top), out=nc)
        new_flat = self._msg_flat[1 - i]
        new_flat.clamp_min_(NEG)
        if self.damping != 0.0:
            torch.lerp(new_flat, self._msg_flat[i], self.damping, out=new_flat)
        self.t += 1


class FlatStep:
    """The flooding iterations of the enumerated contraction in :class:`EnumeratedSweep`'s flat
    layout, as functional ops that autograd records: the path of BP on the general path under
    autograd (and under ``torch.compile``), where :class:`EnumeratedSweep` runs without.

    Messages, beliefs and the field are ``(B, L + 1)`` vectors of only the states that exist
    (:class:`~pgmunfold.compile.enumerate.StateLayout`), then a 0 that padding gathers read.
    The ops are the sweep's, each out of place: no state beyond a variable's cardinality is
    stored, gathered, reduced or differentiated, where the ``(B, E, K)`` functional step
    (:func:`~pgmunfold.infer.bp.bp_cavities`, then :func:`bucketed_messages`) pads every
    message to the largest cardinality and pads and transposes it each iteration. That step is
    its twin in the tests (and still serves ``compile_steps=True``); :class:`EnumeratedSweep`
    is its in-place twin. :meth:`mf_step` runs parallel mean-field in the same layout (the
    marginals where BP keeps beliefs), with autograd and without.

    Args:
        wiring: the index arrays (:class:`SweepWiringTensors`).
        K: the largest cardinality (of the padded inputs and outputs).
        damping: log-domain damping (0: none).
        semiring: ``"sum"`` or ``"max"``.

    Shape:
        :meth:`field`: ``(B, V, K)`` -> ``(B, LV + 1)``; :meth:`initial`: ``(L,)`` ->
        ``(B, L + 1)``; :meth:`step`: messages ``(B, L + 1)``, field ``(B, LV + 1)``, entries
        ``[(M_b, R_b)]`` -> ``(B, L + 1)``; :meth:`residual`: ``(B,)``;
        :meth:`log_marginals`: ``(B, V, K)``; :meth:`padded`: ``(B, L(+1))`` ->
        ``(B, n, K)``.
    """

    def __init__(self, wiring: SweepWiringTensors, K: int, damping: float, semiring: Semiring):
        self.wiring, self.K = wiring, K
        self.damping, self.semiring = damping, semiring
        self.L = int(wiring.messages.source.shape[0])
        self.R, self.reorder = wiring.reduced_rows()

    @staticmethod
    def _per_class(
        x: torch.Tensor,
        layout: SweepLayout,
        fn: Callable[[torch.Tensor], torch.Tensor],
        tail: float = 0.0,
    ) -> torch.Tensor:
        """``fn`` applied to each class's ``(B, k_c, n_c)`` view of ``x``'s first ``L``
        positions, concatenated, then a trailing ``tail``. Shape: ``(B, L(+1))`` ->
        ``(B, L + 1)``."""
        B = x.shape[0]
        parts = [
            fn(x[:, o : o + k * n].view(B, k, n)).reshape(B, k * n) for o, k, n in layout.classes
        ]
        if len(parts) == 1:
            return F.pad(parts[0], (0, 1), value=tail)
        return torch.cat([*parts, x.new_full((B, 1), tail)], dim=1)

    def field(self, u: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
        """The variables' unary log-potentials at the belief positions, then a 0; ``-inf`` at
        the positions ``absent`` (mean-field, a padded layout's states that do not exist: its
        softmax then gives them exactly 0, however far hard zeros weigh down the rest)."""
        B = u.shape[0]
        x = F.pad(u.reshape(B, -1).index_select(1, self.wiring.beliefs.source), (0, 1))
        return x if absent is None else x.index_fill(1, absent, -math.inf)

    def initial(self, init: torch.Tensor, B: int) -> torch.Tensor:
        """The initial messages ``init`` ``(L,)`` normalised per edge, for ``B`` batch rows."""
        x = self._per_class(init.unsqueeze(0), self.wiring.messages, _log_normalize_states)
        return x.expand(B, -1)

    def beliefs(self, msg: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """The variables' beliefs: the field plus the incoming messages (the trailing 0:
        padding slots' and the field's). Shape: ``(B, LV + 1)``."""
        w, B = self.wiring, msg.shape[0]
        if w.exact is not None:  # (exact cavities: the slot rows of the prefix table)
            n = field.shape[1]
            state = torch.cat([msg, field], dim=1)
            return state.index_select(1, w.exact[0]).view(B, -1, n).sum(dim=1)
        bel = msg.index_select(1, w.bel_slots).view(B, -1, field.shape[1]).sum(dim=1) + field
        for pos, sl in zip(w.bucket_pos, w.bucket_slots, strict=True):
            part = msg.index_select(1, sl).view(B, -1, pos.shape[0]).sum(dim=1)
            bel = bel.index_add(1, pos, part)
        return bel

    def cavities(self, msg: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """Every edge's cavity, shifted to a largest state of 0 (not below ``NEG / 2``): the
        belief minus the edge's message, or, with exact cavities (hard zeros), the prefix plus
        the suffix sum of the other incoming messages around the edge's slot."""
        w, B = self.wiring, msg.shape[0]
        if w.exact is None:
            cav = self.beliefs(msg, field).index_select(1, w.cav_var) - msg
        else:
            pre_slots, suf_slots, lo, hi = w.exact
            state, n = torch.cat([msg, field], dim=1), field.shape[1]
            pre = state.index_select(1, pre_slots).view(B, -1, n).cumsum(dim=1).view(B, -1)
            suf = state.index_select(1, suf_slots).view(B, -1, n).cumsum(dim=1).view(B, -1)
            cav = pre.index_select(1, lo) + suf.index_select(1, hi)
        return self._per_class(cav, w.messages, _shift_states_detached)

    def step(
        self, msg: torch.Tensor, field: torch.Tensor, entries: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """One iteration: the new (damped) messages from the messages ``msg``."""
        w = self.wiring
        cav = self.cavities(msg, field)
        reds = [
            _row_reduce(cav, z, o, self.semiring) for z, o in zip(entries, w.others, strict=True)
        ]
        new = self._per_class(self._at_messages(reds, NEG), w.messages, _shift_states)
        return new if self.damping == 0.0 else torch.lerp(new, msg, self.damping)

    def _at_messages(self, rows: list[torch.Tensor], fill: float) -> torch.Tensor:
        """The row buckets' reduced rows ``[(B, R_b)]`` at the message positions: concatenated,
        then ``fill`` for the positions of states that do not exist (a padded layout's),
        gathered back where the order differs (``row_of``). Shape: output ``(B, L)``."""
        if self.R < self.L:
            rows = [*rows, rows[0].new_full((rows[0].shape[0], 1), fill)]
        red = rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)
        return red.index_select(1, self.wiring.row_of) if self.reorder else red

    def residual(self, msg: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """The largest change of a normalised message probability from ``prev`` to ``msg``
        (as the general path's ``_max_change``). Shape: ``(B,)``."""
        p, q = (self._per_class(x, self.wiring.messages, _softmax_states) for x in (msg, prev))
        return (p - q).abs().amax(dim=1)

    def log_marginals(self, msg: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """The normalised log beliefs of the variables, ``NEG`` at the states that do not
        exist. Shape: ``(B, V, K)``."""
        bel = self._per_class(self.beliefs(msg, field), self.wiring.beliefs, _log_normalize_states)
        return self.padded(bel, self.wiring.beliefs)

    def padded(self, x: torch.Tensor, layout: SweepLayout, fill: float = NEG) -> torch.Tensor:
        """A flat vector as ``(B, n, K)``, ``fill`` at the states that do not exist."""
        return padded_states(x, layout, x.shape[0], self.K, fill)

    def mf_initial(self, field: torch.Tensor) -> torch.Tensor:
        """Mean-field's initial marginals: the softmax of the field (:meth:`field`) per
        variable, then a trailing 1 (what padding reads in a product). Shape:
        ``(B, LV + 1)``."""
        return self._per_class(field, self.wiring.beliefs, _softmax_states, tail=1.0)

    def mf_step(
        self,
        q: torch.Tensor,
        field: torch.Tensor,
        entries: Sequence[torch.Tensor],
        ws: Workspace | None = None,
        parity: int = 0,
    ) -> torch.Tensor:
        """One parallel mean-field iteration in the flat layout: every message row's expected
        log-potential under the other variables' marginals (:func:`_row_expectations`, with
        ``wiring.others`` addressing the marginals' positions), the field plus the incoming
        messages per variable (:meth:`beliefs`), its softmax per variable, damped. With an
        enabled workspace ``ws`` (no autograd) the products run in its buffers (``parity``:
        unused, the network's layer signature). :func:`bucketed_expectations` in the padded
        ``(B, V, K)`` layout is its twin.

        Shape:
            ``q``: ``(B, LV + 1)`` (the marginals, then 1); ``field``: ``(B, LV + 1)``;
            ``entries``: ``[(M_b, R_b)]`` (padding 0); output: ``(B, LV + 1)``.
        """
        w = self.wiring
        zs = [
            _row_expectations(q, z, o, ws, f"flat_mf_{b}")
            for b, (z, o) in enumerate(zip(entries, w.others, strict=True))
        ]
        msg = F.pad(self._at_messages(zs, 0.0), (0, 1))  # (a state that does not exist: 0)
        new = self._per_class(self.beliefs(msg, field), w.beliefs, _softmax_states, tail=1.0)
        return new if self.damping == 0.0 else torch.lerp(new, q, self.damping)


def _log_normalize_states(x: torch.Tensor) -> torch.Tensor:
    return log_normalize(x, dim=1)


def _shift_states_detached(x: torch.Tensor) -> torch.Tensor:
    return x - x.amax(dim=1, keepdim=True).clamp_min(NEG / 2).detach()


def _shift_states(x: torch.Tensor) -> torch.Tensor:
    # not detached: see _shifted
    return (x - x.amax(dim=1, keepdim=True)).clamp_min(NEG)


def _softmax_states(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=1)
