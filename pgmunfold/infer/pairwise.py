"""Fast path: flooding loopy BP on graphs whose factors are all unary or pairwise, in a
*state-major* layout and in base-2 log units. Variables with fewer than ``K`` (the largest
cardinality) states are padded: their missing states carry the hard-zero sentinel in the field,
so they get probability 0 exactly. Hard zeros are
allowed: the caller then forms cavities as exclusive sums (no subtraction of sentinels), and
sentinels in bits are :data:`NEG_BITS`, which convert back to exactly :data:`NEG` nats.

Why a second layout: with ``K`` a small innermost dimension (the public ``(B, item, K)``
layout), every per-state reduction and broadcast of a CPU kernel runs over 4-16 contiguous
values and does not vectorise. Here messages are ``(B, K, P)``: every elementwise op and every
reduction over states runs along the long edge axis. The ``K x K`` contraction of a pairwise
group becomes ``K`` fused multiply-adds over ``(B, K, F)`` slabs (a static loop over *states*,
never over factors or edges), reading each table once per direction. Base-2 units (bits) are
used because ``log2``/``exp2`` are several times cheaper than ``log``/``exp`` on CPU;
``log2(sum 2^x)`` is the same semiring as ``log(sum e^x)`` up to the constant factor ``ln 2``,
applied to the inputs once per forward and to the messages once at the end.

Unary factors send their (normalised) table whatever the cavity, so they are folded into the
variables' field instead of occupying message columns.

Small problems (``B K^2 P`` up to :data:`_COLUMNS_MAX` terms) take a second contraction: one
table per message column (:func:`column_tables`, shared tables repeated), and every column's
message from its partner column's cavity in one broadcast product and reduction
(:func:`column_messages`): about 17 ops per iteration whatever the number of units and shapes,
where the per-unit contraction takes ``2 (K + 4)`` per unit plus their views. Small graphs are
bound by per-op overhead (CSP_11, four pairwise groups: 60 ops per iteration down to 28, 1.5-2x
faster on CPU); large ones by memory, where the ``K^2`` intermediate would cost. Without
autograd its loop runs in :class:`ColumnSweep`, on buffers and views
prepared once: the Python around the ops cost as much as the ops.

Mean-field on the same graphs uses the same layout and the same contraction (:class:`StateMatvec`
applied to marginals, in natural units; ``UnfoldedNetwork._mf_pairwise_step``).

The naive twins are the general paths (:mod:`pgmunfold.infer.bp`,
:mod:`pgmunfold.infer.meanfield`); ``tests/test_pairwise.py`` checks them against each other.

Column layout of the pairwise messages ``msg`` ``(B, K, P + 1)``: *unit* by unit, the ``F_u``
messages to the variables in scope position 0, then the ``F_u`` messages to scope position 1;
the last column is a padding column that always holds 0. A unit is a shared group, or a run of
consecutive unshared groups (their factors in order), whose tables, each padded to ``K x K``, are
concatenated: one contraction per direction and unit, however many groups of different shapes
the unit holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from pgmunfold.infer.bp import slot_cavities
from pgmunfold.infer.ops import NEG, Semiring
from pgmunfold.infer.workspace import Workspace

__all__ = [
    "LOG2E",
    "NEG_BITS",
    "ColumnSweep",
    "ColumnTable",
    "PairwiseTables",
    "StateMatvec",
    "TableGrad",
    "TableGradLink",
    "column_messages",
    "column_tables",
    "link_table_grad",
    "matvec_loop",
    "pad_states",
    "pairwise_messages",
    "pairwise_tables",
    "state_major_tables",
    "state_major_to_edges",
    "state_matvec",
    "state_matvec_naive",
    "unit_state_major",
]

LOG2E = 1.0 / math.log(2.0)
"""Bits per nat."""

NEG_BITS = NEG * LOG2E
"""The hard-zero sentinel in bits: it converts back to exactly :data:`NEG` nats."""


class PairwiseTables(NamedTuple):
    """One pairwise group's tables, prepared once per forward: one contiguous copy, read by
    both directions.

    Attributes:
        form: ``"exp"``: entries ``2^(theta_bits - max)``, for sum-product whose tables'
            log-range is below :func:`pgmunfold.infer.ops.dense_range_limit` (checked). Then
            every normalised message is above ``-limit`` and the cavities, formed from beliefs
            shifted to a maximum of 0, are below ``+limit``: ``2^q`` neither overflows nor
            loses the arg-max state, and no per-edge shift is needed.
            ``"exp_shifted"``: the same entries with the range unchecked
            (``contraction="matmul"``): each cavity is shifted by its maximum before ``2^q``.
            ``"log"``: entries ``theta_bits`` (max-product, or sum-product of wide tables).
        to0: ``to0[c, a, f]`` = entry of state ``a`` of scope position 0 and ``c`` of position 1
            (slab ``to0[c]`` is what a message to position 0 needs when ``c`` is summed out).
        to1: ``to1[a, c, f]``, the same entries for messages to position 1 (contiguous;
            ``to0`` is its transposed view).
        grad: under autograd (exp forms): ``to0``/``to1`` are then detached and the table's
            gradient reaches it through this link (see :class:`TableGrad`); else ``None``.

    Shape:
        ``to0``, ``to1``: ``(K, K, F)`` (``F = 1`` for a shared table).
    """

    form: Literal["exp", "exp_shifted", "log"]
    to0: torch.Tensor
    to1: torch.Tensor
    grad: TableGradLink | None = None


def pad_states(theta: torch.Tensor, K: int, value: float) -> torch.Tensor:
    """Pad the state axes of ``(F, k0, k1)`` tables to ``(F, K, K)`` with ``value`` (entries of
    states a variable does not have).

    Shape:
        ``theta``: ``(F, k0, k1)``; output: ``(F, K, K)``.
    """
    k0, k1 = theta.shape[1:]
    if k0 == K and k1 == K:
        return theta
    return torch.nn.functional.pad(theta, (0, K - k1, 0, K - k0), value=value)


def pairwise_tables(
    theta: torch.Tensor | Sequence[torch.Tensor],
    form: Literal["exp", "exp_shifted", "log"],
    K: int,
    table_max: torch.Tensor | Sequence[torch.Tensor] | None = None,
    link: bool = True,
    ws: Workspace | None = None,
    name: str = "tab",
) -> PairwiseTables:
    """State-major tables of a pairwise group (or of a unit: several unshared groups, their
    factors concatenated in order) of natural log-potentials, padded to ``K`` states
    (variables of fewer states: the missing ones hold a hard zero).

    Args:
        theta: a group's tables, or a list of them (a unit).
        table_max: each table's largest entry (detached), when the caller already has it
            (exp forms; computed here when ``None``); a list for a unit.
        link: exp forms under autograd: sum the table's gradient through a
            :class:`TableGradLink` (the hand-written backward); ``False``: plain autograd
            (for contractions run inside ``torch.compile``, which uses plain ops).
        ws: an enabled workspace (no-grad): the tables are written into its buffers
            ``name`` and ``name.i`` (exp forms, one per group of a unit; the log form, a unit
            of one group without padding), so a pooled workspace keeps them mapped in between
            forwards (see :class:`WorkspacePool`).
        name: the buffers' name (one per distinct table set of a forward).

    Shape:
        ``theta``: ``(F, k0, k1)`` or ``(1, k0, k1)`` (each, for a unit); ``table_max``:
        ``(F,)`` or ``(1,)``; output tables: ``(K, K, F)`` (``F`` summed over a unit).
    """
    thetas = [theta] if isinstance(theta, torch.Tensor) else list(theta)
    if table_max is None or isinstance(table_max, torch.Tensor):
        maxes: list[torch.Tensor | None] = [table_max] * len(thetas)
    else:
        maxes = list(table_max)

    def buf(suffix: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        return None if ws is None else ws(name + suffix, shape, like)

    if form == "log":
        to1 = unit_state_major(thetas, K, NEG_BITS, ws, name, scale=LOG2E)
        return PairwiseTables(form, to1.transpose(0, 1), to1)

    parts = [
        _exp_table(t, K, m, buf(f".{i}", (t.shape[1] * t.shape[2], t.shape[0]), t))
        for i, (t, m) in enumerate(zip(thetas, maxes, strict=True))
    ]
    if len(parts) == 1:
        to1 = parts[0]
    else:
        shape = (K, K, sum(p.shape[2] for p in parts))
        to1 = torch.cat(parts, 2, out=buf("", shape, parts[0]))
    return PairwiseTables(form, *link_table_grad(to1, link))


def _exp_table(
    theta: torch.Tensor, K: int, table_max: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``to1`` of :func:`pairwise_tables`' exp forms, not yet linked to autograd; ``out``
    (no-grad only): a buffer for the state-major copy.

    Shape:
        ``theta``: ``(F, k0, k1)``; ``out``: ``(k0 * k1, F)``; output: ``(K, K, F)``.
    """
    # 2^(bits - max) = e^(theta - max), formed in place on the state-major copy (the layout
    # change is a copy anyway; neither sub_ nor exp_ saves what it overwrites): one pass and
    # one allocation of F * K^2 instead of three
    F, k0, k1 = theta.shape
    if table_max is None:
        table_max = theta.detach().amax(dim=(1, 2))
    # in place on the copy itself, not on a view of it (an in-place op on a view costs a
    # CopySlices node, whose backward copies the whole table gradient)
    to1 = _state_major_copy(theta, out).sub_(table_max).exp_().view(k0, k1, F)
    if k0 < K or k1 < K:
        # padded states: 1, not 0. A missing source state has weight 2^q = 0 exactly anyway
        # (its field is the hard-zero sentinel); a missing target state then gets a positive
        # sum, never log2(0), whose gradient would be NaN; its belief stays a hard zero
        padded = to1.new_ones(K, K, to1.shape[2])
        padded[:k0, :k1] = to1
        to1 = padded
    return to1


