"""`UnfoldedNetwork`: T iterations of loopy BP or mean-field as an ``nn.Module``.

:func:`compile` walks the graph once (numpy): it builds the wiring (flat index buffers), the
schedule (colour classes for sequential updates) and the parameter plan (which iterations share a
copy of each factor group's log-potentials). ``forward`` is then pure batched tensor operations:
a static loop over iterations, colour classes and factor groups, never over factors, variables or
edges.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from pgmunfold.beliefs import Beliefs, Deferred
from pgmunfold.compile.enumerate import (
    BUCKET_OVERHEAD,
    StateLayout,
    bucketed_size,
    enumeration_size,
    plan_buckets,
    plan_layouts,
    plan_sweep,
)
from pgmunfold.compile.schedule import factor_colouring, variable_colouring
from pgmunfold.compile.wiring import (
    GroupWiring,
    Wiring,
    base_width,
    build_wiring,
    plan_slots,
    run_rank,
)
from pgmunfold.graph import FactorGraph, GraphError, VariableArray
from pgmunfold.infer import pairwise
from pgmunfold.infer.binary import (
    BinarySweep,
    ExpForm,
    binary_messages,
    exp_form_coefficients,
    exp_form_limit,
    interaction,
    log_odds_to_log_messages,
    pairwise_coefficients,
)
from pgmunfold.infer.bp import (
    Slots,
    bp_cavities,
    bp_factor_log_beliefs,
    bp_factor_messages,
    shift_to_max,
    slot_cavities,
    variable_beliefs,
)
from pgmunfold.infer.enumerated import (
    EnumeratedSweep,
    FlatStep,
    SweepLayout,
    SweepWiringTensors,
    bucketed_expectations,
    bucketed_messages,
)
from pgmunfold.infer.free_energy import bethe_log_partition, mean_field_bound, score_states
from pgmunfold.infer.fused import (
    FusedWiring,
    fused_beliefs,
    fused_binary_messages,
    fused_factor_messages,
    fused_mf_messages,
    fused_mf_update,
    fused_tables,
    require_triton,
)
from pgmunfold.infer.meanfield import mf_expected_potentials, mf_field
from pgmunfold.infer.ops import (
    NEG,
    DensePairwise,
    dense_pairwise,
    dense_range_limit,
    gather_rows,
    log_normalize,
)
from pgmunfold.infer.pairwise import (
    LOG2E,
    NEG_BITS,
    ColumnSweep,
    ColumnTable,
    PairwiseTables,
    TableGradLink,
    column_messages,
    column_tables,
    link_table_grad,
    pairwise_messages,
    pairwise_tables,
    state_major_to_edges,
    state_matvec,
    unit_state_major,
)
from pgmunfold.infer.workspace import Workspace, WorkspacePool

__all__ = ["UnfoldedNetwork", "compile"]

Algorithm = Literal["bp", "mf"]
Schedule = Literal["parallel", "sequential"]
SemiringName = Literal["sum", "max"]
Contraction = Literal["auto", "logsumexp", "matmul", "enumerate"]

UntieSpec = bool | Iterable[str]


def _param_key(name: str, taken: set[str]) -> str:
    key = re.sub(r"[^0-9A-Za-z_\[\]x#-]", "_", name) or "group"
    base, k = key, 1
    while key in taken:
        k += 1
        key = f"{base}_{k}"
    taken.add(key)
    return key


def _neg_inf_below_sentinel(x: torch.Tensor) -> torch.Tensor:
    """Report log-values in the hard-zero regime as ``-inf``.

    Estimates below ``1e-15 * NEG = -1e15`` only arise from probability mass on ``-inf``
    entries (each contributes a multiple of the sentinel ``NEG``), where the exact value is
    ``-inf``.
    """
    return torch.where(x < 1e-15 * NEG, torch.full_like(x, -torch.inf), x)


def _raised(p: torch.Tensor) -> torch.Tensor:
    """``p`` with ``-inf`` (anything below the sentinel) raised to ``NEG``: ``p`` itself
    where nothing is that low, read on CPU, else a raised copy.

    A copy of every table per forward is a write pass over all the parameters, and on CPU a
    fresh allocation that faults in page by page: on the 300 x 300 grid with ``K = 8`` (46 MB
    of tables) it cost 35 ms of a 250 ms one-iteration forward, where reading the minimum
    costs about 4 ms (2026-12-07). The callers never write into the tables they get (a test
    checks every path). Off the CPU and while ``torch.compile`` traces, the copy stays: the
    check would be a host sync there, or a data-dependent branch.
    """
    if p.device.type != "cpu" or p.numel() < 65536 or torch.compiler.is_compiling():
        return p.clamp_min(NEG)  # (on a small table the copy costs less than the read)
    return p if bool(p.detach().amin() >= NEG) else p.clamp_min(NEG)


PAIRWISE_MAX_CARD = 64
"""Largest cardinality served by the pairwise fast path (its contraction loops over states)."""


def _refine_plan(plan: tuple[int, ...], start: int) -> tuple[int, ...]:
    """Give every iteration ``t >= start`` its own copy; earlier ones keep ``plan``'s sharing.

    Copies are renumbered in order of first use, so the result is ``0, 1, ...`` dense.
    """
    labels: list[tuple[int, int]] = [
        (0, plan[t]) if t < start else (1, t) for t in range(len(plan))
    ]
    ids: dict[tuple[int, int], int] = {}
    return tuple(ids.setdefault(lab, len(ids)) for lab in labels)


def _pad_last(x: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Pad the last (state) axis of ``x`` to ``size`` with ``value``."""
    k = x.shape[-1]
    return x if k == size else F.pad(x, (0, size - k), value=value)