def unit_state_major(
    thetas: Sequence[torch.Tensor],
    K: int,
    value: float,
    ws: Workspace | None = None,
    name: str = "",
    scale: float = 1.0,
) -> torch.Tensor:
    """``to1`` of a unit (see the module docstring): its groups' tables times ``scale``,
    padded to ``K`` states with ``value`` and laid out state-major, concatenated in order (a
    new tensor; with an enabled workspace ``ws`` and a unit of one group without padding, its
    buffer ``name``, scaled in place).

    Shape:
        ``thetas[g]``: ``(F_g, k0, k1)``; output: ``(K, K, sum_g F_g)``.
    """
    t = thetas[0]
    if ws is not None and ws.enabled and len(thetas) == 1 and t.shape[1] == t.shape[2] == K:
        F = t.shape[0]
        to1 = _state_major_copy(t, ws(name, (K * K, F), t)).view(K, K, F)
        return to1 if scale == 1.0 else to1.mul_(scale)
    if scale != 1.0:
        thetas = [t * scale for t in thetas]
    parts = [state_major_tables(pad_states(t, K, value))[1] for t in thetas]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def state_major_tables(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(to0, to1)``: ``to0[c, a, f] = to1[a, c, f] = theta[f, a, c]``. ``to1`` is a
    contiguous copy (always a new tensor: callers may overwrite it), ``to0`` a transposed view
    of it: each slab ``to0[c]`` is ``k0`` contiguous rows of ``F``, which the contraction reads
    as fast as a contiguous copy (measured on CPU), so the second copy of earlier versions is
    gone.

    Shape:
        ``theta``: ``(F, k0, k1)``; outputs: ``(k1, k0, F)`` and ``(k0, k1, F)``.
    """
    F, k0, k1 = theta.shape
    to1 = _state_major_copy(theta).view(k0, k1, F)
    return to1.transpose(0, 1), to1


def _state_major_copy(theta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out[a * k1 + c, f] = theta[f, a, c]``, always a new contiguous tensor (also for
    ``F = 1``, where the transpose is already contiguous), or written into ``out``: callers
    may overwrite it.

    Shape:
        ``theta``: ``(F, k0, k1)``; ``out``, output: ``(k0 * k1, F)``.
    """
    F, k0, k1 = theta.shape
    # a 2-d transpose copies ~3x faster than the equivalent 3-d permute
    src = theta.reshape(F, k0 * k1).t()
    return src.clone(memory_format=torch.contiguous_format) if out is None else out.copy_(src)


def _shift_bits(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Shift log2-values so that their largest state (dim 1) is 0, floored at the sentinel;
    ``inplace`` overwrites ``x`` (no-grad only).

    A message is defined up to a constant per column: every use of one is invariant to it
    (cavities and beliefs are shifted, the residual and the marginals normalised), so the
    log form's messages are not normalised to sum to one (5 ops more per contraction). The
    shift is not detached: its gradient projects out the constant direction, which no later
    use sees (see :func:`~pgmunfold.infer.enumerated.enumerated_messages`).
    """
    top = x.amax(dim=1, keepdim=True)
    return (x.sub_(top) if inplace else x - top).clamp_min_(NEG_BITS)


def state_matvec_naive(tab: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``out[b, a, f] = sum_j tab[j, a, f] p[b, j, f]`` with plain autograd (the naive twin of
    :class:`StateMatvec`).

    Shape:
        ``tab``: ``(K, K, F or 1)``; ``p``: ``(B, K, F)``; output: ``(B, K, F)``.
    """
    return (tab.unsqueeze(0) * p.unsqueeze(2)).sum(dim=1)


def matvec_loop(tab: torch.Tensor, p: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The forward of :class:`StateMatvec` (into ``out`` when given); autograd-safe, as the
    accumulator it updates in place is saved by no op.

    Shape:
        ``tab``: ``(K, K, F or 1)``; ``p``, ``out``: ``(B, K, F)``; output: ``(B, K, F)``.
    """
    acc = torch.mul(tab[0], p[:, 0:1], out=out)
    for j in range(1, p.shape[1]):
        acc.addcmul_(tab[j], p[:, j : j + 1])
    return acc


class TableGrad:
    """The gradient of one state-major table ``base`` ``(K, K, F or 1)``, summed in place over
    every contraction that reads it (``T`` iterations, two directions each).

    Without it, each contraction's backward makes a fresh ``(K, K, F)`` gradient that autograd
    then adds to the running total: ``2 T`` table-sized allocations (on CPU each a round of
    page faults) and as many extra passes. The table enters autograd once, through the
    zero-size *token* of :func:`link_table_grad`; every contraction takes the token as an input
    and adds its share here. Autograd runs the token's backward only after every node that
    used the token, so what it hands to ``base`` is the complete sum.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None

    def add(self, x: torch.Tensor, y: torch.Tensor, shared: bool) -> None:
        """``total[j, a, f] += sum_b x[b, j, f] y[b, a, f]`` (also summed over ``f`` for a
        shared table).

        Shape:
            ``x``, ``y``: ``(B, K, F)``.
        """
        if shared:
            part = torch.einsum("bjf,baf->ja", x, y).unsqueeze(2)
            self.total = part if self.total is None else self.total.add_(part)
            return
        rows = range(x.shape[0])
        if self.total is None:  # the first share: a product, no zero fill
            self.total = x[0].unsqueeze(1) * y[0].unsqueeze(0)
            rows = range(1, x.shape[0])
        for b in rows:  # one pass over the total per batch row
            self.total.addcmul_(x[b].unsqueeze(1), y[b].unsqueeze(0))

    def take(self) -> torch.Tensor | None:
        """The summed gradient (``None``: no contraction contributed); resets the sum."""
        total, self.total = self.total, None
        return total


class _TableToken(torch.autograd.Function):
    """``token = apply(base, sink)``: a zero-size tensor whose backward hands ``sink``'s sum
    to ``base`` (see :class:`TableGrad`)."""

    @staticmethod
    def forward(base: torch.Tensor, sink: TableGrad) -> torch.Tensor:
        return base.new_empty(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.sink = inputs[1]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, _: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        return ctx.sink.take(), None


class TableGradLink(NamedTuple):
    """A detached table's way back into autograd: contractions pass ``token`` to
    :class:`StateMatvec` and add their share of the gradient to ``sink``."""

    token: torch.Tensor
    sink: TableGrad


def link_table_grad(
    base: torch.Tensor, enabled: bool = True
) -> tuple[torch.Tensor, torch.Tensor, TableGradLink | None]:
    """``(to0, to1, link)``: the contiguous state-major table ``base`` as ``to1`` and its
    transposed view as ``to0``, both detached and linked to autograd through ``link`` when
    ``base`` records autograd (and nothing is being compiled, and ``enabled``: under
    ``torch.compile``, now or later in a compiled step, the contraction is plain ops); else
    ``base`` itself and ``link = None`` (plain autograd).

    Shape:
        ``base``: ``(K, K, F or 1)``; ``to0``, ``to1``: the same.
    """
    link = None
    if enabled and base.requires_grad and not torch.compiler.is_compiling():
        sink = TableGrad()
        token = _TableToken.apply(base, sink)
        assert isinstance(token, torch.Tensor)
        base, link = base.detach(), TableGradLink(token, sink)
    return base.transpose(0, 1), base, link


class StateMatvec(torch.autograd.Function):
    """``out[b, a, f] = sum_j tab[j, a, f] p[b, j, f]``: ``K`` fused multiply-adds over
    ``(B, K, F)`` slabs, with a hand-written backward that is the same loop again (instead of
    autograd's ``2 K`` broadcast products and reductions).

    ``apply(tab, tab_t, p, token, sink, transposed)``: ``tab_t[a, j, f] = tab[j, a, f]``,
    the other direction's table (no gradient flows through it: it holds the same numbers as
    ``tab``). The table's gradient goes either to ``tab`` itself (``token`` and ``sink``
    ``None``), or, for a detached table, to ``sink`` (a :class:`TableGrad`), with ``token`` its
    autograd link; ``transposed``: ``tab`` is the transposed view of the sink's table.

    Shape:
        ``tab``, ``tab_t``: ``(K, K, F or 1)``; ``p``: ``(B, K, F)``; ``token``: ``(0,)``;
        output: ``(B, K, F)``.
    """

    @staticmethod
    def forward(
        tab: torch.Tensor,
        tab_t: torch.Tensor,
        p: torch.Tensor,
        token: torch.Tensor | None = None,
        sink: TableGrad | None = None,
        transposed: bool = False,
    ) -> torch.Tensor:
        return matvec_loop(tab, p, None)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        tab, tab_t, p, _, sink, transposed = (*inputs, None, None, False)[:6]
        ctx.save_for_backward(tab_t, p)
        ctx.shared = tab.shape[2] == 1
        ctx.sink, ctx.transposed = sink, transposed

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        tab_t, p = ctx.saved_tensors
        grad_tab = grad_p = grad_token = None
        if ctx.needs_input_grad[
            2
        ]:  # grad_p[b, j] = sum_a tab[j, a] g[b, a] = sum_a tab_t[a, j] g[b, a]
            grad_p = matvec_loop(tab_t, g, None)
        if ctx.needs_input_grad[0]:  # grad_tab[j, a] = sum_b p[b, j] g[b, a]
            if p.shape[0] == 1:  # one product, no (K, K, F)-sized zero fill and reduction
                grad_tab = p[0].unsqueeze(1) * g[0].unsqueeze(0)
            else:
                grad_tab = (p.unsqueeze(2) * g.unsqueeze(1)).sum(dim=0)
            if ctx.shared:
                grad_tab = grad_tab.sum(dim=2, keepdim=True)
        if len(ctx.needs_input_grad) > 3 and ctx.needs_input_grad[3]:
            # the sink's table is tab (tab[j, a] <- p[j] g[a]) or its transpose (base[a, j])
            x, y = (g, p) if ctx.transposed else (p, g)
            ctx.sink.add(x, y, ctx.shared)
            grad_token = g.new_zeros(0)
        return grad_tab, None, grad_p, grad_token, None, None


def state_matvec(
    tab: torch.Tensor,
    tab_t: torch.Tensor | None,
    p: torch.Tensor,
    out: torch.Tensor | None,
    link: TableGradLink | None = None,
    transposed: bool = False,
) -> torch.Tensor:
    """``out[b, a, f] = sum_j tab[j, a, f] p[b, j, f]``: in place into ``out`` (no-grad), with
    :class:`StateMatvec`'s hand-written backward under autograd (the table's gradient summed
    through ``link`` when given, see :class:`TableGrad`; ``transposed``: ``tab`` is the
    transposed view of the linked table), or with plain ops under ``torch.compile`` (dynamo's
    tracing of custom Functions trips a deprecation warning, pytorch/pytorch#128439; the
    compiler fuses the loop anyway) or without ``tab_t``.

    Shape:
        ``tab``, ``tab_t``: ``(K, K, F or 1)``; ``p``, ``out``: ``(B, K, F)``; output:
        ``(B, K, F)``.
    """
    if out is not None or tab_t is None or torch.compiler.is_compiling():
        return matvec_loop(tab, p, out)
    if link is None:
        out_ = StateMatvec.apply(tab, tab_t, p)
    else:
        out_ = StateMatvec.apply(tab, tab_t, p, link.token, link.sink, transposed)
    assert isinstance(out_, torch.Tensor)
    return out_


_BROADCAST_MAX = 1 << 18
"""The log form of :func:`_contract` forms all ``B K^2 F`` terms at once up to this many (few
ops: small graphs are bound by per-op overhead), else loops over the ``K`` states summed out
(no ``K^2`` intermediate). Tests set it to 0 to run the loop on small graphs."""


def _contract(
    tab: torch.Tensor,
    form: str,
    q: torch.Tensor,
    semiring: Semiring,
    out: torch.Tensor | None = None,
    tab_t: torch.Tensor | None = None,
    link: TableGradLink | None = None,
    transposed: bool = False,
    dense: bool = False,
    work: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Messages to one scope position from the cavities ``q`` of the other: normalised in
    the exp forms, shifted to a largest state of 0 in the log form (:func:`_shift_bits`).
    ``link``, ``transposed``: see :func:`state_matvec`; ``dense``: every ``K x K`` term at
    once in both forms, with plain autograd, for the column tables of small problems;
    ``work``: with ``out`` and ``dense``, a ``(B, K, K, F)`` buffer for those terms, so that
    no-grad iterations allocate nothing; ``scratch``: likewise for the log form's loop over
    states, a flat buffer of at least ``2 B K F`` elements.

    ``out[b, a, f] = reduce_j (tab[j, a, f] + q[b, j, f])`` in bits (``q`` from beliefs shifted
    to a maximum of 0, see :class:`PairwiseTables`), ``reduce`` log2-sum-exp2 or max; ``tab`` is
    :attr:`PairwiseTables.to0` or ``to1``. The loop runs over the ``K`` states being summed
    out. Accumulators are updated in place, which is autograd-safe (neither ``mul`` nor
    ``addcmul`` saves the tensor it overwrites). With ``out`` given (no-grad only), the result
    is written there and ``q`` is overwritten.

    Shape:
        ``tab``: ``(K, K, F)``; ``q``, ``out``: ``(B, K, F)``; output: ``(B, K, F)``.
    """
    K = q.shape[1]
    inplace = out is not None
    if form != "log":  # sum-product, exp domain: a batched matrix-vector product
        if form == "exp_shifted":
            q = q.sub_(q.amax(dim=1, keepdim=True)) if inplace else q - q.detach().amax(1, True)
        p = torch.exp2(q, out=q if inplace else None)
        if dense:  # 2 ops instead of K (a K^2 intermediate; small problems)
            terms = torch.mul(tab.unsqueeze(0), p.unsqueeze(2), out=work if inplace else None)
            acc = torch.sum(terms, dim=1, out=out)
        else:
            acc = state_matvec(tab, tab_t, p, out, link, transposed)
        lse = acc.sum(dim=1, keepdim=True).log2()
        if form == "exp_shifted":  # unchecked: a contradiction gives zeros, never -inf - -inf
            lse = lse.clamp_min(NEG_BITS)
        msg = torch.log2(acc, out=acc).sub_(lse) if inplace else acc.log2() - lse
        # "exp": every entry of acc is positive (see PairwiseTables), no -inf to clamp
        return msg if form == "exp" else msg.clamp_min_(NEG_BITS)
    if dense or q.shape[0] * K * K * q.shape[2] <= _BROADCAST_MAX:
        # small: all K x K terms at once (7 ops instead of 6 K; a K^2 intermediate). No floor
        # before exp2 as in floored_exp: exp2 slows down where it underflows too (2.2-2.5x
        # with half the entries at -130 to -200 bits, less than exp's 5-25x), but a floor
        # made no measurable difference on CSP_11, where this runs (2026-11-29)
        if inplace and work is not None:  # in the buffers: work, then q (free once read)
            x = torch.add(tab.unsqueeze(0), q.unsqueeze(2), out=work)  # (B, K_j, K_a, F)
            if semiring == "max":
                return _shift_bits(torch.amax(x, dim=1, out=out), inplace)
            shift = torch.amax(x, dim=1, keepdim=True, out=q.unsqueeze(1))
            x.sub_(shift).exp2_()
            res = torch.sum(x, dim=1, out=out).log2_().add_(q)
            return _shift_bits(res, inplace)
        x = tab.unsqueeze(0) + q.unsqueeze(2)  # (B, K_j, K_a, F)
        if semiring == "max":
            res = x.amax(dim=1)
        else:
            shift = x.detach().amax(dim=1, keepdim=True)
            res = torch.exp2(x - shift).sum(dim=1).log2() + shift.squeeze(1)
        return _shift_bits(res if out is None else out.copy_(res), inplace)
    if not inplace and torch.is_grad_enabled() and (tab.requires_grad or q.requires_grad):
        return _shift_bits(LogStateReduce.apply(tab, q, semiring), False)
    return _shift_bits(log_state_reduce(tab, q, semiring, out, scratch), inplace)


def log_state_reduce(
    tab: torch.Tensor,
    q: torch.Tensor,
    semiring: Semiring,
    out: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out[b, a, f] = reduce_j (tab[j, a, f] + q[b, j, f])`` (log2-sum-exp2 or max) by a loop
    over the ``K`` states ``j`` summed out, without a ``K^2`` intermediate: the log form of
    :func:`_contract` before its shift. With ``out`` given (no-grad only), the result is
    written there, its terms formed in ``scratch`` (see :func:`_log_terms`). Under autograd
    :class:`LogStateReduce` wraps it with a hand-written backward; recorded op by op it is
    that function's twin in the tests.

    Shape:
        ``tab``: ``(K, K, F)``; ``q``, ``out``: ``(B, K, F)``; output: ``(B, K, F)``.
    """
    top, lse = _log_terms(tab, q, semiring, out, scratch)
    if lse is None:
        return top
    return lse.add_(top) if out is not None else lse + top


def _log_terms(
    tab: torch.Tensor,
    q: torch.Tensor,
    semiring: Semiring,
    out: torch.Tensor | None,
    scratch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`log_state_reduce` in two parts: the largest term ``top`` and, for
    log2-sum-exp2, ``lse = log2 sum_j exp2(term_j - top)`` (``None`` for max); the result is
    their sum. Kept apart for :class:`LogStateReduce`'s backward: at sentinel magnitudes
    (``1e30``) the sum rounds ``lse`` away. With ``out``, ``top`` (max) or ``lse`` is written
    there, and each term is formed in one buffer: ``scratch`` (a flat buffer of at least
    ``2 B K F`` elements, e.g. a workspace's) or one allocated here, instead of one or two
    fresh tensors per state (on CPU, fresh memory faults in page by page: the log form's
    no-grad forward on a 300 x 300 grid with ``K = 8`` faulted in about 100 MB per
    iteration, 2026-12-07). Shape: ``(B, K, F)`` each."""
    K = q.shape[1]
    if out is not None:
        n = q.numel()
        term = torch.empty_like(q) if scratch is None else scratch[:n].view(q.shape)
        top = torch.add(tab[0], q[:, 0:1], out=out)
        for j in range(1, K):
            torch.maximum(top, torch.add(tab[j], q[:, j : j + 1], out=term), out=top)
        if semiring == "max":
            return top, None
        # (apart from the term: LogStateReduce keeps the shift for its backward)
        shift = top.clone() if scratch is None else scratch[n : 2 * n].view(q.shape).copy_(top)
        acc = torch.add(tab[0], q[:, 0:1], out=out).sub_(shift).exp2_()
        for j in range(1, K):
            acc.add_(torch.add(tab[j], q[:, j : j + 1], out=term).sub_(shift).exp2_())
        return shift, acc.log2_()
    top = tab[0] + q[:, 0:1]
    for j in range(1, K):
        top = torch.maximum(top, tab[j] + q[:, j : j + 1])
    if semiring == "max":
        return top, None
    # the result does not depend on the shift, nor does the gradient
    shift = top.detach()
    acc = torch.exp2(tab[0] + q[:, 0:1] - shift)
    for j in range(1, K):
        acc = acc + torch.exp2(tab[j] + q[:, j : j + 1] - shift)
    return shift, acc.log2()


class LogStateReduce(torch.autograd.Function):
    """:func:`log_state_reduce` with a hand-written backward. Recorded op by op, its loop
    saves ``2 K`` tensors of ``(B, K, F)`` and its backward runs about ``8 K`` ops; here the
    forward saves its inputs and the parts of its output (:func:`_log_terms`). The backward
    forms each term's weight in the result (``exp2(term - top - lse)`` for log2-sum-exp2; for
    max, its share of the maximum, split evenly between tied terms as ``torch.amax`` does),
    times the output gradient, summed over the states ``a`` (``q``'s gradient) and over the
    batch (``tab``'s). With one batch row and a table per factor those products *are* the
    table's gradient: all ``j`` at once, in its buffer, about 6 ops (max-product's backward on
    a 100 x 100 grid, K = 8: 11.8-13.5 to 9.2-9.8 ms per iteration, 2026-12-07). Otherwise
    it loops over ``j`` in place in one ``(B, K, F)`` buffer.

    Shape:
        ``tab``: ``(K, K, F)``; ``q``: ``(B, K, F)``; output: ``(B, K, F)``.
    """

    @staticmethod
    def forward(ctx: Any, tab: torch.Tensor, q: torch.Tensor, semiring: Semiring) -> torch.Tensor:
        top, lse = _log_terms(tab, q, semiring, torch.empty_like(q))
        ctx.semiring = semiring
        if lse is None:
            ctx.save_for_backward(tab, q, top, None)
            return top
        ctx.save_for_backward(tab, q, top, lse)
        return lse + top

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        tab, q, res, lse = ctx.saved_tensors  # (sum: res is the largest term)
        K = q.shape[1]
        need_tab, need_q = ctx.needs_input_grad[:2]
        # (contiguous, each j's slice too: out= views, which torch.compile traces)
        g_tab = tab.new_empty(tab.shape) if need_tab else None
        if g_tab is not None and q.shape[0] == 1 and tab.shape[2] == q.shape[2]:
            # one batch row and a table per factor: the weights of all j at once are the
            # table's gradient, in a few whole-buffer ops (K-fold fewer than the loop)
            w = g_tab.unsqueeze(1)  # (K, 1, K, F)
            torch.add(tab.unsqueeze(1), q.transpose(0, 1).unsqueeze(2), out=w)
            if ctx.semiring == "max":
                g = g / w.eq_(res).sum(dim=0)
            else:
                w.sub_(res).sub_(lse).exp2_()
            w.mul_(g)
            return g_tab, w.sum(dim=2).transpose(0, 1) if need_q else None, None
        g_q = q.new_empty(K, q.shape[0], q.shape[2]) if need_q else None  # (K, B, F)
        buf = torch.empty_like(res)
        if ctx.semiring == "max":  # the tied maxima of each output share its gradient
            count = torch.zeros_like(res)
            for j in range(K):
                count.add_(torch.add(tab[j], q[:, j : j + 1], out=buf).eq_(res))
            g = g / count
        for j in range(K):
            w = torch.add(tab[j], q[:, j : j + 1], out=buf)
            if ctx.semiring == "max":
                w.eq_(res)
            else:
                w.sub_(res).sub_(lse).exp2_()
            w.mul_(g)
            if g_q is not None:
                torch.sum(w, dim=1, out=g_q[j])
            if g_tab is not None:  # (a shared table: one column, read by every factor)
                if tab.shape[2] == w.shape[2]:
                    torch.sum(w, dim=0, out=g_tab[j])
                else:
                    torch.sum(w, dim=(0, 2), out=g_tab[j, :, 0])
        return g_tab, None if g_q is None else g_q.transpose(0, 1), None


def pairwise_messages(
    q: torch.Tensor,
    tables: Sequence[PairwiseTables],
    sizes: Sequence[int],
    semiring: Semiring,
    out: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """New messages of every pairwise column (see :func:`_contract`), plus the zero padding
    column.

    Args:
        q: cavities (variable-to-factor messages) of every column, in the column layout of the
            module docstring (without padding).
        tables: per unit (see the module docstring), :func:`pairwise_tables`.
        sizes: per unit, its number of factors ``F_u`` (the unit spans ``2 F_u`` columns).
        out: where to write the result (no-grad only; ``q`` is then overwritten); ``None``:
            allocate.
        scratch: with ``out``, a flat buffer of at least ``2 B K P`` elements for the log
            form's terms (see :func:`_log_terms`); ``None``: allocated per contraction.

    Shape:
        ``q``: ``(B, K, P)``; output: ``(B, K, P + 1)``.
    """
    B, K, P = q.shape
    parts = []
    start = 0
    for tab, n in zip(tables, sizes, strict=True):
        for dst, src, t, tt, transposed in (
            (start, start + n, tab.to0, tab.to1, True),
            (start + n, start, tab.to1, tab.to0, False),
        ):
            o = None if out is None else out.narrow(2, dst, n)
            qs = q.narrow(2, src, n)
            parts.append(
                _contract(t, tab.form, qs, semiring, o, tt, tab.grad, transposed, scratch=scratch)
            )
        start += 2 * n
    if out is not None:
        out.narrow(2, P, 1).zero_()
        return out
    # the two halves of each group were computed in the order (to 0, to 1): columns in order
    parts.append(q.new_zeros(B, K, 1))
    return torch.cat(parts, dim=2)


_COLUMNS_MAX = 1 << 18
"""Flooding BP and mean-field on the pairwise fast path contract all message columns at once
(:func:`column_tables`, :func:`column_messages`) while ``B K^2 P`` is at most this many terms:
a few ops per iteration whatever the number of units, where small graphs are bound by per-op
overhead; above it, per unit and direction, without a ``K^2`` intermediate. Tests set it to 0
to run the per-unit contraction on small graphs."""


def column_tables(
    to1s: Sequence[torch.Tensor], sizes: Sequence[int], out: torch.Tensor | None = None
) -> torch.Tensor:
    """One table per message column, in the column layout of the module docstring: for the
    column of the message to scope position ``i`` of factor ``f``, ``W[j, a, col]`` is ``f``'s
    table entry with state ``a`` at position ``i`` and ``j`` at the other position. Shared
    tables are repeated for each of their factors (small problems only, see
    :data:`_COLUMNS_MAX`); plain autograd.

    Args:
        to1s: per unit, its state-major table ``to1[a, c, f] = theta[f, a, c]``.
        sizes: per unit, its number of factors ``F_u``.
        out: a buffer for the result (no-grad only).

    Shape:
        ``to1s[u]``: ``(K, K, F_u or 1)``; ``out``, output: ``(K, K, P)``,
        ``P = 2 sum_u F_u``.
    """
    parts = []
    for to1, n in zip(to1s, sizes, strict=True):
        K = to1.shape[0]
        parts += [to1.transpose(0, 1).expand(K, K, n), to1.expand(K, K, n)]
    return torch.cat(parts, dim=2, out=out)


class ColumnTable(NamedTuple):
    """Every pairwise column's table (:func:`column_tables`), in one contraction form (see
    :class:`PairwiseTables`: ``"exp"``, ``"exp_shifted"`` or ``"log"``, bits).

    Shape:
        ``table``: ``(K, K, P)``.
    """

    form: Literal["exp", "exp_shifted", "log"]
    table: torch.Tensor


def column_messages(
    q: torch.Tensor,
    tables: ColumnTable,
    semiring: Semiring,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """New messages of every pairwise column at once (see :func:`_contract`), plus the zero
    padding column.

    Args:
        q: per column, the cavity of its *partner* column (the other scope position of the
            same factor), in bits: ``q[:, j, col]`` is summed out against
            ``tables.table[j, :, col]``.
        out: where to write the result (no-grad only; ``q`` is then overwritten); ``None``:
            allocate.

    Shape:
        ``q``: ``(B, K, P)``; ``tables.table``: ``(K, K, P)``; output: ``(B, K, P + 1)``.
    """
    B, K, P = q.shape
    o = None if out is None else out.narrow(2, 0, P)
    new = _contract(tables.table, tables.form, q, semiring, o, dense=True)
    if out is None:
        return torch.cat([new, q.new_zeros(B, K, 1)], dim=2)
    out.narrow(2, P, 1).zero_()
    return out


def state_major_to_edges(msg: torch.Tensor, units: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Per group, natural-log messages in the general path's edge order ``(f, position)``.

    Args:
        units: per unit (see the module docstring), its groups' factor counts ``F_g``.

    Shape:
        ``msg``: ``(B, K, P + 1)`` bits; output ``[g]``: ``(B, 2 F_g, K)``, the groups of all
        units in order.
    """
    B, K, _ = msg.shape
    out = []
    start = 0
    for sizes in units:
        n = sum(sizes)
        block = msg.narrow(2, start, 2 * n).reshape(B, K, 2, n).permute(0, 3, 2, 1)
        out += [b.reshape(B, 2 * b.shape[1], K) / LOG2E for b in block.split(list(sizes), 1)]
        start += 2 * n
    return out


class ColumnSweep:
    """The flooding iterations of the column contraction without autograd: the loop of a
    forward under ``torch.no_grad()`` on buffers allocated once and reused, with every index
    and view prepared before the first iteration.

    On small graphs an iteration is about 17 ops of a few microseconds each, and the Python
    around them (buffer lookups, workspace requests, views, the step's branches) cost as much
    again: CSP_11 ran 168 us per iteration as a bare loop of these ops against 351 us through
    the network's step (2026-11-29). Cavities are formed by subtraction from the beliefs, or,
    with ``exact_pos`` (hard zeros), as exclusive sums of the other slots
    (:func:`~pgmunfold.infer.bp.slot_cavities`, never a subtraction). The functional step
    (``UnfoldedNetwork._pairwise_step`` with a :class:`ColumnTable`) is its twin in the tests,
    and the path under autograd.

    Args:
        slots: ``(D' * V,)`` the pairwise columns of each variable (``pw_slots_t``).
        buckets: per bucket of high-degree variables, its variables ``(V_j,)`` and columns
            ``(W_j * V_j,)``.
        partner_var: ``(P,)`` the variable at the other scope position of each column.
        partner: ``(P,)`` the column of that other scope position.
        msg: the initial messages ``(B, K, P + 1)`` (bits, last column 0).
        field: the variables' field ``(B, K, V)`` (bits).
        damping: log-domain damping (0: none).
        semiring: ``"sum"`` or ``"max"``.
        exact_pos: exact cavities: ``(P,)`` the position of each column's partner in the
            flattened slot layout (``pw_partner_pos``); ``None``: cavities by subtraction.
        ws: an enabled workspace whose buffers (names ``cs_*``) the loop uses; ``None``:
            buffers of its own.

    Shape:
        :attr:`messages`, :attr:`previous`: ``(B, K, P + 1)``.
    """

    def __init__(
        self,
        slots: torch.Tensor,
        buckets: Sequence[tuple[torch.Tensor, torch.Tensor]],
        partner_var: torch.Tensor,
        partner: torch.Tensor,
        msg: torch.Tensor,
        field: torch.Tensor,
        damping: float,
        semiring: Semiring,
        exact_pos: torch.Tensor | None = None,
        ws: Workspace | None = None,
    ) -> None:
        B, K, P1 = msg.shape
        V = field.shape[2]
        self.slots, self.buckets = slots, tuple(buckets)
        self.partner_var, self.partner, self.exact_pos = partner_var, partner, exact_pos
        self.damping, self.semiring = damping, semiring
        self.field = field

        def buf(name: str, *shape: int) -> torch.Tensor:
            b = None if ws is None else ws(f"cs_{name}", shape, msg)
            return msg.new_empty(shape) if b is None else b

        self._msgs = [buf("msg0", B, K, P1).copy_(msg), buf("msg1", B, K, P1).copy_(msg)]
        self._flat = [m.view(B * K, P1) for m in self._msgs]
        self._new = [m[:, :, :-1] for m in self._msgs]
        self._inc = buf("inc", B * K, slots.shape[0])
        self._inc4 = self._inc.view(B, K, -1, V)
        self._bel = buf("bel", B, K, V)
        self._bel_flat = self._bel.view(B * K, V)
        self._q = buf("q", B * K, P1 - 1)
        self._q3 = self._q.view(B, K, P1 - 1)
        self._own = buf("own", B * K, P1 - 1)
        self._work = buf("work", B, K, K, P1 - 1)  # the contraction's K x K terms
        self.t = 0

    @property
    def messages(self) -> torch.Tensor:
        """The messages of the last iteration."""
        return self._msgs[self.t % 2]

    @property
    def previous(self) -> torch.Tensor:
        """The messages of the iteration before the last (the initial ones before any)."""
        return self._msgs[(self.t + 1) % 2 if self.t else 0]

    def step(self, tables: ColumnTable) -> None:
        """One iteration with every column's table ``tables``."""
        s = self.t % 2
        flat = self._flat[s]
        torch.index_select(flat, 1, self.slots, out=self._inc)
        B, K = self._bel.shape[:2]
        if self.exact_pos is not None:  # hard zeros: exclusive sums, shifted per slot
            parts = [self._inc4]
            parts += [flat.index_select(1, sl).view(B, K, -1, v.shape[0]) for v, sl in self.buckets]
            cav = slot_cavities(self.field, parts, [v for v, _ in self.buckets], dim=2)
            cav.sub_(cav.amax(dim=1, keepdim=True))
            torch.index_select(cav.view(B * K, -1), 1, self.exact_pos, out=self._q)
        else:
            bel = torch.sum(self._inc4, dim=2, out=self._bel)
            for v, sl in self.buckets:
                part = flat.index_select(1, sl).view(B, K, -1, v.shape[0]).sum(dim=2)
                bel.index_add_(2, v, part)
            bel.add_(self.field)
            bel.sub_(bel.amax(dim=1, keepdim=True))  # the messages do not depend on this shift
            torch.index_select(self._bel_flat, 1, self.partner_var, out=self._q)
            self._q.sub_(torch.index_select(flat, 1, self.partner, out=self._own))
        new = self._new[1 - s]
        _contract(
            tables.table, tables.form, self._q3, self.semiring, new, dense=True, work=self._work
        )
        if self.damping != 0.0:
            torch.lerp(self._msgs[1 - s], self._msgs[s], self.damping, out=self._msgs[1 - s])
        self.t += 1