def _select_columns(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``x[:, index]`` as an ``index_select``; for one row, a 1-d one. On CPU, one such op
    is 5-20 % faster on large rows; the binary path's iteration at N=300 runs about 25 %
    faster with it on 2 threads, and about 6 % slower at N=32 (measured 2026-11-27).

    Shape:
        ``x``: ``(B, N)``; ``index``: ``(M,)``; ``out``: ``(B, M)`` or ``None``; output: ``(B, M)``.
    """
    if x.shape[0] == 1:
        row = torch.index_select(x[0], 0, index, out=None if out is None else out[0])
        return row.unsqueeze(0)
    return torch.index_select(x, 1, index, out=out)


def _max_change(
    new: torch.Tensor,
    old: torch.Tensor,
    to_prob: Callable[..., torch.Tensor],
    ws: Workspace | None = None,
    names: tuple[str, str] = ("", ""),
    dim: int | None = None,
) -> torch.Tensor:
    """The residual of the message part: ``|p(new) - p(old)|``, maximised over all but the
    batch dimension, where ``p = to_prob`` (elementwise, e.g. ``sigmoid`` of log-odds) or, with
    ``dim``, ``to_prob`` (``exp`` or ``exp2`` of log-messages) normalised along ``dim``: damping
    in the log domain leaves messages unnormalised, and the residual is defined on normalised
    message probabilities, whatever the path. The array of changes is formed without
    autograd, in place: with an enabled workspace ``ws``, in its buffers ``names`` (scratch
    once the iterations are done), since a fresh array of every message costs page faults that
    measured here more than the sweep itself; without one, in fresh arrays. Under autograd the
    result is then recomputed, differentiably, from the arg-max entry of each batch row alone
    (with ``dim``, from the message holding it; the gradient of a maximum reaches only the
    maximising entries anyway; at a tie, this picks the first).

    Shape:
        ``new``, ``old``: ``(B, ...)``; output: ``(B,)``.
    """
    ws = ws if ws is not None else Workspace(False)
    differentiable = torch.is_grad_enabled() and (new.requires_grad or old.requires_grad)
    axis = None if dim is None else dim % new.dim()

    def probabilities(x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        if axis is None:
            return to_prob(x, out=out)
        p = torch.sub(x, x.amax(dim=axis, keepdim=True), out=out)
        p = to_prob(p, out=p)
        return p.div_(p.sum(dim=axis, keepdim=True))

    with torch.no_grad():
        a = probabilities(new, ws(names[0], tuple(new.shape), new))
        b = probabilities(old, ws(names[1], tuple(old.shape), old))
        change = a.sub_(b).abs_()
        if not differentiable:
            return change.amax(dim=tuple(range(1, new.dim())))
        top = change.view(new.shape[0], -1).argmax(dim=1)
    rows = torch.arange(new.shape[0], device=new.device)
    at = (rows, *torch.unravel_index(top, new.shape[1:]))
    if axis is None:
        return (to_prob(new[at]) - to_prob(old[at])).abs()
    message: list[Any] = list(at)
    message[axis] = slice(None)  # the whole message holding the entry: (B, K)

    def entry(x: torch.Tensor) -> torch.Tensor:
        z = x[tuple(message)]
        p = to_prob(z - z.amax(dim=1, keepdim=True))
        return (p / p.sum(dim=1, keepdim=True))[rows, at[axis]]

    return (entry(new) - entry(old)).abs()


def _map_states(log_marg: torch.Tensor) -> torch.Tensor:
    """Arg-max of each variable's marginal (the first state at a tie, like ``argmax``). For two
    states a comparison: 5-10x faster on CPU than an ``argmax`` over a size-2 axis.

    Shape:
        ``log_marg``: ``(B, V, K)``; output: ``(B, V)`` int64.
    """
    if log_marg.shape[2] == 2:
        return torch.gt(log_marg[:, :, 1], log_marg[:, :, 0]).long()
    return log_marg.argmax(dim=2)


class _FlatThetas(Sequence[torch.Tensor]):
    """Every group's log-potentials (all copies, ``-inf`` raised to the sentinel) as slices
    of one flat copy of the parameters, made by one concatenation per forward: ``flat``, the
    parameters flattened in group order, then ``tail`` (the enumerated contraction's hard
    zero and 0, which its gathers read for padding). A group's slice is raised to the
    sentinel when first read. A copy, not a view: what is read later (``log Z``, deferred)
    is what the forward saw.

    Shape:
        ``params[i]``: ``(copies, F_i or 1, *cards_i)``; ``flat``: ``(sum_i numel_i + 2,)``;
        ``self[i]``: ``params[i]``'s shape.
    """

    def __init__(self, params: Sequence[torch.Tensor], tail: torch.Tensor) -> None:
        parts = [p.reshape(-1) for p in params]
        self.shapes = [p.shape for p in params]
        self.sizes = tuple(x.shape[0] for x in parts)
        self.starts = [0, *itertools.accumulate(self.sizes)][:-1]
        self.flat = torch.cat([*parts, tail])
        self._read: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.shapes)

    @overload
    def __getitem__(self, i: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[torch.Tensor]: ...

    def __getitem__(self, i: int | slice) -> torch.Tensor | Sequence[torch.Tensor]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        i = range(len(self))[i]  # (negative indices; IndexError past the end)
        if i not in self._read:
            a = self.starts[i]
            x = self.flat[a : a + self.sizes[i]].view(self.shapes[i])
            self._read[i] = x.clamp_min(NEG)
        return self._read[i]


class _FoldedUnaries:
    """Unary factors on the fast paths. A unary factor's message is its (normalised) table
    whatever the cavity, so it is folded into the variables' field instead of occupying message
    slots. Across untied copies its message is damped exactly as on the general path, and a
    new message enters the next iteration's field.

    Messages are ``(F or 1,)`` log-odds (``log_odds=True``, binary path) or ``(F or 1, K)``
    normalised log-messages padded to the network's ``K`` states with hard zeros (pairwise
    path).
    """

    def __init__(
        self, net: UnfoldedNetwork, thetas: Sequence[torch.Tensor], log_odds: bool
    ) -> None:
        self.net, self.log_odds = net, log_odds
        idx = net._un_idx
        self.dynamic = any(max(net._copies(i)) > 0 for i in idx)
        self.scopes = net._scopes()
        self.messages = self.fresh(net._at(thetas, 0))
        self.previous = self.messages

    def _message(self, th: torch.Tensor) -> torch.Tensor:
        if self.log_odds:
            return th[:, 1] - th[:, 0]
        return log_normalize(_pad_last(th, self.net.max_card, NEG))

    def fresh(self, th: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Per unary group, its (undamped) message from the tables ``th``."""
        out = {}
        for i in self.net._un_idx:
            m = self._message(th[i])
            out[i] = m.expand(self.net._mgroups[i].num_factors, *m.shape[1:])
        return out

    def field(
        self, base: torch.Tensor, messages: dict[int, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``base`` plus every unary message (``messages``, default: the current damped ones),
        added to its variable.

        Shape:
            ``base``: ``(B, V, *S)``; output: the same.
        """
        for i, m in (self.messages if messages is None else messages).items():
            src = m.unsqueeze(0).expand(base.shape[0], *m.shape)
            base = base.index_add(1, self.scopes[i][:, 0], src)
        return base

    def update(self, th: list[torch.Tensor]) -> bool:
        """The new (damped) messages after an iteration with tables ``th``; whether they can
        differ from the old ones (only when a unary group is untied)."""
        self.previous = self.messages
        if not self.dynamic:
            return False
        new = self.fresh(th)
        d = self.net.damping
        self.messages = {i: torch.lerp(m, self.messages[i], d) for i, m in new.items()}
        return True

    def residual(self, pairwise: torch.Tensor) -> torch.Tensor:
        """The residual: the largest change of a message probability in the last iteration.

        Shape:
            ``pairwise``: ``(B,)``, the pairwise messages' part; output: ``(B,)``.
        """
        for i in self.messages if self.dynamic else ():
            new, old = self.messages[i], self.previous[i]
            if new.dim() == 1:  # log-odds
                change = (torch.sigmoid(new) - torch.sigmoid(old)).abs().amax()
            else:  # normalised: damping in the log domain leaves them unnormalised
                change = (torch.softmax(new, -1) - torch.softmax(old, -1)).abs().amax()
            pairwise = torch.maximum(pairwise, change)
        return pairwise


def _check_triton_backend(net: UnfoldedNetwork, pairwise_graph: bool) -> None:
    """``backend="triton"``'s conditions, checked at compile time (see :class:`UnfoldedNetwork`)."""
    need = {
        "schedule='parallel'": net.schedule == "parallel",
        "fast_path=True": net.fast_path,
        f"only unary and pairwise factors of at most {PAIRWISE_MAX_CARD} states, at least one "
        "pairwise": pairwise_graph,
        "no variable of a degree far above the rest (the fused kernels would pad every "
        f"variable's slots to the largest pairwise degree, {net._pairwise_degree}; the torch "
        "backend buckets them)": net._pairwise_compact,
    }
    missing = [k for k, ok in need.items() if not ok]
    if missing:
        raise ValueError(f"backend='triton' needs {'; '.join(missing)}")
    require_triton()


def _log_ranges(th: Sequence[torch.Tensor], groups: Iterable[int]) -> list[torch.Tensor]:
    """Per group of ``groups`` (indices into ``th``), per factor, the log-range of its table
    (about ``1e30`` or more with a hard zero). Shape: ``th[i]`` ``(F, k0, k1)``; output
    ``[j]``: ``(F,)``."""
    return [th[i].detach().amax(dim=(1, 2)) - th[i].detach().amin(dim=(1, 2)) for i in groups]


def _interaction_spreads(
    th: Sequence[torch.Tensor], ds: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Per binary pairwise group, per factor, ``|d|``
    (:func:`~pgmunfold.infer.binary.interaction`), or ``inf`` where the table has a hard zero
    (two of them can cancel in ``d``). Shape: ``th[i]`` ``(F, 2, 2)``, ``ds[i]`` ``(F, 1)``;
    output ``[i]``: ``(F,)``."""
    out = []
    for t, d in zip(th, ds, strict=True):
        hard = t.detach().amin(dim=(1, 2)) <= NEG / 2
        out.append(d.detach().abs().flatten().masked_fill(hard, float("inf")))
    return out


def _auto_range_ok(spread: torch.Tensor, limit: float) -> bool:
    """``contraction="auto"``'s one host read per forward: is a table group's log-range
    ``spread`` (a 0-d tensor) below ``limit``? Refused with a clear error during CUDA-graph
    capture, where a host read is illegal."""
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            'contraction="auto" reads the potentials\' log-range on the host once per forward, '
            "which CUDA-graph capture does not allow; compile the network with "
            'contraction="matmul" (exp-domain; on the GPU checked at compile time only) '
            'or "logsumexp" to capture it'
        )
    return float(spread) < limit


_ENUMERATE_SMALL = 1 << 18
"""``contraction="auto"``: up to this many gathered cavities (per iteration and batch row, see
:func:`~pgmunfold.compile.enumerate.bucketed_size`) the enumerated contraction is taken
whatever the factors: such graphs are bound by the per-op cost, where its fixed two dozen ops
per iteration beat the per-merge path's dozen per merge and scope position (``python -m
benchmarks.enumerated --algorithms bp mf``, this 2-core CPU, one thread, 2026-12-06: BP
1.9-6.7x, mean-field 1.3-4.3x faster on 8 x 8 and 32 x 32 grids of pairs and triplets,
K = 2 and 3, batches of 1 and 16; ``benchmarks/results/cpu_enumerated_20261206.txt``)."""

_ENUMERATE_LARGE = 1 << 20
"""``contraction="auto"``: up to this many gathered cavities, sequential mean-field (whose
enumerated step is padded, ``(B, V, K)``) takes the enumerated contraction for graphs with
factors of arity 3 or more whose padding is at most 4x (1.5-1.6x faster on a 128 x 128 grid of
triplets, K = 2, 774k gathered, measured on the parallel schedule before its flat loop).
Beyond it the gather's memory traffic decided (K = 3, 2.6M gathered: 0.79-0.87x), and pairwise
graphs keep the per-merge path with its exp-domain matmul (1.0-1.3x at 128 x 128)."""

_ENUMERATE_LARGE_BP = 1 << 24
"""``contraction="auto"``: up to this many gathered cavities, the flat loops (flooding BP,
parallel mean-field) take the enumerated contraction whatever the arity, while the padding is
at most 4x. BP, with its no-grad sweep and row buckets: 2.5-5.6x faster than the per-merge path
on 128 x 128 and 256 x 256 grids of triplets (K = 2 and 3, up to 10.5M gathered, batches of 1
and 16) and 1.5-3.0x on grids of pairs (2026-12-06). Parallel mean-field in the flat layout:
1.07-3.4x on the same grids of pairs and triplets, the 10.5M row included (``python -m
benchmarks.enumerated --algorithms mf --sizes 128 256 --ks 2 3 --arities 2 3 --batches 1 16``,
2026-12-07). Beyond, untested: the per-merge path. It costs memory: on the 256 x 256 triplets
at K = 3 with 16 batch rows, BP peaked at 2.4 GB RSS against 0.9 GB per merge."""


def _enumeration_pays(gathered: int, real: int, max_arity: int, flat: bool) -> bool:
    """``contraction="auto"``'s choice for the general path (see :data:`_ENUMERATE_SMALL`,
    :data:`_ENUMERATE_LARGE`, :data:`_ENUMERATE_LARGE_BP`): ``gathered`` cavities per iteration
    and batch row, ``real`` of them without padding; ``flat``: the flat loops run (flooding BP,
    parallel mean-field), else sequential mean-field's padded step."""
    if gathered <= _ENUMERATE_SMALL:
        return True
    if flat:
        return gathered <= min(_ENUMERATE_LARGE_BP, 4 * real)
    return max_arity >= 3 and gathered <= min(_ENUMERATE_LARGE, 4 * real)


_PAIRWISE_PADDING_ROUTE = 8
"""``contraction="auto"`` takes the general path's enumerated contraction instead of the pairwise
fast paths (flooding BP, parallel mean-field) where the pairwise paths' ``K x K`` tables hold at
least this many times the entries of the real ones (mixed cardinalities) and the enumeration pays
(:func:`_enumeration_pays`). Its loops
(:class:`~pgmunfold.infer.enumerated.EnumeratedSweep` without autograd,
:class:`~pgmunfold.infer.enumerated.FlatStep` with; for mean-field ``FlatStep.mf_step``) keep only
the states that exist. Measured on CPU (one thread, ``python -m benchmarks.mixed_cardinality
--grad``: a chain of 100000 binary variables with one ``k``-state variable; ms per iteration, the
pairwise path with ``"matmul"`` against the enumerated contraction, no grad, then forward and
backward): ``k = 4`` (4x padding): 8.8 against 9.8, 24.0 against 28.7; ``k = 5`` (6.25x): 10.9
against 8.0, 30.4 against 31.5; ``k = 6`` (9x): 14.3 against 8.6, 39.1 against 33.4; ``k = 8``
(16x): 19.0 against 8.5, 54.7 against 33.6; ``k = 64`` (1024x): 990 against 12.7, 2518 against 47.
Mean-field (``--algorithm mf``, the pairwise path with ``"logsumexp"``): ``k = 4`` 8.7 against 9.7,
22.2 against 22.0; ``k = 6`` 13.1 against 8.0, 37.3 against 15.7; ``k = 64`` 1075 against 14.9, 2982
against 37."""

_ENUM_INDEX_KEPT = 1 << 24
"""The most int64 entries (128 MB) of the enumerated contraction's per-iteration table indices
kept between forwards (:meth:`UnfoldedNetwork._enumerated_index`)."""

_COMPILED_STEPS = ("_bp_step", "_mf_step", "_pairwise_step", "_mf_pairwise_step")
"""The iterations ``compile_steps=True`` compiles: the general path's and the pairwise fast
path's (BP and mean-field)."""


class UnfoldedNetwork(nn.Module):
    """Loopy BP or mean-field on a factor graph, unfolded into ``iterations`` layers.

    The trainable parameters are the factor groups' log-potentials, in :attr:`potentials`
    (``nn.ParameterDict``, one entry per group, keyed by the group's name), each of shape
    ``(P, F, *cards)``: ``P`` copies (1 when tied; one per untied iteration otherwise) of the
    group's ``F`` stacked tables (``F = 1`` for a shared table). Iteration ``t`` uses copy
    ``copy_index[key][t]``.

    Args:
        graph: the factor graph (read once; later changes to it are not seen).
        algorithm: ``"bp"`` (loopy belief propagation) or ``"mf"`` (naive mean-field).
        iterations: number of layers ``T`` (BP: flooding iterations or sequential sweeps; MF:
            parallel updates or sequential sweeps over the variable colour classes).
        damping: ``d`` in ``[0, 1)``; BP mixes log-messages ``(1-d) new + d old``, MF mixes
            marginals the same way.
        schedule: ``"parallel"`` (flooding) or ``"sequential"`` (colour classes: factors for BP,
            variables for MF, updated one class after another within each iteration).
        semiring: ``"sum"`` (marginals) or ``"max"`` (max-marginals, MAP decode); BP only.
        untie: ``False`` (one copy of the potentials for all iterations), ``True`` (one copy per
            iteration, every group), or an iterable of group names to untie.
        untie_last: untie only the last ``C`` iterations (earlier ones share one copy).
        exact_cavity: form BP cavities as exclusive sums (exact with hard zeros) rather than by
            subtraction; default: only when some table holds ``-inf``.
        dtype: floating dtype of the potentials and float buffers (default: torch's default).
            A later ``.to(torch.float64)`` is equally exact for potentials that still hold
            their declared values (they are reloaded from the float64 tables; see ``_apply``).
        fast_path: use specialised kernels where they apply, all for unary and pairwise
            factors only with the parallel schedule: flooding BP on binary variables with
            finite tables (scalar log-odds messages, ``binary_fast``); other flooding BP
            (state-major messages, ``pairwise_fast``); parallel mean-field (``mf_fast``; on
            binary variables with finite tables in log-odds form, ``mf_binary``). The
            general path computes the same function; ``False`` forces it. When a few
            variables have a degree far above the rest (a hub), their extra edges are kept in
            buckets (:class:`~pgmunfold.compile.wiring.SlotPlan`) rather than padding every
            variable to the largest degree; ``mf_binary`` then gives way to the state-major
            mean-field path.
        checkpoint: memory-bounded training: each iteration's intermediate activations are
            recomputed in the backward pass (``torch.utils.checkpoint``), so only the messages
            between iterations are kept; costs about one extra forward pass.
        contraction: how flooding BP contracts factor tables. ``"logsumexp"``: the general
            log-domain reduction, per merge of groups. ``"matmul"`` (sum-product): one batched
            matrix-vector product in the exp domain per pairwise merge
            (:func:`~pgmunfold.infer.ops.dense_pairwise_messages`), exact while a table's
            log-range is below 60 (float32) / 600 (float64) nats (binary factors: the
            interaction ``|t11 - t10 - t01 + t00|`` below 80 / 700) and the tables have no hard
            zero (with one, strong evidence made a third of small random models wrong). Checked
            here on the declared tables (``ValueError`` naming the group, the factor and its
            scope), and again in each forward on CPU; unchecked on other devices and under
            ``torch.compile`` tracing (no host read: CUDA graphs can capture it).
            ``"enumerate"`` (general path; BP with ``schedule="parallel"``, sum- or
            max-product; mean-field): every
            configuration of every factor as one flat entry, so the messages of all groups,
            whatever their arity and cardinalities, take a fixed two dozen ops per iteration
            (:mod:`pgmunfold.infer.enumerated`; mean-field's expected log-potentials take a
            product of the other edges' marginals where BP sums cavities); per batch row it
            gathers, for every message entry of a state that exists, the other edges' cavities of
            every configuration behind it, padded within a few row buckets
            (:func:`~pgmunfold.compile.enumerate.bucketed_size`). ``"auto"`` (default) takes
            ``"enumerate"`` on the general path when ``compile_steps`` is off (compiled, the
            per-merge contraction is faster) and that gather is at most ``2**18`` entries, or,
            with at most 4x padding, up to ``2**24`` for BP and parallel mean-field and
            ``2**20`` for sequential mean-field with factors of arity 3 or more (measured on
            CPU); for flooding BP and parallel
            mean-field on a pairwise graph it also takes it instead of the pairwise fast paths
            when mixed cardinalities make their ``K x K`` tables at least 8x padding
            (:data:`_PAIRWISE_PADDING_ROUTE`; pass ``"matmul"`` or ``"logsumexp"`` to keep the
            pairwise path);
            else ``"matmul"`` per merge and forward
            when the range check passes (one scalar read per merge per forward: use ``"matmul"`` or
            ``"logsumexp"`` explicitly under CUDA-graph capture). The fast paths run their own
            contractions (``fast_path=False`` forces the general path).
        backend: ``"torch"`` (default) or ``"triton"``: flooding BP and parallel mean-field on
            the pairwise fast paths (binary variables included) run two fused Triton kernels
            per iteration (:mod:`pgmunfold.infer.fused`; BP's log-domain reductions run in
            registers, so ``contraction`` does not apply) when no gradient is recorded; under
            autograd the torch kernels run (the same function). Needs CUDA tensors (or
            Triton's interpreter, ``TRITON_INTERPRET=1``, for tests), the ``triton`` package,
            ``schedule="parallel"``, ``fast_path=True``, unary and pairwise factors of at most
            64 states, no hub (checked here). Hard zeros are allowed (exact cavities are then summed
            in the factor kernel).
        compile_steps: compile the iteration with ``torch.compile``, once, and run every
            iteration through it: the dozens of small ops of an iteration become a few fused
            kernels. Applies to the general path (BP and mean-field, both schedules) and the
            pairwise fast path (flooding BP and parallel mean-field, without its reused
            buffers); the binary log-odds paths and ``backend="triton"`` run their own loops.
            For small models, where per-op overhead dominates (UAI's Pedigree_11 on CPU: 3.8x
            faster per iteration with the per-merge contraction, after about 6 s of compilation
            at the first forward; the enumerated contraction, eager, is now as fast, and
            ``"auto"`` takes the per-merge one here; see docs/howto/performance.md).

    Shape:
        ``forward(evidence, unary)`` returns :class:`~pgmunfold.Beliefs` whose tensors have a
        leading batch dimension ``B`` when ``unary`` or ``evidence`` carried one.
    """

    var_slots: torch.Tensor
    edge_slot: torch.Tensor
    edge_var: torch.Tensor
    cards: torch.Tensor
    degree: torch.Tensor
    base_unary: torch.Tensor
    state_absent: torch.Tensor
    colour_masks: torch.Tensor
    bin_slots_t: torch.Tensor
    bin_partner_edge: torch.Tensor
    bin_partner_var: torch.Tensor
    bin_state_slots: torch.Tensor
    bin_cavity_index: torch.Tensor
    bin_slot_partner_q1: torch.Tensor
    pw_var: torch.Tensor
    pw_slots_t: torch.Tensor
    pw_partner_var: torch.Tensor
    pw_partner: torch.Tensor
    pw_partner_pos: torch.Tensor
    pw_slot_pos: torch.Tensor
    fused_col0: torch.Tensor
    fused_col1: torch.Tensor
    fused_var0: torch.Tensor
    fused_var1: torch.Tensor
    fused_table: torch.Tensor
    fused_slots: torch.Tensor
    fused_lo_slots: torch.Tensor
    fused_lo_col0: torch.Tensor
    fused_lo_col1: torch.Tensor

    def __init__(
        self,
        graph: FactorGraph,
        algorithm: Algorithm = "bp",
        iterations: int = 50,
        damping: float = 0.0,
        schedule: Schedule = "parallel",
        semiring: SemiringName = "sum",
        untie: UntieSpec = False,
        untie_last: int | None = None,
        exact_cavity: bool | None = None,
        dtype: torch.dtype | None = None,
        fast_path: bool = True,
        checkpoint: bool = False,
        contraction: Contraction = "auto",
        backend: Literal["torch", "triton"] = "torch",
        compile_steps: bool = False,
        *,
        _wiring: Wiring | None = None,
        _plan: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        if algorithm not in ("bp", "mf"):
            raise ValueError(f"algorithm must be 'bp' or 'mf', got {algorithm!r}")
        if schedule not in ("parallel", "sequential"):
            raise ValueError(f"schedule must be 'parallel' or 'sequential', got {schedule!r}")
        if semiring not in ("sum", "max"):
            raise ValueError(f"semiring must be 'sum' or 'max', got {semiring!r}")
        if algorithm == "mf" and semiring != "sum":
            raise ValueError("mean-field has no max-product form: use semiring='sum' with 'mf'")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        if not (isinstance(damping, int | float) and 0.0 <= float(damping) < 1.0):
            raise ValueError(f"damping must be a number in [0, 1), got {damping!r}")
        self.graph = graph
        self.algorithm: Algorithm = algorithm
        self.iterations = iterations
        self.damping = float(damping)
        self.schedule: Schedule = schedule
        self.semiring: SemiringName = semiring
        w = _wiring if _wiring is not None else build_wiring(graph)
        self._wiring = w
        self._groups: tuple[GroupWiring, ...] = w.groups
        # groups that send messages (arity >= 1); arity-0 groups are constants of log Z only
        self._msg_idx = tuple(i for i, g in enumerate(w.groups) if g.arity > 0)
        self._const_idx = tuple(i for i, g in enumerate(w.groups) if g.arity == 0)
        self._mgroups: tuple[GroupWiring, ...] = tuple(w.groups[i] for i in self._msg_idx)
        # message groups in edge order (merges first group first: see compile/wiring.py), and
        # the merges (groups of one arity padded to one table shape: one batched reduction
        # each on the general path), their groups as indices into _mgroups
        self._edge_order = tuple(
            sorted(range(len(self._mgroups)), key=lambda i: self._mgroups[i].edge_start)
        )
        to_msg = {mi: gi for gi, mi in enumerate(self._msg_idx)}
        self._merges: tuple[GroupWiring, ...] = w.merges
        self._merge_idx = tuple(tuple(to_msg[i] for i in m) for m in w.merge_members)
        self.num_variables = w.num_variables
        self.max_card = w.max_card
        tables = [g.log_potentials for g in graph.groups]
        if len(tables) != len(w.groups):
            raise GraphError("the factor graph changed between wiring and compilation")
        has_zero = any(bool(np.isneginf(t).any()) for t in tables)
        self.exact_cavity = has_zero if exact_cavity is None else bool(exact_cavity)
        self.fast_path = fast_path
        self.checkpoint = bool(checkpoint)
        if contraction not in ("auto", "logsumexp", "matmul", "enumerate"):
            raise ValueError(
                f"contraction must be auto, logsumexp, matmul or enumerate, got {contraction!r}"
            )
        if contraction == "enumerate" and schedule != "parallel" and algorithm == "bp":
            raise ValueError(
                "contraction='enumerate' contracts every factor at once: BP needs "
                f"schedule='parallel', got {schedule!r}"
            )
        self.contraction = contraction
        if backend not in ("torch", "triton"):
            raise ValueError(f"backend must be 'torch' or 'triton', got {backend!r}")
        self.backend: Literal["torch", "triton"] = backend
        if not isinstance(compile_steps, bool):
            raise ValueError(f"compile_steps must be True or False, got {compile_steps!r}")
        self.compile_steps = compile_steps
        self._compiled: dict[str, Any] = {}  # step name -> torch.compile'd step (lazily)
        self.binary_fast = (
            fast_path
            and algorithm == "bp"
            and schedule == "parallel"
            and not self.exact_cavity
            and any(g.arity == 2 for g in w.groups)
            and bool((w.cards == 2).all())
            and all(g.arity <= 2 for g in w.groups)
        )
        self._uniform_cards = bool((w.cards == w.max_card).all())
        pairwise_graph = (
            any(g.arity == 2 for g in w.groups)
            and all(g.arity <= 2 for g in w.groups)
            and w.max_card <= PAIRWISE_MAX_CARD
        )
        pw_scopes = [sc for g, sc in zip(w.groups, w.scopes, strict=True) if g.arity == 2]
        # compact: no hub among the pairwise edges, so one slot table padded to the largest
        # degree serves (the fused kernels and binary mean-field need it; the other paths
        # take SlotPlan buckets)
        pw_edge_var = np.concatenate([sc.reshape(-1) for sc in pw_scopes] or [np.zeros(0)])
        pw_edge_var = pw_edge_var.astype(np.int64)
        pw_degree = np.bincount(pw_edge_var, minlength=w.num_variables)
        self._pairwise_degree = int(pw_degree.max(initial=0))
        self._pairwise_compact = not pairwise_graph or base_width(pw_degree) >= max(
            self._pairwise_degree, 1
        )
        # the general path's enumerated contraction: whether "auto" takes it there
        enumeration_pays = bool(self._mgroups) and _enumeration_pays(
            bucketed_size(self._mgroups, BUCKET_OVERHEAD),
            enumeration_size(self._mgroups, w.num_edges, w.max_card)[1],
            max(g.arity for g in self._mgroups),
            flat=schedule == "parallel",
        )
        # mixed cardinalities: the pairwise paths pad every table to K x K, the enumerated
        # contraction's flat loops keep only the states that exist
        pw_factors = [g for g in w.groups if g.arity == 2]
        pw_real = sum(g.num_factors * int(np.prod(g.cards)) for g in pw_factors)
        pw_padded = sum(g.num_factors for g in pw_factors) * w.max_card**2
        self._padding_routes = (
            pairwise_graph
            and contraction == "auto"
            and backend == "torch"
            and schedule == "parallel"
            and not compile_steps
            and enumeration_pays
            and pw_padded >= _PAIRWISE_PADDING_ROUTE * pw_real
            # (the flat loops exist: BP's with exact cavities needs a slot plan without buckets)
            and (algorithm == "mf" or not self.exact_cavity or w.slots.compact)
        )
        self.pairwise_fast = (
            fast_path
            and not self.binary_fast
            and algorithm == "bp"
            and schedule == "parallel"
            and pairwise_graph
            and not self._padding_routes
        )
        self.mf_fast = (
            fast_path
            and algorithm == "mf"
            and schedule == "parallel"
            and pairwise_graph
            and not self._padding_routes
        )
        if backend == "triton":
            _check_triton_backend(self, pairwise_graph)
        # binary variables, finite tables: mean-field on log-odds (one probability per variable)
        self.mf_binary = (
            self.mf_fast
            and backend == "torch"
            and not has_zero
            and bool((w.cards == 2).all())
            and self._pairwise_compact  # (its weights pad: no buckets)
        )
        fdtype = torch.get_default_dtype() if dtype is None else dtype
        if not fdtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")

        def buf(name: str, value: np.ndarray | torch.Tensor) -> None:
            if isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value)
                t = torch.from_numpy(value if value.flags.writeable else value.copy())
            else:
                t = torch.as_tensor(value)
            self.register_buffer(name, t, persistent=False)

        # the general path's slots (SlotPlan): var_slots (V, D0) the base table;
        # slot_vars_j (V_j,), slot_rows_j (V_j, W_j) bucket j of high-degree variables;
        # edge_slot (E,) position of each edge in the flattened layout (exact cavities)
        buf("var_slots", w.slots.base)
        for j, (v, r) in enumerate(zip(w.slots.vars, w.slots.rows, strict=True)):
            buf(f"slot_vars_{j}", v)
            buf(f"slot_rows_{j}", r)
        self._num_buckets = len(w.slots.vars)
        buf("edge_slot", w.slots.edge_slot)
        buf("edge_var", w.edge_var)
        buf("cards", w.cards)
        buf("degree", torch.as_tensor(w.degree, dtype=fdtype))
        base = np.where(w.state_valid, 0.0, NEG)
        buf("base_unary", torch.as_tensor(base, dtype=fdtype))
        # state_absent (V, K): the padding states, beyond a variable's cardinality
        buf("state_absent", torch.as_tensor(~np.asarray(w.state_valid, dtype=bool)))
        # the general path's flooding BP and mean-field by the enumerated contraction
        # (compile/enumerate.py), over the rows of its row buckets (enum_bucket_*, below)
        self.enumerated = False
        general = not (self.binary_fast or self.pairwise_fast or self.mf_fast)
        if general and (schedule == "parallel" or algorithm == "mf") and self._mgroups:
            # (compiled, the per-merge contraction fuses better: Pedigree_11 0.59 against
            # 0.95 ms per iteration, Promedus_11 0.26 against 0.46, on CPU)
            self.enumerated = contraction == "enumerate" or (
                contraction == "auto"
                and not compile_steps
                and (enumeration_pays or self._padding_routes)
            )
        # per copy combination and device, the flat indices into _FlatThetas.flat
        # (_enumerated_index; made by tensor ops from the enum_* buffers, kept outside tracing)
        self._enum_index: dict[tuple[tuple[int | str, ...], torch.device], torch.Tensor] = {}
        # the binary and pairwise paths' no-grad workspaces, kept between forwards on CPU
        self._pool = WorkspacePool()
        self._sweep_buckets = -1  # the no-grad enumerated loop's buckets (-1: no loop)
        # its cardinality classes (offset, k, n): of the messages, of the beliefs
        self._sweep_classes: tuple[tuple[tuple[int, int, int], ...], ...] = ((), ())
        self._enum_buckets: tuple[tuple[int, ...], ...] = ()  # the functional step's (M_b, R_b)
        enum_configs = None
        msg_layout: StateLayout | None = None  # (BP: the edges' states, as plan_layouts lays them)
        if self.enumerated:
            # the live rows, in buckets of similar extent (plan_buckets):
            # enum_bucket_others_b (a_b, M_b, R_b) the other edges' cavity (BP: edge e' * K +
            # state, E * K padding) or marginal (mean-field: variable of e' * K + state, V * K
            # padding) of every configuration of every row of bucket b; enum_configs
            # (sum_b M_b R_b,) the table entry of each of them, bucket after bucket (what
            # _enumerated_wiring addresses); enum_rows (R,) the buckets' rows concatenated
            # (absent when they are every row in order; _row_of makes the inverse, the
            # position of each row in them, when the functional step needs it)
            rb = plan_buckets(self._mgroups, w.num_edges, w.max_card, BUCKET_OVERHEAD)
            enum_configs = np.concatenate([x.reshape(-1) for x in rb.configs] or [np.zeros(0)])
            enum_configs = enum_configs.astype(np.int64)
            buf("enum_configs", enum_configs)
            EK, VK = w.num_edges * w.max_card, w.num_variables * w.max_card
            bucket_others = []  # (mean-field's, v * K + x, kept for its flat loop below)
            for b, o in enumerate(rb.others):
                if algorithm == "mf":  # the other edges' variables: no gather to edges
                    c = np.minimum(o, EK - 1)
                    via = w.edge_var[c // w.max_card] * w.max_card + c % w.max_card
                    o = np.where(o == EK, VK, via)
                bucket_others.append(o)
                buf(f"enum_bucket_others_{b}", o)
            self._enum_buckets = tuple(x.shape for x in rb.configs)
            rows = np.concatenate(rb.rows) if rb.rows else np.zeros(0, np.int64)
            every = len(rows) == rb.num_rows  # (then they may be every row in order)
            if not (every and np.array_equal(rows, np.arange(len(rows)))):
                buf("enum_rows", rows)
            # enum_msg_source (L,): the edge * K + state of each state, as the flat loops (and
            # BP's initial messages) lay them out
            layouts = plan_layouts(w.cards[w.edge_var], w.cards, w.max_card)
            buf("enum_msg_source", layouts[0].source)
            msg_layout = layouts[0] if algorithm == "bp" else None
            # enum_tail (2,): a hard zero and a 0, after the flattened parameters
            # (_FlatThetas.flat): what padding configurations and initial messages read
            buf("enum_tail", torch.tensor([NEG, 0.0], dtype=fdtype))
            sw = None
            exact = self.exact_cavity and algorithm == "bp"  # (mean-field forms no cavities)
            if max(g.arity for g in self._mgroups) >= 2 and (
                algorithm == "bp" or schedule == "parallel"
            ):
                sw = plan_sweep(rb, w.slots, w.edge_var, layouts, w.max_card, exact)
            if sw is not None and (sw.exact is not None or not exact):
                # the no-grad loop (EnumeratedSweep), flat (SweepWiring): only the states that
                # exist, in classes of one cardinality, each state-major (StateLayout); per
                # layout, each position's item * K + state (enum_msg_source (L,): the edges';
                # sweep_var_source (LV,): the variables'). sweep_bel_slots
                # (D0 * (LV + 1),), sweep_cav_var (L + 1,); per row bucket b,
                # sweep_others_b (a_b, M_b, R_b) (enum_bucket_others_b as message positions);
                # sweep_row_of (L,) each position's row in the buckets' rows; per bucket j of
                # high-degree variables, sweep_bucket_pos_j (N_j,), sweep_bucket_slots_j
                # (W_j N_j,); exact cavities: sweep_pre_slots, sweep_suf_slots
                # ((D0 + 1) (LV + 1),), sweep_cav_lo, sweep_cav_hi (L + 1,). Mean-field (its
                # flat loop, FlatStep.mf_step): sweep_others_b are the other edges' variables'
                # belief positions (padding LV), read from the marginals
                buf("sweep_var_source", sw.beliefs.source)  # (the messages': enum_msg_source)
                self._sweep_classes = (sw.messages.classes, sw.beliefs.classes)
                buf("sweep_bel_slots", sw.bel_slots)
                buf("sweep_cav_var", sw.cav_var)
                for b, o in enumerate(sw.others):
                    if algorithm == "mf":  # v * K + x (V * K: padding) -> its position
                        vo = bucket_others[b]
                        o = sw.beliefs.at(vo // w.max_card, vo % w.max_card)
                    buf(f"sweep_others_{b}", o)
                buf("sweep_row_of", sw.row_of)
                if algorithm == "mf":
                    bv, bs = sw.beliefs.source // w.max_card, sw.beliefs.source % w.max_card
                    absent = np.flatnonzero(bs >= w.cards[bv])
                    if absent.size:  # (a padded layout's)
                        # sweep_var_absent (n,): the belief positions of states that do not
                        # exist, where mean-field's field is -inf (never outweighed by sums of
                        # hard zeros)
                        buf("sweep_var_absent", absent.astype(np.int64))
                for j, (p, sl) in enumerate(zip(sw.bucket_pos, sw.bucket_slots, strict=True)):
                    buf(f"sweep_bucket_pos_{j}", p)
                    buf(f"sweep_bucket_slots_{j}", sl)
                if sw.exact is not None:
                    exact_names = ("pre_slots", "suf_slots", "cav_lo", "cav_hi")
                    for name, a in zip(exact_names, sw.exact, strict=True):
                        buf(f"sweep_{name}", a)
                self._sweep_buckets = len(sw.bucket_pos)
        for i, sc in enumerate(w.scopes):
            buf(f"scope_{i}", sc)
        # fast paths (infer/binary.py, infer/pairwise.py): unary factors are folded into the
        # variables' field; only the pairwise groups' edges carry messages
        self._pw_idx = tuple(i for i, g in enumerate(self._mgroups) if g.arity == 2)
        self._un_idx = tuple(i for i, g in enumerate(self._mgroups) if g.arity == 1)
        self._pw_sizes = tuple(self._mgroups[i].num_factors for i in self._pw_idx)
        # pairwise units (infer/pairwise.py): a shared group, or a run of consecutive unshared
        # groups whose tables are concatenated: one contraction per direction and unit
        units: list[list[int]] = []
        for i in self._pw_idx:
            if units and not self._mgroups[i].shared and not self._mgroups[units[-1][-1]].shared:
                units[-1].append(i)
            else:
                units.append([i])
        self._pw_units = tuple(tuple(un) for un in units)
        self._pw_unit_sizes = tuple(sum(self._mgroups[i].num_factors for i in un) for un in units)
        self._bin_buckets = self._pw_buckets_n = 0
        if self.binary_fast or self.mf_binary:
            # pairwise edges in the general path's order (group, factor, position), then one
            # padding edge whose message is always 0 (its coefficients are all zero):
            # bin_slots_t: (D' * V,) row d * V + v = the d-th pairwise edge of variable v, or
            #   E' (the padding edge)
            # bin_partner_edge: (E' + 1,) the other edge of the edge's factor (padding: itself)
            # bin_partner_var: (E' + 1,) the variable of that other edge (padding: 0)
            # the same, as positions in the no-grad sweep's state [belief (V) | messages]
            # (BP only):
            # bin_state_slots: (D' * V,) V + bin_slots_t
            # bin_cavity_index: (2 (E' + 1),) bin_partner_var, then V + bin_partner_edge
            # variables of a degree far above the rest (SlotPlan buckets; BP only: binary
            # mean-field needs one table): bin_bucket_vars_j (V_j,) bucket j's variables;
            # bin_bucket_slots_j (W_j * V_j,) row d * V_j + i = the (D' + d)-th pairwise edge
            #   of variable bin_bucket_vars_j[i], or E'
            ev = np.concatenate([sc.reshape(-1) for sc in pw_scopes]).astype(np.int64)
            n, nv = ev.shape[0], w.num_variables
            # (the pairwise groups one run of the general path's edges, in this order: their
            # ranks are read off its plan, no second sort)
            spans = [(g.edge_start, g.edge_stop) for g in w.groups if g.arity == 2]
            one_run = all(a[1] == b[0] for a, b in itertools.pairwise(spans))
            rank = run_rank(w.slots, w.edge_var, spans[0][0], spans[-1][1]) if one_run else None
            plan = plan_slots(ev, nv, rank=rank)
            slots = plan.base.T.reshape(-1)
            buf("bin_slots_t", slots)
            for j, (v, r) in enumerate(zip(plan.vars, plan.rows, strict=True)):
                buf(f"bin_bucket_vars_{j}", v)
                buf(f"bin_bucket_slots_{j}", r.T.reshape(-1))
            self._bin_buckets = len(plan.vars)
            partner = np.append(np.arange(n, dtype=np.int64) ^ 1, n)
            buf("bin_partner_edge", partner)
            partner_var = np.zeros(n + 1, dtype=np.int64)  # (edges 2 f and 2 f + 1: factor f)
            partner_var[:n] = ev.reshape(-1, 2)[:, ::-1].reshape(-1)
            buf("bin_partner_var", partner_var)
            if self.binary_fast:
                buf("bin_state_slots", slots + nv)
                buf("bin_cavity_index", np.concatenate([partner_var, partner + nv]))
            else:
                # bin_slot_partner_q1: (D' * V,) per slot row, V + the variable at the other end
                #   of its edge (padding: V + 0, with weight 0): the position of its q1 in the
                #   mean-field state (q0 | q1) flattened
                buf("bin_slot_partner_q1", partner_var[slots] + nv)
        if self.pairwise_fast or self.mf_fast or backend == "triton":
            # pw_var: (P,) the variable that receives column p (columns: group by group, the
            #   messages to scope position 0, then to position 1)
            # pw_slots_t: (D' * V,) row d * V + v = the d-th pairwise column of variable v, or
            #   P (the zero padding column)
            # pw_partner_var: (P,) the variable at the other scope position of column p's factor
            # pw_partner: (P,) the column of that other scope position (the message to it)
            # per unit, its factors' scopes (the column layout, infer/pairwise.py)
            unit_scopes = [
                np.concatenate([w.scopes[self._msg_idx[i]] for i in un]) for un in self._pw_units
            ]
            pw_var = np.concatenate([sc[:, j] for sc in unit_scopes for j in (0, 1)])
            # pw_bucket_vars_j (V_j,), pw_bucket_slots_j (W_j * V_j,): bucket j of
            #   high-degree variables (SlotPlan), row d * V_j + i = the (D' + d)-th column of
            #   variable pw_bucket_vars_j[i], or P
            # pw_slot_pos: (P,) position of column p in the flattened slots [pw_slots_t |
            #   pw_bucket_slots_0 | ...] (exact cavities)
            buf("pw_var", pw_var.astype(np.int64))
            plan = plan_slots(pw_var, w.num_variables)
            slots_t = plan.base.T.reshape(-1)
            buf("pw_slots_t", slots_t)
            flat = [slots_t]
            for j, (v, r) in enumerate(zip(plan.vars, plan.rows, strict=True)):
                buf(f"pw_bucket_vars_{j}", v)
                buf(f"pw_bucket_slots_{j}", r.T.reshape(-1))
                flat.append(r.T.reshape(-1))
            self._pw_buckets_n = len(plan.vars)
            layout = np.concatenate(flat)
            real = np.nonzero(layout < len(pw_var))[0]
            pos = np.empty(len(pw_var), dtype=np.int64)
            pos[layout[real]] = real
            buf("pw_slot_pos", pos)
            partner = np.concatenate([sc[:, j] for sc in unit_scopes for j in (1, 0)])
            buf("pw_partner_var", partner.astype(np.int64))
            # (columns unit by unit: [to position 0 | to position 1], F_u each)
            sizes = np.asarray(self._pw_unit_sizes, dtype=np.int64)
            starts = np.cumsum(2 * sizes) - 2 * sizes
            partner_col = np.concatenate(
                [np.zeros(0, np.int64)]
                + [s + np.r_[n : 2 * n, 0:n] for s, n in zip(starts, sizes, strict=True)]
            )
            buf("pw_partner", partner_col)
            # pw_partner_pos: (P,) pw_slot_pos[pw_partner] (exact cavities of the partners)
            buf("pw_partner_pos", pos[partner_col])
        if self.backend == "triton":
            # the fused kernels' columns (FusedWiring, infer/fused.py), one row per pairwise
            # factor, all pairwise groups in order:
            # fused_col0, fused_col1: (F,) its message columns to scope positions 0 and 1
            # fused_var0, fused_var1: (F,) the variables at scope positions 0 and 1
            # fused_table: (F,) its column in fused_tables (a shared group: one for all);
            #   empty when every group is unshared (factor f reads column f)
            # fused_slots: (D' * V,) pw_slots_t
            # all int32 below 2^31 entries (half the index traffic of the kernels)
            cols0, cols1, tabs = [], [], []
            start = tstart = 0
            for un, sc in zip(self._pw_units, unit_scopes, strict=True):
                n = sc.shape[0]
                cols0.append(start + np.arange(n))
                cols1.append(start + n + np.arange(n))
                shared = self._mgroups[un[0]].shared  # (a shared group is a unit of its own)
                tabs.append(tstart + (np.zeros(n, np.int64) if shared else np.arange(n)))
                start, tstart = start + 2 * n, tstart + (1 if shared else n)
            itype = np.int32 if slots_t.size + len(pw_var) < 2**31 - 1 else np.int64
            buf("fused_col0", np.concatenate(cols0).astype(itype))
            buf("fused_col1", np.concatenate(cols1).astype(itype))
            buf("fused_var0", np.concatenate([sc[:, 0] for sc in pw_scopes]).astype(itype))
            buf("fused_var1", np.concatenate([sc[:, 1] for sc in pw_scopes]).astype(itype))
            table_ids = np.concatenate(tabs)
            identity = np.array_equal(table_ids, np.arange(len(table_ids)))
            buf("fused_table", (table_ids[:0] if identity else table_ids).astype(itype))
            buf("fused_slots", slots_t.astype(itype))
            # the binary (log-odds) layout, when it serves: fused_lo_slots: (D' * V,)
            # bin_slots_t; fused_lo_col0, fused_lo_col1: (F,) factor f's edges 2 f and 2 f + 1
            # (scope positions 0 and 1)
            if self.binary_fast:
                buf("fused_lo_slots", self.bin_slots_t.numpy().astype(itype))
                lo_col0 = np.arange(0, 2 * len(table_ids), 2).astype(itype)
                buf("fused_lo_col0", lo_col0)
                buf("fused_lo_col1", lo_col0 + 1)

        # ---- parameter plan
        taken: set[str] = set()
        self._keys = [_param_key(g.name, taken) for g in w.groups]
        names = {g.name for g in w.groups}
        if untie is True or untie is False:
            untied = set(names) if untie else set()
        else:
            untied = set(untie)
            unknown = untied - names
            if unknown:
                raise ValueError(
                    f"untie names unknown factor groups {sorted(unknown)}; groups: {sorted(names)}"
                )
        if untie_last is not None and not (
            isinstance(untie_last, int) and 1 <= untie_last <= iterations
        ):
            raise ValueError(f"untie_last must be in [1, {iterations}], got {untie_last!r}")
        if untie_last is not None and untie is False:
            untied = set(names)
        start = 0 if untie_last is None else iterations - untie_last
        self.copy_index: dict[str, tuple[int, ...]] = {}
        self.potentials = nn.ParameterDict()
        for g, key, table in zip(w.groups, self._keys, tables, strict=True):
            if _plan is not None:
                idx = _plan[key]
            elif g.name in untied:
                idx = _refine_plan((0,) * iterations, start)
            else:
                idx = (0,) * iterations
            self.copy_index[key] = idx
            n_copies = max(idx) + 1
            t = torch.as_tensor(table, dtype=fdtype)
            t = t.unsqueeze(0) if g.shared else t
            if n_copies == 1 and fdtype != torch.float64:  # (as_tensor made a copy already)
                self.potentials[key] = nn.Parameter(t.unsqueeze(0))
            else:  # (a copy of the graph's table in any case)
                self.potentials[key] = nn.Parameter(
                    t.unsqueeze(0).repeat(n_copies, *([1] * t.dim()))
                )
        if enum_configs is not None:
            # the parameters' sizes the wiring addresses (checked by _thetas)
            self._enum_sizes = tuple(p.numel() for p in self._potentials())
            for name, a in self._enumerated_wiring(enum_configs, msg_layout).items():
                buf(name, a)

        # ---- schedule
        self._blocks: list[list[tuple[int, int]]] = []  # per colour: (group index, buffer id)
        if schedule == "sequential" and algorithm == "bp":
            cols = factor_colouring(w)
            n_col = max((int(c.max()) + 1 for c in cols if c.size), default=0)
            bid = 0
            for c in range(n_col):
                blocks = []
                edges = []
                for gi, mi in enumerate(self._msg_idx):  # gi indexes the message groups
                    g, col = w.groups[mi], cols[mi]
                    fidx = np.nonzero(col == c)[0]
                    if fidx.size == 0:
                        continue
                    buf(f"block_factors_{bid}", fidx)
                    e = g.edge_start + (fidx[:, None] * g.arity + np.arange(g.arity)).reshape(-1)
                    edges.append(e)
                    blocks.append((gi, bid))
                    bid += 1
                ce = np.concatenate(edges)
                buf(f"colour_edges_{c}", ce)
                # (n, D): the slot table row of each edge's variable, its own slot set to
                # padding (without buckets; with them, all exact cavities are formed per class)
                if w.slots.compact:
                    others = w.slots.base[w.edge_var[ce]].copy()
                    others[others == ce[:, None]] = w.num_edges
                    buf(f"colour_other_slots_{c}", others)
                self._blocks.append(blocks)
        self.num_colours = 0
        if schedule == "sequential" and algorithm == "mf":
            vcol = variable_colouring(w)
            self.num_colours = int(vcol.max()) + 1 if vcol.size else 0
            buf("colour_masks", vcol[None, :] == np.arange(self.num_colours)[:, None])
        self._check_matmul_range()

    def _check_matmul_range(self) -> None:
        """``contraction="matmul"``: the declared tables of every iteration's copies must allow
        the exp-domain contraction (finite, log-range below the limit), else a ``ValueError``
        naming the group and factor, here at compile time. The forward repeats the check on
        CPU tensors (trained tables may leave the range); see :meth:`_exp_range_ok`."""
        if self.contraction != "matmul" or self.semiring != "sum" or self.algorithm != "bp":
            return
        if not (self.binary_fast or self.pairwise_fast or self.enumerated):
            if self.schedule != "parallel":
                return  # (the sequential schedule contracts in the log domain)
        self._range_at_compile = True  # (read on any device: once, here)
        try:
            with torch.no_grad():
                thetas = self._thetas()
                limit = dense_range_limit(self.base_unary.dtype)
                for t in {self._copy_key(t): t for t in range(self.iterations)}.values():
                    th = self._at(thetas, t)
                    if self.binary_fast:
                        self._binary_coefficients(th)
                    elif self.pairwise_fast:
                        for un in self._pw_units:
                            self._pairwise_tables([th[i] for i in un], limit, un)
                    elif not self.enumerated:
                        self._dense_plans(th, self._merge_tables(th, NEG))
        finally:
            self._range_at_compile = False

    def _exp_range_ok(
        self,
        spreads: Callable[[], Sequence[torch.Tensor]],
        limit: float,
        groups: Sequence[int],
        measure: str,
    ) -> bool:
        """Whether the exp-domain contraction is exact for the tables of ``groups`` (indices
        into the message groups): every factor's entry of ``spreads()`` (made only when
        read; its tables' log-range, or
        the binary interaction ``|t11 - t10 - t01 + t00|``; ``inf`` with a hard zero) is below
        ``limit``.

        ``contraction="auto"``: one host read, the answer (:func:`_auto_range_ok`).
        ``"matmul"``: the same read, and a ``ValueError`` naming the group, the factor and its
        scope where one is not (its messages would underflow: ``NaN`` or wrong marginals);
        unchecked (``True``) where a host read would sync or break a trace: tensors off the
        CPU, ``torch.compile`` tracing. :meth:`_check_matmul_range` checks the declared tables
        at compile time.

        Shape:
            ``spreads[i]``: ``(F_i,)`` or ``(1,)`` (a shared table) for group ``groups[i]``.
        """
        if self.contraction != "matmul":
            return _auto_range_ok(torch.stack([s.amax() for s in spreads()]).amax(), limit)
        on_host = self.base_unary.device.type == "cpu" and not torch.compiler.is_compiling()
        if not (on_host or getattr(self, "_range_at_compile", False)):
            return True
        for g, s in zip(groups, spreads(), strict=True):
            worst = int(s.argmax())
            value = float(s[worst])
            if not value < limit:
                grp = self._mgroups[g]
                scope = self.graph.groups[self._msg_idx[g]].scopes[0 if grp.shared else worst]
                names = tuple(self.graph.variable_name(int(v)) for v in scope)
                what = f"{measure} {value:.4g}" if value < -NEG / 2 else "a hard zero (-inf)"
                raise ValueError(
                    f'contraction="matmul": factor {worst} of group {grp.name!r} (scope '
                    f"{names!r}, tables {tuple(grp.cards)}{', shared' if grp.shared else ''}) "
                    f"has {what}, outside the exp-domain contraction's exact range "
                    f"(finite, below {limit:g} for {s.dtype}): its messages would underflow. "
                    'Use contraction="auto" (the log domain where needed) or "logsumexp".'
                )
        return True

    # ------------------------------------------------------------------ parameters
    def _apply(self, fn: Any, recurse: bool = True) -> UnfoldedNetwork:
        """``nn.Module._apply`` (behind ``.to``, ``.double()``, ...), plus one refinement: a
        group whose parameters still hold the declared tables, rounded to the old precision,
        is reloaded from the declared float64 tables when moved to a finer dtype. So
        ``pu.compile(fg).to(torch.float64)`` is as exact as ``pu.compile(fg, dtype=float64)``;
        trained parameters are converted as usual."""
        before = {k: p.dtype for k, p in self.potentials.items()}
        super()._apply(fn, recurse)
        self._enum_index.clear()  # (made again from the moved buffers)
        self._pool.clear()
        with torch.no_grad():
            for g, key in zip(self.graph.groups, self._keys, strict=True):
                p = self.potentials[key]
                old, new = before[key], p.dtype
                if not new.is_floating_point or torch.finfo(new).bits <= torch.finfo(old).bits:
                    continue
                exact = torch.as_tensor(g.log_potentials, dtype=new, device=p.device)
                exact = (exact.unsqueeze(0) if g.shared else exact).unsqueeze(0).expand_as(p)
                if exact.shape == p.shape and torch.equal(p, exact.to(old).to(new)):
                    p.copy_(exact)
        return self

    def reset_parameters(self) -> None:
        """Re-initialise every copy of the potentials from the declared tables."""
        with torch.no_grad():
            for g, key in zip(self.graph.groups, self._keys, strict=True):
                p = self.potentials[key]
                t = torch.as_tensor(g.log_potentials, dtype=p.dtype, device=p.device)
                p.copy_((t.unsqueeze(0) if g.shared else t).unsqueeze(0).expand_as(p))

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self._groups]

    def _key(self, group: str) -> str:
        for g, key in zip(self._groups, self._keys, strict=True):
            if g.name == group or key == group:
                return key
        raise KeyError(f"unknown factor group {group!r}; groups: {self.group_names}")

    def log_potentials(self, group: str, iteration: int = -1) -> torch.Tensor:
        """The log-potentials group ``group`` uses at ``iteration``.

        Shape:
            ``(F, *cards)`` (``F = 1`` for a shared table).
        """
        key = self._key(group)
        return self.potentials[key][self.copy_index[key][iteration]]

    def untie(
        self, groups: Iterable[str] | None = None, last: int | None = None
    ) -> UnfoldedNetwork:
        """A new network with one copy of the potentials per iteration, initialised from this one.

        Args:
            groups: names of the groups to untie (default: all); others keep their plan.
            last: untie only the last ``last`` iterations (earlier ones share one copy).

        The new network computes exactly the same function until its copies are trained apart.
        """
        names = set(self.group_names) if groups is None else set(groups)
        unknown = names - set(self.group_names)
        if unknown:
            raise ValueError(f"unknown factor groups {sorted(unknown)}; groups: {self.group_names}")
        T = self.iterations
        if last is not None and not (isinstance(last, int) and 1 <= last <= T):
            raise ValueError(f"last must be in [1, {T}], got {last!r}")
        start = 0 if last is None else T - last
        plan = {
            k: _refine_plan(self.copy_index[k], start) if g.name in names else self.copy_index[k]
            for g, k in zip(self._groups, self._keys, strict=True)
        }
        new = UnfoldedNetwork(
            self.graph,
            algorithm=self.algorithm,
            iterations=T,
            damping=self.damping,
            schedule=self.schedule,
            semiring=self.semiring,
            exact_cavity=self.exact_cavity,
            dtype=self.base_unary.dtype,
            fast_path=self.fast_path,
            checkpoint=self.checkpoint,
            contraction=self.contraction,
            backend=self.backend,
            compile_steps=self.compile_steps,
            _wiring=self._wiring,
            _plan=plan,
        )
        ref = next(iter(self.potentials.values()), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for key in self._keys:
                src, dst = self.potentials[key], new.potentials[key]
                for t in range(T):
                    dst[new.copy_index[key][t]].copy_(src[self.copy_index[key][t]])
        new.train(self.training)
        return new

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        w = self._wiring
        untied = [
            g.name
            for g, k in zip(self._groups, self._keys, strict=True)
            if max(self.copy_index[k]) > 0
        ]
        tied_n = sum(p[0].numel() for p in self.potentials.values())
        return (
            f"algorithm={self.algorithm}, semiring={self.semiring}, schedule={self.schedule}, "
            f"iterations={self.iterations}, damping={self.damping}, variables={w.num_variables}, "
            f"factors={sum(g.num_factors for g in w.groups)}, edges={w.num_edges}, "
            f"groups={len(w.groups)}, parameters={self.num_parameters()} "
            f"(one copy: {tied_n}; untied groups: {untied or 'none'})"
            + (f", backend={self.backend}" if self.backend != "torch" else "")
            + (", compile_steps=True" if self.compile_steps else "")
            + (", contraction=enumerate" if self.enumerated else "")
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickling and ``copy.deepcopy`` leave the compiled steps behind (made again on use)."""
        state = self.__dict__.copy()
        state["_compiled"] = {}
        state["_enum_index"] = {}
        return state  # (the workspace pool copies and pickles empty by itself)

    # ------------------------------------------------------------------ inputs
    def _resolve(self, key: Any) -> tuple[torch.Tensor, int, tuple[int, ...]]:
        """(ids, cardinality, array shape) of a unary/evidence key."""
        if isinstance(key, VariableArray):
            return torch.as_tensor(key.ids.reshape(-1)), key.cardinality, key.shape
        vid = self.graph.variable_id(key)
        return torch.tensor([vid]), int(self._wiring.cards[vid]), ()

    def prepare_inputs(
        self,
        evidence: Mapping[Any, Any] | None = None,
        unary: Mapping[Any, torch.Tensor] | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, bool]:
        """Validate ``evidence``/``unary`` and turn them into one dense unary tensor.

        Args:
            evidence: ``{name: state}`` clamps; a state is an int, or an int tensor ``(B,)`` for
                per-instance evidence. A :class:`VariableArray` key takes states of the array's
                shape (optionally with a leading ``B``).
            unary: ``{name: Tensor (B, k) or (k,)}`` added log-potentials (a
                :class:`VariableArray` key takes ``(B, *shape, k)``), or a dense tensor
                ``(B, V, K)`` / ``(V, K)`` (states beyond a variable's cardinality are ignored).

        Returns:
            ``(u, batched)``: the dense unary ``(B, V, K)`` (``B = 1`` when nothing is batched)
            and whether the outputs keep the batch dimension.
        """
        base = self.base_unary
        V, K = base.shape
        adds: list[tuple[torch.Tensor, torch.Tensor, str]] = []
        batched = False
        B = 1
        dense = None
        if isinstance(unary, torch.Tensor):
            if unary.shape[-2:] != (V, K) or unary.dim() not in (2, 3):
                raise ValueError(
                    f"dense unary must have shape (B, {V}, {K}) or ({V}, {K}), "
                    f"got {tuple(unary.shape)}"
                )
            dense = unary.to(base.dtype)
            if unary.dim() == 3:
                batched, B = True, unary.shape[0]
        elif unary is not None:
            for key, val in unary.items():
                ids, k, shp = self._resolve(key)
                val = torch.as_tensor(val, dtype=base.dtype, device=base.device)
                full = (*shp, k)
                if tuple(val.shape) == full:
                    val = val.reshape(1, ids.numel(), k)
                elif val.dim() == len(full) + 1 and tuple(val.shape[1:]) == full:
                    batched = True
                    val = val.reshape(val.shape[0], ids.numel(), k)
                else:
                    raise ValueError(
                        f"unary for variable {key!r}: expected shape {full} or "
                        f"(B, {', '.join(map(str, full))}), "
                        f"got {tuple(val.shape)}"
                    )
                if torch.isnan(val).any():
                    raise ValueError(f"unary for variable {key!r} contains NaN")
                if k < K:
                    val = F.pad(val, (0, K - k))
                adds.append((ids, val, repr(key)))
        for key, state in (evidence or {}).items():
            ids, k, shp = self._resolve(key)
            st = torch.as_tensor(state, device=base.device)
            if st.dtype.is_floating_point or st.dtype == torch.bool:
                raise ValueError(
                    f"evidence for variable {key!r}: states must be integers, got {st.dtype}"
                )
            if tuple(st.shape) == shp:
                st = st.reshape(1, ids.numel())
            elif st.dim() == len(shp) + 1 and tuple(st.shape[1:]) == shp:
                batched = True
                st = st.reshape(st.shape[0], ids.numel())
            else:
                raise ValueError(
                    f"evidence for variable {key!r}: expected a state of shape {shp} or "
                    f"(B, *{shp}), got {tuple(st.shape)}"
                )
            if st.numel() and (int(st.min()) < 0 or int(st.max()) >= k):
                bad = int(st[(st < 0) | (st >= k)][0])
                raise ValueError(
                    f"evidence for variable {key!r}: state {bad} out of range [0, {k})"
                )
            clamp = torch.full(
                (st.shape[0], ids.numel(), K), NEG, dtype=base.dtype, device=base.device
            )
            clamp.scatter_(2, st.long().unsqueeze(2), 0.0)
            adds.append((ids, clamp, repr(key)))
        sizes = {v.shape[0] for _, v, _ in adds if v.shape[0] != 1}
        if dense is not None and dense.dim() == 3:
            sizes.add(dense.shape[0])
        if len(sizes) > 1:
            raise ValueError(f"unary/evidence batch sizes disagree: {sorted(sizes)}")
        B = sizes.pop() if sizes else 1
        u = base.unsqueeze(0).expand(B, V, K)
        if dense is not None:
            u = u + dense.masked_fill(base == NEG, 0.0)
        for ids, val, _ in adds:
            u = u.index_add(1, ids.to(base.device), val.expand(B, -1, -1))
        return u, batched

    # ------------------------------------------------------------------ forward
    def _damping_scalar(self, like: torch.Tensor) -> torch.Tensor:
        """The damping as a 0-d tensor of ``like``'s dtype, made on its device (a fill, not a
        host-to-device copy, so that CUDA-graph capture of the forward works)."""
        return torch.full((), self.damping, dtype=like.dtype, device=like.device)

    def _potentials(self) -> list[torch.Tensor]:
        """Every group's parameter, in group order (read from the ``ParameterDict``'s own
        table: its ``__getitem__`` costs microseconds per group and forward)."""
        params = self._modules["potentials"]._parameters  # type: ignore[union-attr]
        return [params[k] for k in self._keys]  # type: ignore[misc]

    def _thetas(self) -> Sequence[torch.Tensor]:
        """Every group's log-potentials (all copies), ``-inf`` raised to the sentinel. The
        enumerated contraction reads them from one flat copy (:class:`_FlatThetas`)."""
        if self.enumerated:
            flat = _FlatThetas(self._potentials(), self._buffer("enum_tail"))
            if flat.sizes != self._enum_sizes:
                changed = [
                    f"{g.name!r} {tuple(p.shape)}"
                    for g, p, n in zip(
                        self._groups, self._potentials(), self._enum_sizes, strict=True
                    )
                    if p.numel() != n
                ]
                raise RuntimeError(
                    "the enumerated contraction's wiring was compiled for other parameter "
                    f"sizes; changed: {', '.join(changed)} (compile the network again)"
                )
            return flat
        return [_raised(p) for p in self._potentials()]

    def _at(self, thetas: Sequence[torch.Tensor], t: int) -> list[torch.Tensor]:
        """Log-potentials of the message-sending groups at iteration ``t``."""
        return [thetas[i][self.copy_index[self._keys[i]][t]] for i in self._msg_idx]

    def _constant(self, thetas: Sequence[torch.Tensor], t: int) -> torch.Tensor | float:
        """Sum of the arity-0 (constant) factors at iteration ``t``: a term of ``log Z``."""
        total: torch.Tensor | float = 0.0
        for i in self._const_idx:
            th = thetas[i][self.copy_index[self._keys[i]][t]]
            g = self._groups[i]
            total = total + th.sum() * (g.num_factors if g.shared else 1)
        return total

    def forward(
        self,
        evidence: Mapping[Any, Any] | None = None,
        unary: Mapping[Any, torch.Tensor] | torch.Tensor | None = None,
    ) -> Beliefs:
        """Run the unfolded inference.

        Args:
            evidence: clamps ``{name: state}`` (see :meth:`prepare_inputs`).
            unary: per-instance log-potentials ``{name: (B, k)}`` or dense ``(B, V, K)``.

        Returns:
            :class:`~pgmunfold.Beliefs`.

        Shape:
            ``log_marginals``: ``(B, V, K)``; ``log_partition``: ``(B,)``; the ``B`` dimension is
            dropped when neither input is batched.
        """
        u, batched = self.prepare_inputs(evidence, unary)
        thetas = self._thetas()
        if self.algorithm == "bp":
            out = self._run_bp(u, thetas)
        else:
            out = self._run_mf(u, thetas)
        if not batched:
            out.log_marginals = out.log_marginals.squeeze(0)
            out.map_states = out.map_states.squeeze(0)
            out.residual = out.residual.squeeze(0)
            fields = vars(Beliefs)
            fields["log_partition"].transform(out, lambda t: t.squeeze(0))
            fields["factor_log_beliefs"].transform(
                out, lambda d: {k: v.squeeze(0) for k, v in d.items()}
            )
        out.cards = self.cards
        out.lookup = self.graph.variable_id
        out.names = self.graph.variable_name
        out.iterations = self.iterations
        return out

    def _merge_tables(self, th: list[torch.Tensor], value: float) -> list[torch.Tensor]:
        """Per merge, its groups' tables (``th``, per message group) padded with ``value`` to
        the merge's cardinalities and stacked (a merge of one group: its table as it is).

        Shape:
            ``th[i]``: ``(F_i or 1, *cards_i)``; output ``[m]``: ``(F_m, *cards_m)``, or the
            group's own table for a merge of one group.
        """
        out = []
        for m, members in zip(self._merges, self._merge_idx, strict=True):
            if len(members) == 1:
                out.append(th[members[0]])
                continue
            parts = []
            for i in members:
                g, t = self._mgroups[i], th[i]
                t = t.expand(g.num_factors, *t.shape[1:])
                pad = [
                    n
                    for k, km in zip(g.cards[::-1], m.cards[::-1], strict=True)
                    for n in (0, km - k)
                ]
                parts.append(F.pad(t, pad, value=value) if any(pad) else t)
            out.append(torch.cat(parts, dim=0))
        return out

    def _dense_plans(
        self, th: list[torch.Tensor], merged: list[torch.Tensor]
    ) -> list[DensePairwise | None] | None:
        """Exp-domain plans for pairwise merges whose tables allow the matmul contraction.

        ``contraction="auto"`` checks the largest log-range of the merge's groups (one scalar
        read per merge and forward, outside the iteration loop; the padding of a merge is a
        hard zero, outside the range); ``"matmul"`` trusts the user; ``"logsumexp"`` never
        uses it.

        Shape:
            ``th[i]``: per message group; ``merged[m]``: per merge (:meth:`_merge_tables`).
        """
        if self.contraction == "logsumexp" or self.semiring != "sum":
            return None
        limit = dense_range_limit(self.base_unary.dtype)
        plans: list[DensePairwise | None] = []
        for m, members, t in zip(self._merges, self._merge_idx, merged, strict=True):
            ok = m.arity == 2 and self._exp_range_ok(
                partial(_log_ranges, th, members), limit, members, "a log-range of"
            )
            plans.append(dense_pairwise(t) if ok else None)
        return plans if any(p is not None for p in plans) else None

    def _bp_step(
        self,
        msg: torch.Tensor,
        u: torch.Tensor,
        th: list[torch.Tensor],
        plans: list[DensePairwise | None] | None = None,
    ) -> torch.Tensor:
        d = self.damping
        if self.schedule == "parallel":
            cav = bp_cavities(
                msg, u, self._slots(), self.edge_slot, self.edge_var, self.exact_cavity
            )
            if self.enumerated:  # th: every bucket's table entries (_enumerated_entries)
                new = bucketed_messages(
                    cav, th, self._bucket_others(), self._row_of(), self.semiring
                )
            else:  # th: per merge (_merge_tables)
                new = bp_factor_messages(cav, th, self._merges, self.semiring, dense=plans)
            return new if d == 0.0 else torch.lerp(new, msg, d)
        B, _, K = msg.shape
        for c, blocks in enumerate(self._blocks):
            edges = self._buffer(f"colour_edges_{c}")
            if self._num_buckets:  # high-degree variables: all exact cavities, this class's
                cav = bp_cavities(msg, u, self._slots(), self.edge_slot, self.edge_var, True)
                cav_c = gather_rows(cav, edges)
            else:  # exact cavities of this class's edges only: the other slots, summed
                others = self._buffer(f"colour_other_slots_{c}")  # (n, D), own slot -> padding
                padded = torch.cat([msg, msg.new_zeros(B, 1, K)], dim=1)
                n, D = others.shape
                gathered = gather_rows(padded, others.reshape(-1)).view(B, n, D, K).sum(dim=2)
                cav_c = shift_to_max(gather_rows(u, self.edge_var[edges]) + gathered)
            groups, ths, rows = [], [], []
            for gi, bid in blocks:
                g = self._mgroups[gi]
                fidx = self._buffer(f"block_factors_{bid}")
                groups.append(g)
                ths.append(th[gi] if g.shared else th[gi][fidx])
                rows.append(int(fidx.shape[0]))
            new = bp_factor_messages(cav_c, ths, groups, self.semiring, rows)
            if d != 0.0:
                new = (1.0 - d) * new + d * msg[:, edges]
            msg = msg.index_copy(1, edges, new)
        return msg

    def _layer(
        self,
        step: Any,
        state: torch.Tensor,
        *args: Any,
        ws: Workspace | None = None,
        parity: int = 0,
    ) -> torch.Tensor:
        """One iteration. With an enabled workspace (no autograd) a fast-path step writes into
        reused buffers (``parity`` alternates its two state buffers); under ``checkpoint=True``
        (and autograd) its activations are recomputed in the backward pass instead of stored."""
        if ws is not None and ws.enabled:
            return step(state, *args, ws, parity)
        if self.compile_steps and step.__name__ in _COMPILED_STEPS:
            step = self._compiled_step(step)
        if self.checkpoint and torch.is_grad_enabled():
            out = torch.utils.checkpoint.checkpoint(step, state, *args, use_reentrant=False)
            assert isinstance(out, torch.Tensor)
            return out
        return step(state, *args)

    def _workspace(self, pooled: bool = False) -> Workspace:
        """The pairwise paths' reused buffers (:meth:`Workspace.for_forward`), off under
        ``compile_steps=True``: a compiled step allocates its own. ``pooled``: a workspace
        kept from an earlier no-grad forward where there is one (:class:`WorkspacePool`; the
        caller gives it back)."""
        if self.compile_steps:
            return Workspace(False)
        return self._pool.acquire() if pooled else Workspace.for_forward()

    def _compiled_step(self, step: Any) -> Any:
        """``step`` compiled with ``torch.compile`` (static shapes), made at its first use and
        kept for every later iteration and forward (``compile_steps=True``)."""
        name = step.__name__
        if name not in self._compiled:
            compiled = torch.compile(step, dynamic=False)

            def run(*args: Any) -> Any:
                # dynamo reads .grad of the (non-leaf) messages while tracing, which warns
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "The .grad attribute of a Tensor")
                    return compiled(*args)

            self._compiled[name] = run
        return self._compiled[name]

    def _binary_coefficients(self, th: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Log-odds constants of all pairwise edges (plus the zero padding edge): the short exp
        form for sum-product when the contraction setting allows it (``auto`` checks
        ``|a - b|``, one scalar read per forward and copy), else the generic stable form.

        Shape:
            each output ``(E' + 1,)``.
        """
        groups = [pairwise_coefficients(th[i]) for i in self._pw_idx]
        fields: list[tuple[torch.Tensor, ...]] = list(groups)
        exp_form = False
        if self.semiring == "sum" and self.contraction != "logsumexp":
            ds = [interaction(a, b) for _, a, b in groups]
            limit = exp_form_limit(ds[0].dtype)
            exp_form = self._exp_range_ok(
                partial(_interaction_spreads, [th[i] for i in self._pw_idx], ds),
                limit,
                self._pw_idx,
                "an interaction |t11 - t10 - t01 + t00| of",
            )
            if exp_form:
                fields = [exp_form_coefficients(*g, d) for g, d in zip(groups, ds, strict=True)]
        # one (fields, E' + 1) table: each group's fields stacked, (F or 1, 2 or 1) expanded
        # to its factors' edges, then the padding edge's zeros; its rows are the coefficients
        blocks = [
            torch.stack([c.expand(self._mgroups[i].num_factors, 2) for c in fs]).flatten(1)
            for i, fs in zip(self._pw_idx, fields, strict=True)
        ]
        table = F.pad(blocks[0] if len(blocks) == 1 else torch.cat(blocks, 1), (0, 1))
        cols = table.unbind(0)
        return ExpForm(*cols) if exp_form else tuple(cols)

    def _binary_step(
        self,
        lo: torch.Tensor,
        field: torch.Tensor,
        coeffs: tuple[torch.Tensor, ...],
        damping: torch.Tensor,
    ) -> torch.Tensor:
        """One flooding iteration of the binary fast path (log-odds), every op allocating its
        result: the step under autograd (and ``torch.compile``), and the functional twin of
        :class:`~pgmunfold.infer.binary.BinarySweep`, which runs without autograd.

        Shape:
            ``lo``: ``(B, E' + 1)``; ``field``: ``(B, V)``; output: ``(B, E' + 1)``.
        """
        belief = self._binary_belief(lo, field)
        c = _select_columns(belief, self.bin_partner_var, None)
        c = c - _select_columns(lo, self.bin_partner_edge, None)
        new = binary_messages(c, coeffs, self.semiring)
        return new if self.damping == 0.0 else torch.lerp(new, lo, damping)

    def _binary_buckets(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per bucket of high-degree variables, its variables ``(V_j,)`` and slots
        ``(W_j * V_j,)`` (buffers ``bin_bucket_vars_j``, ``bin_bucket_slots_j``)."""
        buf = self._buffer
        n = range(self._bin_buckets)
        return [(buf(f"bin_bucket_vars_{j}"), buf(f"bin_bucket_slots_{j}")) for j in n]

    def _binary_belief(self, lo: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """Log-odds beliefs: the field plus every incoming message, through the slot rows and
        the buckets of high-degree variables.

        Shape:
            ``lo``: ``(B, E' + 1)``; ``field``: ``(B, V)``; output: ``(B, V)``.
        """
        B, V = field.shape
        incoming = _select_columns(lo, self.bin_slots_t, None)
        belief = field + incoming.view(B, -1, V).sum(dim=1)
        for v, sl in self._binary_buckets():
            part = _select_columns(lo, sl, None).view(B, -1, v.shape[0]).sum(dim=1)
            belief = belief.index_add(1, v, part)
        return belief

    def _run_binary_fused(
        self,
        field: torch.Tensor,
        ul: torch.Tensor,
        unaries: _FoldedUnaries,
        thetas: Sequence[torch.Tensor],
        ws: Workspace,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The binary path's iterations with ``backend="triton"`` (no-grad only): per
        iteration the beliefs kernel (on ``(B, 1, .)`` views) and the binary factors kernel of
        :mod:`pgmunfold.infer.fused`, into two alternating message buffers whose padding edge
        (never written) is zeroed on first use. Returns the last two messages and the
        beliefs.

        Shape:
            ``field``, ``ul``: ``(B, V)``; outputs ``(B, E' + 1)``, ``(B, E' + 1)``, ``(B, V)``.
        """
        B, V = field.shape
        field = field.contiguous()
        E1 = self.bin_partner_edge.shape[0]
        wiring = self._fused_wiring()._replace(col0=self.fused_lo_col0, col1=self.fused_lo_col1)
        bel = ws("bel", (B, 1, V), field)
        assert bel is not None
        tables: dict[tuple[int, ...], torch.Tensor] = {}
        lo = field.new_zeros(B, E1)  # messages start uniform
        prev = lo
        for t in range(self.iterations):
            prev = lo
            th = self._at(thetas, t)
            key = self._pairwise_key(t)
            if key not in tables:
                stacked = fused_tables([th[i] for i in self._pw_idx], 2, bits=False)
                tables[key] = stacked.view(4, -1)
            out = ws(f"lo{t % 2}", (B, E1), field)
            assert out is not None
            if t < 2:
                out[:, -1] = 0.0  # the padding edge
            fused_beliefs(lo.view(B, 1, E1), field.view(B, 1, V), self.fused_lo_slots, bel)
            lo = fused_binary_messages(
                lo, bel.view(B, V), tables[key], wiring, self.semiring, self.damping, out
            )
            if unaries.update(th):
                field = unaries.field(ul).contiguous()
        belief = fused_beliefs(
            lo.view(B, 1, E1), field.view(B, 1, V), self.fused_lo_slots, bel
        ).view(B, V)
        return lo, prev, belief

    def _run_binary(
        self, u: torch.Tensor, thetas: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor], torch.Tensor]:
        """Flooding BP in the log-odds domain (binary variables, arity <= 2, finite tables);
        returns the log marginals ``(B, V, 2)``, a function giving the general path's
        ``(B, E, 2)`` log-messages, and the residual."""
        B = u.shape[0]
        unaries = _FoldedUnaries(self, thetas, log_odds=True)
        ul = u[:, :, 1] - u[:, :, 0]
        field = unaries.field(ul)
        damping = self._damping_scalar(u)
        ws = self._pool.acquire()  # given back below, without the messages
        coeffs: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}
        keys = [self._pairwise_key(t) for t in range(self.iterations)]
        if self.backend == "triton" and ws.enabled:  # the fused kernels
            lo, prev, belief = self._run_binary_fused(field, ul, unaries, thetas, ws)
        elif ws.enabled:  # no autograd: the loop on reused buffers
            sweep = BinarySweep(
                self.bin_state_slots,
                self.bin_cavity_index,
                field,
                damping,
                self.damping != 0.0,
                self.semiring,
                ws,
                [(v, sl + field.shape[1]) for v, sl in self._binary_buckets()],
            )
            for t, key in enumerate(keys):
                th = self._at(thetas, t) if key not in coeffs or unaries.dynamic else None
                if th is not None and key not in coeffs:  # once per combination of copies
                    coeffs[key] = self._binary_coefficients(th)
                sweep.step(coeffs[key])
                if th is not None and unaries.update(th):
                    sweep.set_field(unaries.field(ul))
            lo, prev, belief = sweep.messages, sweep.previous, sweep.belief()
        else:
            lo = u.new_zeros(B, self.bin_partner_edge.shape[0])  # messages start uniform
            prev = lo
            for t, key in enumerate(keys):
                prev = lo
                th = self._at(thetas, t)
                if key not in coeffs:
                    coeffs[key] = self._binary_coefficients(th)
                lo = self._layer(self._binary_step, lo, field, coeffs[key], damping)
                if unaries.update(th):
                    field = unaries.field(ul)
            belief = self._binary_belief(lo, field)
        # convergence measured on message probabilities, immune to hard-zero sentinels
        scratch = ("bin_gathered", "bin_incoming")  # the sweep's, free now
        residual = unaries.residual(_max_change(lo, prev, torch.sigmoid, ws, scratch))

        def messages() -> torch.Tensor:
            split = lo[:, :-1].split([2 * n for n in self._pw_sizes], dim=1)
            pw = dict(zip(self._pw_idx, split, strict=True))
            parts = [
                unaries.messages[i].expand(B, -1) if self._mgroups[i].arity == 1 else pw[i]
                for i in self._edge_order
            ]
            return log_odds_to_log_messages(torch.cat(parts, dim=1))

        log_marg = log_odds_to_log_messages(belief)
        self._pool.give_back(ws, lo)  # (messages() reads lo later)
        return log_marg, messages, residual

    def _copies(self, i: int) -> tuple[int, ...]:
        """Per iteration, the copy of message group ``i`` (an index into ``_mgroups``)."""
        return self.copy_index[self._keys[self._msg_idx[i]]]

    def _unary_key(self, t: int) -> tuple[int, ...]:
        """Which copy of each unary group iteration ``t`` uses."""
        return tuple(self._copies(i)[t] for i in self._un_idx)

    def _pairwise_key(self, t: int) -> tuple[int, ...]:
        """Which copy of each pairwise group iteration ``t`` uses."""
        return tuple(self._copies(i)[t] for i in self._pw_idx)

    def _pairwise_step(
        self,
        msg: torch.Tensor,
        field: torch.Tensor,
        tables: list[PairwiseTables] | ColumnTable,
        damping: torch.Tensor,
        ws: Workspace | None = None,
        parity: int = 0,
    ) -> torch.Tensor:
        """One flooding iteration of the pairwise fast path (bits, state-major). With an
        enabled workspace (no-grad) every large intermediate, and the result, is written into
        reused buffers: two message buffers alternate by ``parity``.

        ``tables``: per unit, contracted unit by unit and direction by direction; or one
        :class:`~pgmunfold.infer.pairwise.ColumnTable`, every column at once (small problems).

        Shape:
            ``msg``: ``(B, K, P + 1)``; ``field``: ``(B, K, V)``; output: ``(B, K, P + 1)``.
        """
        ws = ws if ws is not None else Workspace(False)
        columns = isinstance(tables, ColumnTable)
        B, K, P1 = msg.shape
        V = field.shape[2]
        slots = self.pw_slots_t
        # 2-d gathers along the last dim (a 3-d index_select there is ~10x slower on CPU)
        flat = msg.view(B * K, P1)
        incoming = torch.index_select(flat, 1, slots, out=ws("inc", (B * K, len(slots)), msg))
        if self.exact_cavity:
            # hard zeros: each cavity is the field plus the sum of the *other* incoming
            # messages (no subtraction of sentinels), shifted per edge to a maximum of 0
            buckets = self._pw_buckets()
            parts = [incoming.view(B, K, -1, V)]
            parts += [flat.index_select(1, sl).view(B, K, -1, v.shape[0]) for v, sl in buckets]
            cav = slot_cavities(field, parts, [v for v, _ in buckets], dim=2)
            cav = cav - cav.detach().amax(dim=1, keepdim=True)
            pos = self.pw_partner_pos if columns else self.pw_slot_pos
            q = cav.view(B * K, -1).index_select(1, pos).view(B, K, P1 - 1)
        else:
            belief = self._pw_slot_sum(flat, incoming, ws("bel", (B, K, V), msg), B, K)
            belief = torch.add(belief, field, out=belief if ws.enabled else None)
            # a shift per variable (the messages do not depend on it): the largest state at 0
            top = belief.detach().amax(dim=1, keepdim=True)
            belief = belief.sub_(top) if ws.enabled else belief - top
            # columns: each column's partner's cavity (the one its contraction sums out)
            var = self.pw_partner_var if columns else self.pw_var
            q = torch.index_select(
                belief.view(B * K, V), 1, var, out=ws("q", (B * K, P1 - 1), msg)
            ).view(B, K, P1 - 1)
            own = msg[:, :, :-1]
            if columns:
                buf = ws("own", (B * K, P1 - 1), msg)
                own = torch.index_select(flat, 1, self.pw_partner, out=buf).view(B, K, P1 - 1)
            q = q.sub_(own) if ws.enabled else q - own
        out = ws(f"msg{parity}", (B, K, P1), msg)
        if isinstance(tables, ColumnTable):
            new = column_messages(q, tables, self.semiring, out=out)
        else:
            scratch = None  # the log form's terms (no-grad): one reused buffer
            if ws.enabled and any(t.form == "log" for t in tables):
                scratch = ws("log_terms", (2 * B * K * (P1 - 1),), msg)
            new = pairwise_messages(q, tables, self._pw_unit_sizes, self.semiring, out, scratch)
        if self.damping == 0.0:
            return new
        return torch.lerp(new, msg, damping, out=out)

    def _pw_buckets(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per bucket of high-degree variables, its variables ``(V_j,)`` and columns
        ``(W_j * V_j,)`` (buffers ``pw_bucket_vars_j``, ``pw_bucket_slots_j``)."""
        buf = self._buffer
        n = range(self._pw_buckets_n)
        return [(buf(f"pw_bucket_vars_{j}"), buf(f"pw_bucket_slots_{j}")) for j in n]

    def _pw_slot_sum(
        self,
        flat: torch.Tensor,
        incoming: torch.Tensor,
        out: torch.Tensor | None,
        B: int,
        K: int,
    ) -> torch.Tensor:
        """Per variable, the sum of its incoming columns: the slot rows (``incoming``, gathered
        from ``flat`` through ``pw_slots_t``), plus each bucket's columns (into ``out`` when
        given).

        Shape:
            ``flat``: ``(B * K, P + 1)``; ``incoming``: ``(B * K, D' * V)``; output
            ``(B, K, V)``.
        """
        V = self.num_variables
        total = torch.sum(incoming.view(B, K, -1, V), dim=2, out=out)
        for v, sl in self._pw_buckets():
            part = flat.index_select(1, sl).view(B, K, -1, v.shape[0]).sum(dim=2)
            total = total.index_add_(2, v, part) if out is not None else total.index_add(2, v, part)
        return total

    def _fused_step(
        self,
        msg: torch.Tensor,
        field: torch.Tensor,
        tables: torch.Tensor,
        ws: Workspace,
        t: int,
    ) -> torch.Tensor:
        """Iteration ``t`` of ``backend="triton"`` (no-grad only): the two fused kernels of
        :mod:`pgmunfold.infer.fused`, writing into reused buffers (two message buffers
        alternate by the parity of ``t``; the kernels never write their padding column, which
        is zeroed on each buffer's first use in the forward).

        Shape:
            ``msg``: ``(B, K, P + 1)``; ``field``: ``(B, K, V)``; ``tables``: ``(K, K, T)``
            (:func:`~pgmunfold.infer.fused.fused_tables`); output: ``(B, K, P + 1)``.
        """
        B, K, P1 = msg.shape
        out = ws(f"msg{t % 2}", (B, K, P1), msg)
        assert out is not None
        wiring = self._fused_wiring()
        if self.exact_cavity:  # hard zeros: cavities are exclusive sums over the slots
            fused_factor_messages(
                msg, field, tables, wiring, self.semiring, self.damping, out, self.fused_slots
            )
        else:
            bel = ws("bel", (B, K, field.shape[2]), msg)
            assert bel is not None
            fused_beliefs(msg, field, self.fused_slots, bel)
            fused_factor_messages(msg, bel, tables, wiring, self.semiring, self.damping, out)
        if t < 2:
            out.narrow(2, P1 - 1, 1).zero_()  # the padding column
        return out

    def _run_pairwise(
        self, u: torch.Tensor, thetas: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor], torch.Tensor]:
        """Flooding BP on the pairwise fast path; returns the log marginals ``(B, V, K)``, a
        function giving the general path's ``(B, E, K)`` natural-log messages, and the
        residual."""
        B, _, K = u.shape
        P = int(self.pw_var.shape[0])
        unaries = _FoldedUnaries(self, thetas, log_odds=False)

        def field_of() -> torch.Tensor:
            return (unaries.field(u) * LOG2E).transpose(1, 2).contiguous()

        field = field_of()
        # kept between no-grad forwards on CPU (given back below, without the messages)
        ws = self._workspace(pooled=True)
        msg = ws("msg_init", (B, K, P + 1), u)
        msg = u.new_empty(B, K, P + 1) if msg is None else msg
        if self._uniform_cards:  # uniform messages
            msg[:, :, :P].fill_(-math.log2(K))
        else:  # uniform over each variable's own states, as on the general path
            base = (log_normalize(self.base_unary) * LOG2E).t()[:, self.pw_var]
            msg[:, :, :P] = base.clamp_min(NEG_BITS).unsqueeze(0)
        msg[:, :, P].zero_()
        prev = msg
        damping = self._damping_scalar(u)
        tables: dict[tuple[int, ...], list[PairwiseTables] | ColumnTable] = {}
        stacked: dict[tuple[int, ...], torch.Tensor] = {}  # backend="triton", no-grad
        fused = self.backend == "triton" and ws.enabled
        columns = B * K * K * P <= pairwise._COLUMNS_MAX  # all columns at once
        limit = dense_range_limit(u.dtype)
        sweep = None  # no autograd: the column contraction's loop on prepared buffers
        if ws.enabled and columns and not fused:
            sweep = ColumnSweep(
                self.pw_slots_t,
                self._pw_buckets(),
                self.pw_partner_var,
                self.pw_partner,
                msg,
                field,
                self.damping,
                self.semiring,
                self.pw_partner_pos if self.exact_cavity else None,
                ws,
            )
        for t in range(self.iterations):
            prev = msg
            key = self._pairwise_key(t)
            made = stacked if fused else tables
            # (a copy's tables only when new: one select per group and iteration is measurable
            # on small graphs)
            th = self._at(thetas, t) if key not in made or unaries.dynamic else None
            if fused:
                if key not in stacked:
                    assert th is not None
                    stacked[key] = fused_tables([th[i] for i in self._pw_idx], K)
                msg = self._fused_step(msg, field, stacked[key], ws, t)
            else:
                if key not in tables:  # once per distinct combination of copies
                    assert th is not None
                    tables[key] = (
                        self._column_table(th, limit, ws, f"tab{key}")
                        if columns
                        else [
                            self._pairwise_tables(
                                [th[i] for i in un], limit, un, ws=ws, name=f"tab{key}/{j}"
                            )
                            for j, un in enumerate(self._pw_units)
                        ]
                    )
                tab = tables[key]
                if sweep is not None and isinstance(tab, ColumnTable):
                    sweep.step(tab)
                else:
                    msg = self._layer(
                        self._pairwise_step, msg, field, tab, damping, ws=ws, parity=t % 2
                    )
            if th is not None and unaries.update(th):
                field = field_of()
                if sweep is not None:
                    sweep.field = field
        if sweep is not None:
            msg, prev = sweep.messages, sweep.previous
        # marginals straight from the state-major beliefs; the general path's messages (for
        # log Z and the factor beliefs) only when those are read
        V = field.shape[2]
        slots = self.pw_slots_t
        if fused:  # one kernel
            belief = fused_beliefs(msg, field, self.fused_slots, msg.new_empty(B, K, V))
            belief = belief.div_(LOG2E)
        else:
            incoming = torch.index_select(
                msg.view(B * K, -1), 1, slots, out=ws("inc", (B * K, len(slots)), msg)
            )
            belief = (field + self._pw_slot_sum(msg.view(B * K, -1), incoming, None, B, K)) / LOG2E
        # the padding column holds 0 in both: it changes nothing
        residual = unaries.residual(
            _max_change(msg[:, :, :-1], prev[:, :, :-1], torch.exp2, ws, ("q", "inc"), dim=1)
        )

        def messages() -> torch.Tensor:
            sizes = [[self._mgroups[i].num_factors for i in un] for un in self._pw_units]
            pw = dict(zip(self._pw_idx, state_major_to_edges(msg, sizes), strict=True))
            parts = [
                unaries.messages[i].unsqueeze(0).expand(B, -1, -1)
                if self._mgroups[i].arity == 1
                else pw[i]
                for i in self._edge_order
            ]
            return torch.cat(parts, dim=1)

        # normalised state-major (reductions along the long axis), returned contiguous in the
        # public layout (an arg-max over a strided state axis is 3x slower on CPU)
        log_marg = log_normalize(belief, dim=1).transpose(1, 2).contiguous()
        self._pool.give_back(ws, msg)  # (messages() reads msg later)
        return log_marg, messages, residual

    def _column_table(
        self,
        th: list[torch.Tensor],
        limit: float,
        ws: Workspace | None = None,
        name: str = "tab",
    ) -> ColumnTable:
        """Every pairwise column's table (:func:`~pgmunfold.infer.pairwise.column_tables`),
        from the tables ``th`` of every group, in one contraction form (one host read of the
        log-range under ``contraction="auto"``), with plain autograd; in the buffers ``name*``
        of ``ws`` when given (no-grad).

        Shape:
            ``th[i]``: ``(F_i or 1, k0, k1)``; output table: ``(K, K, P)``.
        """
        full = [th[i].expand(self._mgroups[i].num_factors, -1, -1) for i in self._pw_idx]
        tab = self._pairwise_tables(full, limit, self._pw_idx, False, ws, name + "/units")
        units = tab.to1.split(list(self._pw_unit_sizes), dim=2)
        K, P = self.max_card, int(self.pw_var.shape[0])
        out = None if ws is None else ws(name, (K, K, P), tab.to1)
        return ColumnTable(tab.form, column_tables(units, self._pw_unit_sizes, out))

    def _pairwise_tables(
        self,
        th: list[torch.Tensor],
        limit: float,
        groups: Sequence[int],
        link: bool = True,
        ws: Workspace | None = None,
        name: str = "tab",
    ) -> PairwiseTables:
        """State-major tables of a pairwise unit (its groups' tables ``th``, of the message
        groups ``groups``) on the pairwise
        fast path, in the contraction form the settings allow. ``contraction="auto"`` reads
        the largest per-table log-range of the unit on the host (one scalar per unit and
        forward); the per-table maxima of that same pass then shift the exp-domain entries.
        ``link``: the exp forms' gradient through a table link (see
        :func:`~pgmunfold.infer.pairwise.link_table_grad`); ``False``: plain autograd.
        ``ws``, ``name``: the tables in the workspace's buffers ``name*`` where it is enabled
        (see :func:`~pgmunfold.infer.pairwise.pairwise_tables`).

        Shape:
            ``th[g]``: ``(F_g or 1, k0, k1)``; output tables: ``(K, K, F_u or 1)``.
        """
        K = self.max_card
        link = link and not self.compile_steps  # (a compiled contraction runs plain ops)
        if self.semiring != "sum" or self.contraction == "logsumexp":
            return pairwise_tables(th, "log", K, ws=ws, name=name)
        if self.contraction == "matmul":  # checked on CPU; shift each cavity
            ranges = partial(_log_ranges, th, range(len(th)))
            self._exp_range_ok(ranges, limit, groups, "a log-range of")
            return pairwise_tables(th, "exp_shifted", K, link=link, ws=ws, name=name)
        hi = [t.detach().amax(dim=(1, 2)) for t in th]  # (aminmax over (F, K^2): slower)
        spreads = [h - t.detach().amin(dim=(1, 2)) for h, t in zip(hi, th, strict=True)]
        if self._exp_range_ok(lambda: spreads, limit, groups, "a log-range of"):
            return pairwise_tables(th, "exp", K, table_max=hi, link=link, ws=ws, name=name)
        return pairwise_tables(th, "log", K, ws=ws, name=name)

    def _initial_messages(self, u: torch.Tensor, th0: list[torch.Tensor]) -> torch.Tensor:
        """Uniform messages, except that unary factors send their (normalised) table at once.

        Shape:
            output: ``(B, E, K)``.
        """
        B, _, K = u.shape
        if not self._mgroups:
            return u.new_zeros(B, 0, K)
        parts = []
        for i in self._edge_order:
            g, th = self._mgroups[i], th0[i]
            ev = self.edge_var[g.edge_start : g.edge_stop]
            if g.arity == 1:
                tab = F.pad(th, (0, K - th.shape[-1]), value=NEG) if th.shape[-1] < K else th
                parts.append(tab.unsqueeze(0).expand(B, g.num_factors, K))
            else:
                parts.append(self.base_unary[ev].unsqueeze(0).expand(B, -1, -1))
        return log_normalize(torch.cat(parts, dim=1))

    def score(
        self,
        states: torch.Tensor,
        evidence: Mapping[Any, Any] | None = None,
        unary: Mapping[Any, torch.Tensor] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unnormalised log-probability of joint states under the last iteration's potentials
        (plus ``unary``/``evidence`` inputs; a state violating a hard zero scores ``-inf``).

        Shape:
            ``states``: ``(B, V)`` or ``(V,)`` int64 variable states in id order; output:
            ``(B,)`` or 0-dim.
        """
        u, _ = self.prepare_inputs(evidence, unary)
        st = torch.as_tensor(states, device=u.device).long()
        single = st.dim() == 1
        st = st.unsqueeze(0) if single else st
        if st.shape[-1] != self.num_variables:
            raise ValueError(
                f"states must have {self.num_variables} columns, got {tuple(st.shape)}"
            )
        if bool(((st < 0) | (st >= self.cards)).any()):
            raise ValueError("states out of range of the variables' cardinalities")
        u = u.expand(st.shape[0], -1, -1)
        thetas = self._thetas()
        th = self._at(thetas, self.iterations - 1)
        s = score_states(st, u, th, self._mgroups, self._scopes())
        s = _neg_inf_below_sentinel(s + self._constant(thetas, self.iterations - 1))
        return s.squeeze(0) if single else s

    def _run_bp(self, u: torch.Tensor, thetas: Sequence[torch.Tensor]) -> Beliefs:
        B = u.shape[0]
        if self.binary_fast or self.pairwise_fast:
            run = self._run_binary if self.binary_fast else self._run_pairwise
            log_marg, messages, residual = run(u, thetas)
        else:
            ws = Workspace.for_forward()
            sweep = None
            fstep = None  # (under autograd: FlatStep, its messages fmsg and field ffield)
            if isinstance(thetas, _FlatThetas):  # tables and initial messages: one gather each
                flat = thetas.flat
                init = self._enumerated_index(0, "enum_init")
                if self._sweep_buckets >= 0 and self.iterations and not self.compile_steps:
                    # the flat layout (L,) of the states that exist: in place without
                    # autograd (EnumeratedSweep), functional with (FlatStep)
                    init = flat.index_select(0, init).clamp_min_(NEG)
                    if ws.enabled:
                        sweep = self._enumerated_sweep(init, u, ws)
                    else:
                        fstep = FlatStep(
                            self._sweep_wiring(), self.max_card, self.damping, self.semiring
                        )
                        fmsg, ffield = fstep.initial(init, B), fstep.field(u)
                        fprev = fmsg
                    msg = u.new_zeros(B, self.edge_var.shape[0], 0)  # (a stand-in)
                else:
                    msg = self._enumerated_initial(flat, init, B)
            else:
                msg = self._initial_messages(u, self._at(thetas, 0))
            prev = msg
            plans: dict[tuple[int, ...], list[DensePairwise | None] | None] = {}
            merged: dict[tuple[int, ...], list[torch.Tensor]] = {}
            for t in range(self.iterations):
                prev = msg
                key = self._copy_key(t)
                if self.schedule == "sequential":
                    th = self._at(thetas, t)
                else:  # the tables of this combination of copies, made once per forward
                    if key not in merged:
                        if self.enumerated:  # every row bucket's table entries
                            merged[key] = self._enumerated_entries(flat, t)
                        else:  # one padded table per merge
                            th = self._at(thetas, t)
                            merged[key] = self._merge_tables(th, NEG)
                            plans[key] = self._dense_plans(th, merged[key])
                    th = merged[key]
                if sweep is not None:  # no autograd: the state-major loop, same contraction
                    sweep.step(th)
                elif fstep is not None:
                    fprev = fmsg
                    fmsg = self._layer(fstep.step, fmsg, ffield, th)
                else:
                    msg = self._layer(self._bp_step, msg, u, th, plans.get(key))
            if sweep is not None:  # (the padded messages: made when read)
                residual = sweep.residual() if msg.shape[1] else u.new_zeros(B)
                log_marg = sweep.log_marginals()
            elif fstep is not None:
                residual = fstep.residual(fmsg, fprev) if msg.shape[1] else u.new_zeros(B)
                log_marg = fstep.log_marginals(fmsg, ffield)
            else:
                residual = (
                    _max_change(msg, prev, torch.exp, dim=2) if msg.shape[1] else u.new_zeros(B)
                )
                log_marg = log_normalize(variable_beliefs(msg, u, self._slots()))

            def messages() -> torch.Tensor:
                if fstep is not None:
                    return fstep.padded(fmsg, fstep.wiring.messages)
                return msg if sweep is None else sweep.messages

        states = _map_states(log_marg)
        # log Z and the factor beliefs: computed when first read (one shared computation)
        done: dict[str, Any] = {}

        def factor_terms() -> dict[str, Any]:
            if not done:
                th = self._at(thetas, self.iterations - 1)
                fbel: dict[str, torch.Tensor] = {}
                if self.semiring == "sum":
                    cav = bp_cavities(
                        messages(),
                        u,
                        self._slots(),
                        self.edge_slot,
                        self.edge_var,
                        self.exact_cavity,
                    )
                    lfb = bp_factor_log_beliefs(cav, th, self._mgroups)
                    logz = bethe_log_partition(log_marg, u, self.degree, lfb, th)
                    fbel = {g.name: b for g, b in zip(self._mgroups, lfb, strict=True)}
                else:
                    logz = score_states(states, u, th, self._mgroups, self._scopes())
                const = self._constant(thetas, self.iterations - 1)
                done["logz"] = _neg_inf_below_sentinel(logz + const)
                done["fbel"] = fbel
            return done

        return Beliefs(
            log_marg,
            states,
            residual,
            log_partition=Deferred(lambda: factor_terms()["logz"]),
            factor_log_beliefs=Deferred(lambda: factor_terms()["fbel"]),
        )

    def _scopes(self) -> list[torch.Tensor]:
        return [self._buffer(f"scope_{i}") for i in self._msg_idx]

    def _copy_key(self, t: int) -> tuple[int, ...]:
        """Which copy of every group iteration ``t`` uses."""
        return tuple(self.copy_index[k][t] for k in self._keys)

    def _enumerated_wiring(
        self, configs: np.ndarray, layout: StateLayout | None
    ) -> dict[str, np.ndarray]:
        """Compile-time wiring of the enumerated contraction's gathers from the flat copy of
        the parameters (:class:`_FlatThetas`), for every iteration's copies at once.

        ``configs`` (buffer ``enum_configs``: the plan's, at the row buckets' configurations,
        bucket after bucket) address the message groups' tables ``(F_g, *cards_g)``
        concatenated, then ``C`` (padding). In the flat copy, a group's entries move by one
        copy's size (``F_g`` or 1 tables, a shared table read by every factor) per copy, so
        the position of every entry at iteration ``t`` is its position in copy 0 plus its
        group's offset at ``t``.

        Returns:
            ``enum_base`` ``(sum_b M_b R_b,)``: each entry's flat position in copy 0; padding
            reads the tail's hard zero (BP) or its 0 (mean-field, where padding must add
            nothing). ``enum_group`` ``(sum_b M_b R_b,)``: the entry's message group, ``G`` for
            padding. ``enum_copy_offset`` ``(T, G + 1)``: per iteration, each group's copy
            times its copy size, then 0. BP also gets ``enum_init_base`` and
            ``enum_init_group`` ``(L,)``, the same for the initial messages, at the positions
            of the edges' ``layout`` (buffer ``enum_msg_source``): a unary factor's table
            entry, the tail's 0 for the other edges' states, its hard zero for a state
            beyond the edge's cardinality (a padded layout's).
        """
        sizes = self._enum_sizes
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        hard_zero, zero = sum(sizes), sum(sizes) + 1
        G, T = len(self._mgroups), self.iterations
        # per message group: the flat position of each factor's entries (F_g, P_g) in copy 0
        # (a shared table: the same P_g entries for every factor), and one copy's size
        where, stride = [], np.zeros(G + 1, dtype=np.int64)
        for j, (i, g) in enumerate(zip(self._msg_idx, self._mgroups, strict=True)):
            P, n = int(np.prod(g.cards)), g.num_factors
            f = np.zeros(n, dtype=np.int64) if g.shared else np.arange(n)
            where.append(starts[i] + f[:, None] * P + np.arange(P))
            stride[j] = (1 if g.shared else n) * P
        pad = zero if self.algorithm == "mf" else hard_zero
        base = np.append(np.concatenate([w.reshape(-1) for w in where]), pad)
        owner = np.repeat(np.arange(G + 1), [w.size for w in where] + [1])
        flat = configs.reshape(-1)
        copies = np.array([[self._copy_key(t)[i] for i in self._msg_idx] + [0] for t in range(T)])
        out = {
            "enum_base": base[flat],
            "enum_group": owner[flat],
            "enum_copy_offset": copies.reshape(T, G + 1) * stride,
        }
        if layout is not None:  # (BP)
            K = self.max_card
            exists = layout.source % K < layout.card[layout.source // K]
            init = np.where(exists, zero, hard_zero).astype(np.int64)
            init_group = np.full(layout.size, G, dtype=np.int64)
            for j, (w, g) in enumerate(zip(where, self._mgroups, strict=True)):
                if g.arity == 1:  # a unary factor sends its table at once
                    edges = np.arange(g.edge_start, g.edge_stop)[:, None]
                    at = layout.at(edges, np.arange(g.cards[0])[None, :])
                    init[at] = w
                    init_group[at] = j
            out["enum_init_base"] = init
            out["enum_init_group"] = init_group
        return out

    def _enumerated_index(
        self, t: int, which: Literal["enum", "enum_init"] = "enum"
    ) -> torch.Tensor:
        """Indices into :attr:`_FlatThetas.flat` at iteration ``t``: every message row's table
        entries (``which="enum"``), or the initial messages (``"enum_init"``, at the positions
        of ``enum_msg_source``), from the compile-time wiring
        (:meth:`_enumerated_wiring`) by one gather and one add, then kept per combination of
        copies and device (outside ``torch.compile``'s tracing, which computes them in the
        graph) while all kept indices hold at most :data:`_ENUM_INDEX_KEPT` entries; beyond,
        they are made again at each forward (an untied network of ``T`` iterations has ``T``
        combinations, each ``sum_b M_b R_b`` entries).

        Shape:
            output: ``(sum_b M_b R_b,)``; ``(L,)`` for ``"enum_init"``.
        """
        b = self._buffer(f"{which}_base")

        def make() -> torch.Tensor:
            return b + self._buffer("enum_copy_offset")[t][self._buffer(f"{which}_group")]

        return self._kept_index(((*self._copy_key(t), which), b.device), make)

    def _kept_index(
        self, key: tuple[tuple[int | str, ...], torch.device], make: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """The index kept under ``key``, or ``make()``'s, then kept (outside tracing) while all
        kept indices hold at most :data:`_ENUM_INDEX_KEPT` entries."""
        cached = None if torch.compiler.is_compiling() else self._enum_index.get(key)
        if cached is not None:
            return cached
        idx = make()
        kept = sum(x.numel() for x in self._enum_index.values())
        if not torch.compiler.is_compiling() and kept + idx.numel() <= _ENUM_INDEX_KEPT:
            self._enum_index[key] = idx
        return idx

    def _enumerated_entries(self, flat: torch.Tensor, t: int) -> list[torch.Tensor]:
        """Every row bucket's table entries at iteration ``t``, from :attr:`_FlatThetas.flat`
        (:meth:`_enumerated_index`) by one gather, ``-inf`` raised to the sentinel. Shape:
        output ``[(M_b, R_b)]``."""
        got = flat.index_select(0, self._enumerated_index(t)).clamp_min_(NEG)
        sizes = [m * r for m, r in self._enum_buckets]
        return [
            x.view(shape) for x, shape in zip(got.split(sizes), self._enum_buckets, strict=True)
        ]

    def _bucket_others(self) -> list[torch.Tensor]:
        """The row buckets' other edges (buffers ``enum_bucket_others_b``)."""
        return [self._buffer(f"enum_bucket_others_{b}") for b in range(len(self._enum_buckets))]

    def _row_of(self) -> torch.Tensor | None:
        """Each row's position in the row buckets' rows (``None``: every row, in order), from
        the buffer ``enum_rows``, made when first needed (the functional step: autograd, or
        mean-field) and kept per device like the table indices (:meth:`_kept_index`):
        ``(K * E,)`` int64, ``R`` for a row that is not live.

        Shape:
            output: ``(K * E,)``.
        """
        rows = self._buffers.get("enum_rows")
        if rows is None:
            return None

        def make() -> torch.Tensor:
            R = rows.shape[0]
            row_of = rows.new_full((self.edge_var.shape[0] * self.max_card,), R)
            return row_of.index_copy_(0, rows, torch.arange(R, device=rows.device))

        return self._kept_index((("row_of",), rows.device), make)

    def _enumerated_initial(self, flat: torch.Tensor, init: torch.Tensor, B: int) -> torch.Tensor:
        """:meth:`_initial_messages` from :attr:`_FlatThetas.flat` by the index ``init``
        (:meth:`_enumerated_index`), hard zeros at the states that do not exist. Shape: output
        ``(B, E, K)``."""
        E, K = self.edge_var.shape[0], self.max_card
        x = flat.index_select(0, init).clamp_min_(NEG)
        x = flat.new_full((E * K,), NEG).index_copy(0, self._buffer("enum_msg_source"), x)
        return log_normalize(x.view(1, E, K).expand(B, -1, -1))

    def _enumerated_sweep(
        self, init: torch.Tensor, u: torch.Tensor, ws: Workspace
    ) -> EnumeratedSweep:
        """The no-grad loop of the enumerated contraction from the unnormalised initial
        messages ``init`` ``(L,)`` at its message positions, with the unaries ``u``
        ``(B, V, K)``."""
        return EnumeratedSweep(self._sweep_wiring(), init, u, self.damping, self.semiring, ws)

    def _sweep_wiring(self) -> SweepWiringTensors:
        """The flat loops' index arrays (buffers ``sweep_*`` and ``enum_msg_source``)."""
        n = range(self._sweep_buckets)
        msg_layout, var_layout = (
            SweepLayout(self._buffer(name), n, classes)
            for name, n, classes in zip(
                ("enum_msg_source", "sweep_var_source"),
                (self.edge_var.shape[0], self.num_variables),
                self._sweep_classes,
                strict=True,
            )
        )
        return SweepWiringTensors(
            msg_layout,
            var_layout,
            self._buffer("sweep_bel_slots"),
            [self._buffer(f"sweep_bucket_pos_{j}") for j in n],
            [self._buffer(f"sweep_bucket_slots_{j}") for j in n],
            self._buffer("sweep_cav_var"),
            [self._buffer(f"sweep_others_{b}") for b in range(len(self._enum_buckets))],
            self._buffer("sweep_row_of"),
            [self._buffer(f"sweep_{k}") for k in ("pre_slots", "suf_slots", "cav_lo", "cav_hi")]
            if "sweep_pre_slots" in self._buffers  # (BP with hard zeros)
            else None,
        )

    def _slots(self) -> Slots:
        """The general path's slots (buffers ``var_slots``, ``slot_vars_j``, ``slot_rows_j``)."""
        n = range(self._num_buckets)
        return Slots(
            self.var_slots,
            tuple(self._buffer(f"slot_vars_{j}") for j in n),
            tuple(self._buffer(f"slot_rows_{j}") for j in n),
        )

    def _buffer(self, name: str) -> torch.Tensor:
        t = self._buffers[name]
        assert t is not None
        return t

    def _mf_step(
        self,
        q: torch.Tensor,
        u: torch.Tensor,
        th: list[torch.Tensor],
        ws: Workspace | None = None,
        parity: int = 0,
    ) -> torch.Tensor:
        # th: per merge (_merge_tables, padded with 0: padded states have probability 0), or
        # [every message row's table entries] (the enumerated contraction, padding 0; ws: its
        # reused buffers without autograd)
        d, slots = self.damping, self._slots()

        def update(q: torch.Tensor) -> torch.Tensor:  # every variable's new, damped marginals
            if self.enumerated:
                msg = bucketed_expectations(q, th, self._bucket_others(), self._row_of(), ws)
                field = variable_beliefs(msg, u, slots)  # (u + the messages)
            else:
                field = mf_field(q, u, th, self._merges, self.edge_var, slots)
            # a padding state gets no mass, however far hard zeros weigh down the real ones
            # (their fields reach multiples of the sentinel, below the padding's NEG)
            field = field.masked_fill(self.state_absent, -math.inf)
            new = torch.softmax(field, dim=2)
            return new if d == 0.0 else (1.0 - d) * new + d * q

        if self.schedule == "parallel":
            return update(q)
        masks = self.colour_masks
        for c in range(self.num_colours):  # (each colour class in turn, on the others' latest)
            q = torch.where(masks[c].view(1, -1, 1), update(q), q)
        return q

    def _damp(
        self, new: torch.Tensor, old: torch.Tensor, damping: torch.Tensor, in_place: bool
    ) -> torch.Tensor:
        """``(1 - d) new + d old`` (``new`` itself when ``d = 0``), into ``new`` when
        ``in_place`` (no autograd). Shape: any, ``new`` and ``old`` alike."""
        if self.damping == 0.0:
            return new
        return torch.lerp(new, old, damping, out=new if in_place else None)

    def _mf_pairwise_step(
        self,
        q: torch.Tensor,
        field0: torch.Tensor,
        tables: list[tuple[torch.Tensor, torch.Tensor, TableGradLink | None]] | torch.Tensor,
        damping: torch.Tensor,
        ws: Workspace | None = None,
        parity: int = 0,
    ) -> torch.Tensor:
        """One parallel mean-field iteration on the pairwise fast path (state-major): each
        pairwise column receives ``sum_j theta[j -> a] q_partner[j]``, one :class:`StateMatvec`
        per unit (infer/pairwise.py) and direction, or one broadcast product over every column
        (small problems), gathered to the variables like BP messages.

        Shape:
            ``q``, ``field0``: ``(B, K, V)``; ``tables``: per unit ``(to0, to1, link)``, the
            tables ``(K, K, F_u or 1)`` (``to0`` the transposed view of ``to1``; ``link``: see
            :func:`~pgmunfold.infer.pairwise.link_table_grad`), or every column's table
            ``(K, K, P)`` (:func:`~pgmunfold.infer.pairwise.column_tables`); output:
            ``(B, K, V)``.
        """
        ws = ws if ws is not None else Workspace(False)
        B, K, V = q.shape
        P = self.pw_var.shape[0]
        qp = torch.index_select(
            q.reshape(B * K, V), 1, self.pw_partner_var, out=ws("qp", (B * K, P), q)
        ).view(B, K, P)
        out = ws("m", (B, K, P + 1), q)
        parts = []
        start = 0
        if isinstance(tables, torch.Tensor):  # m[b, a, col] = sum_j W[j, a, col] qp[b, j, col]
            o = None if out is None else out.narrow(2, 0, P)
            parts.append(torch.sum(tables.unsqueeze(0) * qp.unsqueeze(2), dim=1, out=o))
        else:
            for (to0, to1, link), n in zip(tables, self._pw_unit_sizes, strict=True):
                for s_, t, tt, tr in ((start, to0, to1, True), (start + n, to1, to0, False)):
                    o = None if out is None else out.narrow(2, s_, n)
                    parts.append(state_matvec(t, tt, qp.narrow(2, s_, n), o, link, tr))
                start += 2 * n
        if out is None:
            m = torch.cat([*parts, q.new_zeros(B, K, 1)], dim=2)
        else:
            m = out
            m.narrow(2, P, 1).zero_()
        slots = self.pw_slots_t
        incoming = torch.index_select(
            m.view(B * K, P + 1), 1, slots, out=ws("inc", (B * K, len(slots)), q)
        )
        field = self._pw_slot_sum(m.view(B * K, P + 1), incoming, ws("field", (B, K, V), q), B, K)
        field = torch.add(field, field0, out=field if ws.enabled else None)
        new = torch.softmax(field, dim=1)
        return self._damp(new, q, damping, in_place=ws.enabled)

    def _fused_mf_step(
        self, q: torch.Tensor, field0: torch.Tensor, tables: torch.Tensor, ws: Workspace, t: int
    ) -> torch.Tensor:
        """Iteration ``t`` of parallel mean-field with ``backend="triton"`` (no-grad only): the
        two fused kernels of :mod:`pgmunfold.infer.fused` (expected log-potentials per factor;
        field, softmax and damping per variable), into reused buffers (two marginal buffers
        alternate by the parity of ``t``).

        Shape:
            ``q``, ``field0``: ``(B, K, V)``; ``tables``: ``(K, K, T)`` (nats); output:
            ``(B, K, V)``.
        """
        B, K, V = q.shape
        m = ws("m", (B, K, self.pw_var.shape[0] + 1), q)
        out = ws(f"q{t % 2}", (B, K, V), q)
        assert m is not None and out is not None
        if t == 0:
            m.narrow(2, m.shape[2] - 1, 1).zero_()  # the padding column (never written)
        fused_mf_messages(q, tables, self._fused_wiring(), m)
        return fused_mf_update(m, field0, q, self.fused_slots, self.damping, out)

    def _fused_wiring(self) -> FusedWiring:
        """The fused kernels' index columns (buffers ``fused_*``)."""
        table = self.fused_table if self.fused_table.numel() else None
        return FusedWiring(
            self.fused_col0, self.fused_col1, self.fused_var0, self.fused_var1, table
        )

    def _run_mf_pairwise(
        self, u: torch.Tensor, thetas: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel mean-field on the pairwise fast path; returns the last two ``q``
        ``(B, V, K)`` (natural layout)."""
        B, _, K = u.shape
        scopes = self._scopes()
        # kept between no-grad forwards on CPU (given back below, without the marginals)
        ws = self._workspace(pooled=True)
        damping = self._damping_scalar(u)
        fields: dict[tuple[int, ...], torch.Tensor] = {}
        tables: dict[
            tuple[int, ...],
            list[tuple[torch.Tensor, torch.Tensor, TableGradLink | None]] | torch.Tensor,
        ] = {}
        q = torch.softmax(u, dim=2).transpose(1, 2).contiguous()
        prev = q
        fused = self.backend == "triton" and ws.enabled
        stacked: dict[tuple[int, ...], torch.Tensor] = {}  # backend="triton", no-grad
        P = int(self.pw_var.shape[0])
        columns = B * K * K * P <= pairwise._COLUMNS_MAX  # all columns at once
        for t in range(self.iterations):
            prev = q
            ukey, key = self._unary_key(t), self._pairwise_key(t)
            new = ukey not in fields or key not in (stacked if fused else tables)
            th = self._at(thetas, t) if new else []
            if ukey not in fields:  # the unary factors' field: their tables, whatever q is
                f0 = u
                for i in self._un_idx:
                    tab = _pad_last(th[i], K, 0.0).expand(self._mgroups[i].num_factors, -1)
                    f0 = f0.index_add(1, scopes[i][:, 0], tab.unsqueeze(0).expand(B, -1, -1))
                # a padding state gets no mass, however far hard zeros weigh down the real
                # ones (their fields reach multiples of the sentinel, below the padding's NEG)
                absent = self.state_absent.t()
                fields[ukey] = f0.transpose(1, 2).masked_fill(absent, -math.inf).contiguous()
            if fused:
                if key not in stacked:
                    stacked[key] = fused_tables([th[i] for i in self._pw_idx], K, bits=False)
                q = self._fused_mf_step(q, fields[ukey], stacked[key], ws, t)
                continue
            if key not in tables and columns:  # every column's table, plain autograd
                units = [unit_state_major([th[i] for i in un], K, 0.0) for un in self._pw_units]
                out = ws(f"mf_tab{key}", (K, K, P), u)
                tables[key] = column_tables(units, self._pw_unit_sizes, out)
            elif key not in tables:  # padded states: weight 0 (their marginal is exactly 0)
                tables[key] = [  # (a compiled step runs plain ops: no link)
                    link_table_grad(
                        unit_state_major([th[i] for i in un], K, 0.0, ws, f"mf_tab{key}/{j}"),
                        not self.compile_steps,
                    )
                    for j, un in enumerate(self._pw_units)
                ]
            q = self._layer(
                self._mf_pairwise_step, q, fields[ukey], tables[key], damping, ws=ws, parity=t % 2
            )
        q_out, prev_out = q.transpose(1, 2).contiguous(), prev.transpose(1, 2)
        self._pool.give_back(ws, q, prev)  # (the result reads them)
        return q_out, prev_out

    def _mf_binary_coefficients(self, th: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per slot row, the weight ``d = t11 - t10 - t01 + t00`` of its edge's factor, and per
        variable the sum of its edges' offsets (``t10 - t00`` in slot 0, ``t01 - t00`` in slot
        1): a variable's log-odds field is ``offset + sum_slots d q1[partner]``.

        Shape:
            outputs ``(D' * V,)`` and ``(V,)``.
        """
        offs, ds = [], []
        for i in self._pw_idx:
            off, a, b = pairwise_coefficients(th[i])
            n = self._mgroups[i].num_factors
            offs.append(off.expand(n, 2).reshape(-1))
            ds.append(interaction(a, b).expand(n, 2).reshape(-1))
        zero = offs[0].new_zeros(1)  # the padding edge
        slots = self.bin_slots_t
        w = torch.cat([*ds, zero]).index_select(0, slots)
        offset = torch.cat([*offs, zero]).index_select(0, slots).view(-1, self.num_variables)
        return w, offset.sum(dim=0)

    def _mf_binary_step(
        self,
        q: torch.Tensor,
        field: torch.Tensor,
        w: torch.Tensor,
        signs: torch.Tensor,
        damping: torch.Tensor,
        ws: Workspace | None = None,
        parity: int = 0,
    ) -> torch.Tensor:
        """One parallel mean-field iteration on binary variables:
        ``h = field + sum_slots w q1[partner]``, then ``q = (sigmoid(-h), sigmoid(h))``, both
        states formed directly (``1 - q1`` would lose a tiny ``q0``), and damped as
        probabilities, like the general path.

        Shape:
            ``q``: ``(B, 2, V)`` (state-major); ``field``: ``(B, V)``; ``w``: ``(D' * V,)``;
            ``signs``: ``(1, 2, 1)``, -1 and +1; output: ``(B, 2, V)``.
        """
        ws = ws if ws is not None else Workspace(False)
        B, _, V = q.shape
        part = self.bin_slot_partner_q1  # a gather from q whole: no select node in autograd
        qp = _select_columns(q.reshape(B, 2 * V), part, ws("qp", (B, part.shape[0]), q))
        qp = qp.mul_(w) if ws.enabled else qp * w
        h = torch.sum(qp.view(B, -1, V), dim=1, out=ws("h", (B, V), q))
        h = h.add_(field) if ws.enabled else h + field
        z = torch.mul(h.unsqueeze(1), signs, out=ws(f"q{parity}", (B, 2, V), q))
        # exp(logsigmoid): torch's sigmoid is 1 / (1 + exp(-x)), 0 once exp(-x) overflows
        # (x < -709.8 in float64, -88.7 in float32), where the softmax of the general path
        # still gives exp(x), subnormal but not 0 (its log is then not the hard-zero sentinel)
        new = torch.exp(F.logsigmoid(z), out=z if ws.enabled else None)
        return self._damp(new, q, damping, in_place=ws.enabled)

    def _run_mf_binary(
        self, u: torch.Tensor, thetas: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel mean-field on binary variables in log-odds form; returns the last two
        ``q`` ``(B, V, 2)`` (natural layout)."""
        unaries = _FoldedUnaries(self, thetas, log_odds=True)  # for its unary log-odds
        ws = Workspace.for_forward()
        damping = self._damping_scalar(u)
        # -1, +1 made on the device (no host-to-device copy: CUDA-graph capture allows it)
        signs = (torch.arange(2, dtype=u.dtype, device=u.device) * 2 - 1).view(1, 2, 1)
        ul = u[:, :, 1] - u[:, :, 0]
        unary: dict[tuple[int, ...], torch.Tensor] = {}
        coeffs: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        fields: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
        q = torch.softmax(u, dim=2).transpose(1, 2).contiguous()
        prev = q
        for t in range(self.iterations):
            prev = q
            th = self._at(thetas, t)
            ukey = self._unary_key(t)
            if ukey not in unary:  # the unary factors' log-odds (undamped), whatever q is
                unary[ukey] = unaries.field(ul, unaries.fresh(th))
            key = self._pairwise_key(t)
            if key not in coeffs:
                coeffs[key] = self._mf_binary_coefficients(th)
            w, offset = coeffs[key]
            if (ukey, key) not in fields:
                fields[ukey, key] = unary[ukey] + offset
            q = self._layer(
                self._mf_binary_step, q, fields[ukey, key], w, signs, damping, ws=ws, parity=t % 2
            )
        return q.transpose(1, 2).contiguous(), prev.transpose(1, 2)

    def _run_mf(self, u: torch.Tensor, thetas: Sequence[torch.Tensor]) -> Beliefs:
        if self.mf_binary:
            q, prev = self._run_mf_binary(u, thetas)
        elif self.mf_fast:
            q, prev = self._run_mf_pairwise(u, thetas)
        else:
            ws = self._workspace() if self.enumerated else None
            fstep = None  # (FlatStep: the marginals in the flat layout of the states that exist)
            flat_thetas = isinstance(thetas, _FlatThetas)  # (the enumerated contraction's)
            if flat_thetas and self._sweep_buckets >= 0 and not self.compile_steps:
                fstep = FlatStep(self._sweep_wiring(), self.max_card, self.damping, "sum")
                field = fstep.field(u, self._buffers.get("sweep_var_absent"))
                q = fstep.mf_initial(field)
            else:
                q = torch.softmax(u, dim=2)
            prev = q
            merged: dict[tuple[int, ...], list[torch.Tensor]] = {}
            for t in range(self.iterations):
                prev = q
                key = self._copy_key(t)
                if key not in merged:
                    if isinstance(thetas, _FlatThetas):  # every row bucket's table entries
                        merged[key] = self._enumerated_entries(thetas.flat, t)
                    else:  # one table per merge, padded with 0
                        merged[key] = self._merge_tables(self._at(thetas, t), 0.0)
                if fstep is not None:
                    q = self._layer(fstep.mf_step, q, field, merged[key], ws=ws)
                else:
                    q = self._layer(self._mf_step, q, u, merged[key], ws=ws)
            if fstep is not None:  # (B, V, K), probability 0 at the states that do not exist
                layout = fstep.wiring.beliefs
                q, prev = (fstep.padded(x, layout, 0.0) for x in (q, prev))
        residual = (q - prev).abs().amax(dim=(1, 2))
        log_q = q.clamp_min(torch.finfo(q.dtype).tiny).log()
        log_marg = torch.where(q > 0, log_q, torch.full_like(log_q, NEG))

        def bound() -> torch.Tensor:  # computed when first read
            th = self._at(thetas, self.iterations - 1)
            slot0 = [m[0] for m in mf_expected_potentials(q, th, self._mgroups, self.edge_var)]
            logz = mean_field_bound(q, u, slot0, self._mgroups, self.edge_var)
            return _neg_inf_below_sentinel(logz + self._constant(thetas, self.iterations - 1))

        return Beliefs(
            log_marg,
            _map_states(log_marg),
            residual,
            log_partition=Deferred(bound),
            factor_log_beliefs={},
        )


def compile(
    graph: FactorGraph,
    algorithm: Algorithm = "bp",
    iterations: int = 50,
    damping: float = 0.0,
    schedule: Schedule = "parallel",
    semiring: SemiringName = "sum",
    untie: UntieSpec = False,
    untie_last: int | None = None,
    exact_cavity: bool | None = None,
    dtype: torch.dtype | None = None,
    fast_path: bool = True,
    checkpoint: bool = False,
    contraction: Contraction = "auto",
    backend: Literal["torch", "triton"] = "torch",
    compile_steps: bool = False,
) -> UnfoldedNetwork:
    """Compile ``graph`` into an :class:`UnfoldedNetwork` (see its documentation for arguments).

    All graph walking, grouping, index building and schedule construction happen here, once.
    """
    return UnfoldedNetwork(
        graph,
        algorithm=algorithm,
        iterations=iterations,
        damping=damping,
        schedule=schedule,
        semiring=semiring,
        untie=untie,
        untie_last=untie_last,
        exact_cavity=exact_cavity,
        dtype=dtype,
        fast_path=fast_path,
        checkpoint=checkpoint,
        contraction=contraction,
        backend=backend,
        compile_steps=compile_steps,
    )
