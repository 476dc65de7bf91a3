"""Fused Triton kernels for flooding BP and parallel mean-field on the pairwise fast paths
(``backend="triton"``): two kernels per iteration instead of 13 (K = 2) to 50 (K = 8) torch
ops, so every message, belief and table entry crosses memory about once per iteration.
Forward only: under autograd the torch kernels of :mod:`pgmunfold.infer.pairwise` run (same
function, hand-written backward).

The layout is the pairwise fast path's (see :mod:`pgmunfold.infer.pairwise`): state-major
messages ``msg`` ``(B, K, P + 1)`` in bits, the last column a zero padding column; beliefs and
fields ``(B, K, V)``. Each program of a kernel handles one batch row and a block of variables
or factors, with all ``K`` states in registers (a ``(K, BLOCK)`` tile, loaded along the
contiguous column axis).

1. :func:`fused_beliefs`: ``bel[b, :, v] = field[b, :, v] + sum_d msg[b, :, slots[d * V + v]]``.
2. :func:`fused_factor_messages`: per pairwise factor, both directions from one read of its
   ``K x K`` table: cavity ``q = bel[var] - msg[col]`` at each end (with hard zeros: the
   field plus the variable's other incoming messages, and step 1 is skipped), ``new[a] = reduce_c
   (tab[a, c] + q[c])`` in the log domain (log2-sum-exp2 or max, in registers), normalised
   over states, clamped at :data:`~pgmunfold.infer.pairwise.NEG_BITS`, damped
   ``new + d (old - new)``, written to the other message buffer.

Mean-field (marginals ``q`` ``(B, K, V)``, probabilities):

3. :func:`fused_mf_messages`: per pairwise factor, from one read of its table (nats),
   ``m[:, a, col0] = sum_c tab[a, c] q[:, c, var1]`` and ``m[:, c, col1] = sum_a tab[a, c]
   q[:, a, var0]``.
4. :func:`fused_mf_update`: per variable, ``softmax(field + sum_d m[:, :, slots[d * V + v]])``
   damped ``new + d (q - new)``, written to the other marginal buffer.

Binary variables with finite tables (the binary fast path's log-odds layout: messages
``(B, E' + 1)``, one number each): step 1 on ``(B, 1, .)`` views, then
:func:`fused_binary_messages`, both messages of a factor from its four table entries.

Every BP reduction runs in the log domain in registers, so there is no exp-form range condition
(unlike ``contraction="matmul"``) and hard zeros in tables are clamped to the sentinel.

The naive twins (:func:`fused_beliefs_naive`, :func:`fused_factor_messages_naive`,
:func:`fused_mf_messages_naive`, :func:`fused_mf_update_naive`) are plain torch;
``tests/test_fused.py`` checks the kernels against them and the network's Triton backend
against the general path. On a machine without CUDA the kernels run in Triton's interpreter
when ``TRITON_INTERPRET=1`` is set before the first use (slow: for tests only).

Shapes and index buffers (:class:`FusedWiring`, one row per pairwise factor over all
pairwise groups in order; built at compile time, immutable):
    ``col0``, ``col1``: ``(F,)`` message columns to scope positions 0 and 1.
    ``var0``, ``var1``: ``(F,)`` the variables at scope positions 0 and 1.
    ``table``: ``(F,)`` the factor's column in the table stack of :func:`fused_tables`
    (a shared group's factors all point at one column), or ``None`` when it is factor ``f``'s
    own column ``f`` (no shared table: no index to read).

The index columns may be int32 (half the index traffic; the network uses int32 below
``2^31`` entries) or int64.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from pgmunfold.infer.ops import NEG, Semiring
from pgmunfold.infer.pairwise import LOG2E, NEG_BITS

__all__ = [
    "FusedWiring",
    "fused_beliefs",
    "fused_beliefs_naive",
    "fused_binary_messages",
    "fused_binary_messages_naive",
    "fused_factor_messages",
    "fused_factor_messages_naive",
    "fused_mf_messages",
    "fused_mf_messages_naive",
    "fused_mf_update",
    "fused_mf_update_naive",
    "fused_tables",
    "require_triton",
    "triton_interpreting",
]

_MAX_GRID_Y = 65535
"""CUDA's limit on the second grid axis (the batch row): larger batches launch in chunks."""

_TILE = 2048
"""Elements per program's ``(K, K, BLOCK)`` table tile (factors) or ``(K, BLOCK)`` tile
(variables, a quarter of it): the block sizes follow from it. Chosen without a GPU, from the
register counts of the kernels compiled for an H100 (``python -m benchmarks.fused_tiles
--ahead-of-time``, ``benchmarks/results/fused_aot_sm90.txt``): in float32 40-64 registers
per thread for K = 2..16 (80-160 in float64) and no spills. Not yet timed: on a GPU
``benchmarks/fused_tiles.py`` sweeps it and :data:`_WARPS`."""

_WARPS = 8
"""Warps per program of both kernels."""


class FusedWiring(NamedTuple):
    """Per pairwise factor (all pairwise groups, in order), the fused kernels' index columns
    (see the module docstring; ``table`` ``None``: factor ``f`` uses table column ``f``).

    Shape:
        every field: ``(F,)`` int32 or int64.
    """

    col0: torch.Tensor
    col1: torch.Tensor
    var0: torch.Tensor
    var1: torch.Tensor
    table: torch.Tensor | None = None


def require_triton() -> None:
    """Raise an ``ImportError`` saying what to install when Triton is missing."""
    try:
        import triton  # noqa: F401
    except ImportError as e:  # pragma: no cover - triton is a test dependency
        raise ImportError(
            "backend='triton' needs the triton package (it ships with CUDA builds of torch; "
            "pip install triton)"
        ) from e


def triton_interpreting() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels then run on CPU
    tensors, in Python (for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_layout(
    what: str, expect: Mapping[str, tuple[int, ...]], **tensors: torch.Tensor
) -> None:
    """The kernels index raw memory: every tensor must be contiguous, on one device, with the
    expected shape (``-1`` matches any extent); a ``ValueError`` names the argument."""
    device = next(iter(tensors.values())).device
    for name, x in tensors.items():
        shape = expect.get(name)
        if shape is not None and (
            len(shape) != x.dim()
            or any(e not in (-1, d) for e, d in zip(shape, x.shape, strict=True))
        ):
            raise ValueError(f"{what}: {name} has shape {tuple(x.shape)}, expected {shape}")
        if not x.is_contiguous():
            raise ValueError(f"{what}: {name} must be contiguous (shape {tuple(x.shape)})")
        if x.device != device:
            raise ValueError(f"{what}: {name} is on {x.device}, the others on {device}")


def _check_device(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not _kernels().interpreted:
        raise RuntimeError(
            f"backend='triton' runs on CUDA tensors, got a {x.device.type} tensor; move the "
            "network with .cuda(), use backend='torch', or set TRITON_INTERPRET=1 before the "
            "first forward to run the kernels in Triton's (slow) interpreter"
        )


class _Kernels(NamedTuple):
    beliefs: Any
    factors: Any
    interpreted: bool
    mf_factors: Any = None
    mf_variables: Any = None
    binary_factors: Any = None


@functools.cache
def _kernels() -> _Kernels:
    """The jitted kernels, imported on first use (whether they interpret is fixed then)."""
    require_triton()
    from pgmunfold.infer import _triton_kernels as k

    return _Kernels(
        k.beliefs_kernel,
        k.factors_kernel,
        triton_interpreting(),
        k.mf_factors_kernel,
        k.mf_variables_kernel,
        k.binary_factors_kernel,
    )


def _factor_block(KP: int, tile: int) -> int:
    """Factors per program of the factors kernel."""
    return max(1, min(1024, tile // (KP * KP)))


def _belief_block(KP: int, tile: int) -> int:
    """Variables per program of the beliefs kernel."""
    return max(16, min(1024, tile // (4 * KP)))


def _pow2(n: int) -> int:
    """The register tile's state extent: a power of two >= ``n`` (and >= 2)."""
    return max(2, 1 << max(0, (n - 1).bit_length()))


def fused_tables(thetas: Sequence[torch.Tensor], K: int, bits: bool = True) -> torch.Tensor:
    """Stack the pairwise groups' natural log-potentials into the kernels' table layout: for
    BP (``bits``) in bits, padded to ``K`` states and clamped at the hard-zero sentinel; for
    mean-field (``bits=False``) in nats, padded with 0 (a missing state has probability 0)
    and clamped at :data:`~pgmunfold.infer.ops.NEG`.

    ``out[a, c, t]`` is the entry (state ``a`` of scope position 0, state ``c`` of position 1)
    of table ``t``; the tables of the groups follow each other along ``t``. Written in place
    into one new tensor (no autograd: the kernels that read it have no backward).

    Shape:
        ``thetas[g]``: ``(F_g or 1, k0, k1)``; output: ``(K, K, sum_g F_g)`` (``F_g = 1`` for a
        shared table).
    """
    scale, pad, floor = (LOG2E, NEG_BITS, NEG_BITS) if bits else (1.0, 0.0, NEG)
    sizes = [th.shape[0] for th in thetas]
    out = thetas[0].new_full((K, K, sum(sizes)), pad)
    start = 0
    for th, n in zip(thetas, sizes, strict=True):  # one strided pass per group, then in place
        k0, k1 = th.shape[1:]
        block = out[:k0, :k1, start : start + n]
        torch.mul(th.permute(1, 2, 0), scale, out=block).clamp_min_(floor)
        start += n
    return out


def fused_beliefs(
    msg: torch.Tensor, field: torch.Tensor, slots: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """``out[b, :, v] = field[b, :, v] + sum_d msg[b, :, slots[d * V + v]]`` (one kernel).

    Args:
        slots: ``slots[d * V + v]``, the ``d``-th message column of variable ``v``, or the zero
            padding column ``P``.

    Shape:
        ``msg``: ``(B, K, P + 1)``; ``field``, ``out``: ``(B, K, V)``; ``slots``: ``(D * V,)``.
    """
    B, K, n_col = msg.shape
    V = field.shape[2]
    shapes = {"field": (B, K, V), "out": (B, K, V), "slots": (-1,)}
    _check_layout("fused_beliefs", shapes, msg=msg, field=field, out=out, slots=slots)
    _check_device(msg)
    KP = _pow2(K)
    block = _belief_block(KP, _TILE)
    n_deg = slots.shape[0] // V if V else 0
    _launch(_kernels().beliefs, V, block, (msg, field, out), slots, n_col, V, n_deg, K, KP)
    return out


def fused_factor_messages(
    msg: torch.Tensor,
    belief: torch.Tensor,
    tables: torch.Tensor,
    wiring: FusedWiring,
    semiring: Semiring,
    damping: float,
    out: torch.Tensor,
    slots: torch.Tensor | None = None,
) -> torch.Tensor:
    """New (normalised, damped) messages of every pairwise factor, both directions, written to
    ``out`` (one kernel; the padding column of ``out`` is left as it is).

    Args:
        msg: the current messages (bits, state-major).
        belief: ``field`` plus the sum of the incoming messages (:func:`fused_beliefs`); each
            cavity is the belief minus the variable's own message. With ``slots`` given: the
            ``field`` itself, and each cavity is the field plus the variable's *other*
            incoming messages (exact with hard zeros: no sentinel is subtracted).
        tables: :func:`fused_tables`.
        damping: ``d``: ``out = new + d (old - new)``.
        slots: the slot table of :func:`fused_beliefs` (exact cavities), or ``None``.

    Shape:
        ``msg``, ``out``: ``(B, K, P + 1)``; ``belief``: ``(B, K, V)``; ``tables``:
        ``(K, K, T)``; ``wiring`` fields: ``(F,)``; ``slots``: ``(D * V,)``.
    """
    B, K, n_col = msg.shape
    V = belief.shape[2]
    F = wiring.col0.shape[0]
    idx = {n: x for n, x in wiring._asdict().items() if x is not None}
    extra = {} if slots is None else {"slots": slots}
    shapes: dict[str, tuple[int, ...]] = {n: (F,) for n in idx}
    shapes.update(belief=(B, K, V), out=(B, K, n_col), tables=(K, K, -1))
    _check_layout(
        "fused_factor_messages",
        shapes,
        msg=msg,
        belief=belief,
        out=out,
        tables=tables,
        **idx,
        **extra,
    )
    _check_device(msg)
    KP = _pow2(K)
    block = _factor_block(KP, _TILE)
    exact = slots is not None
    n_deg = slots.shape[0] // V if slots is not None and V else 0
    identity = wiring.table is None
    flags = (semiring == "max", damping != 0.0, exact, identity, NEG_BITS)
    # pointers a flag says are not read: any tensor
    table = wiring.col0 if wiring.table is None else wiring.table
    slot_arg = slots if slots is not None else wiring.col0
    args = (
        tables,
        *wiring[:4],
        table,
        slot_arg,
        F,
        n_col,
        V,
        tables.shape[2],
        n_deg,
        float(damping),
    )
    _launch(_kernels().factors, F, block, (msg, belief, out), *args, K, KP, *flags)
    return out


def fused_mf_messages(
    q: torch.Tensor, tables: torch.Tensor, wiring: FusedWiring, out: torch.Tensor
) -> torch.Tensor:
    """Mean-field: per pairwise factor, the expected log-potential each end receives,
    ``out[:, a, col0] = sum_c tab[a, c] q[:, c, var1]`` and ``out[:, c, col1] = sum_a tab[a, c]
    q[:, a, var0]``, from one read of its table (one kernel; the padding column of ``out`` is
    left as it is).

    Shape:
        ``q``: ``(B, K, V)`` marginals; ``tables``: :func:`fused_tables` with ``bits=False``,
        ``(K, K, T)``; ``out``: ``(B, K, P + 1)``.
    """
    B, K, V = q.shape
    F = wiring.col0.shape[0]
    idx = {n: x for n, x in wiring._asdict().items() if x is not None}
    shapes = {"out": (B, K, -1), "tables": (K, K, -1), **{n: (F,) for n in idx}}
    _check_layout("fused_mf_messages", shapes, q=q, out=out, tables=tables, **idx)
    _check_device(q)
    KP = _pow2(K)
    table = wiring.col0 if wiring.table is None else wiring.table
    args = (tables, *wiring[:4], table, F, out.shape[2], V, tables.shape[2], K, KP)
    kern = _kernels().mf_factors
    _launch(kern, F, _factor_block(KP, _TILE), (q, out), *args, wiring.table is None)
    return out


def fused_mf_update(
    m: torch.Tensor,
    field: torch.Tensor,
    q: torch.Tensor,
    slots: torch.Tensor,
    damping: float,
    out: torch.Tensor,
) -> torch.Tensor:
    """Mean-field: new marginals ``softmax_states(field + sum_d m[:, :, slots[d * V + v]])``,
    damped ``new + d (q - new)``, written to ``out`` (one kernel).

    Shape:
        ``m``: ``(B, K, P + 1)`` (:func:`fused_mf_messages`); ``field``, ``q``, ``out``:
        ``(B, K, V)``; ``slots``: ``(D * V,)``.
    """
    B, K, n_col = m.shape
    V = field.shape[2]
    shapes = {"field": (B, K, V), "q": (B, K, V), "out": (B, K, V), "slots": (-1,)}
    _check_layout("fused_mf_update", shapes, m=m, field=field, q=q, out=out, slots=slots)
    _check_device(m)
    KP = _pow2(K)
    n_deg = slots.shape[0] // V if V else 0
    args = (slots, n_col, V, n_deg, float(damping), K, KP, damping != 0.0)
    _launch(_kernels().mf_variables, V, _belief_block(KP, _TILE), (m, field, q, out), *args)
    return out


def fused_binary_messages(
    lo: torch.Tensor,
    belief: torch.Tensor,
    tables: torch.Tensor,
    wiring: FusedWiring,
    semiring: Semiring,
    damping: float,
    out: torch.Tensor,
) -> torch.Tensor:
    """BP on binary variables in log-odds (the binary fast path's layout): per pairwise
    factor, both messages from its four table entries, ``new1 = lae(t01, t11 + q0) - lae(t00,
    t10 + q0)`` with ``q0 = belief[var0] - lo[col0]`` the cavity log-odds (``lae``:
    log-add-exp, or max for max-product), and ``new0`` likewise, in a form exact for huge
    ``|q|`` (evidence gives ``1e30``: the dominant terms are factored out by the sign of
    ``q``); damped ``new + d (old - new)`` and written to ``out`` (one kernel; columns no
    factor owns are left as they are).

    Shape:
        ``lo``, ``out``: ``(B, E' + 1)``; ``belief``: ``(B, V)`` (:func:`fused_beliefs` on
        ``(B, 1, .)`` views); ``tables``: ``(4, T)``, row ``2 a + c`` the entries
        ``(a, c)`` in nats (:func:`fused_tables` with ``K = 2``, ``bits=False``, viewed).
    """
    B, n_col = lo.shape
    V = belief.shape[1]
    F = wiring.col0.shape[0]
    idx = {n: x for n, x in wiring._asdict().items() if x is not None}
    shapes: dict[str, tuple[int, ...]] = {n: (F,) for n in idx}
    shapes.update(belief=(B, V), out=(B, n_col), tables=(4, -1))
    _check_layout(
        "fused_binary_messages", shapes, lo=lo, belief=belief, out=out, tables=tables, **idx
    )
    _check_device(lo)
    table = wiring.col0 if wiring.table is None else wiring.table
    args = (tables, *wiring[:4], table, F, n_col, V, tables.shape[1], float(damping))
    flags = (semiring == "max", damping != 0.0, wiring.table is None)
    block = _factor_block(2, _TILE)  # (as many factors per program as the K = 2 kernel)
    _launch(_kernels().binary_factors, F, block, (lo, belief, out), *args, *flags)
    return out


def _launch(kernel: Any, n: int, block: int, rows: tuple[torch.Tensor, ...], *args: Any) -> None:
    """Launch ``kernel`` over blocks of ``n`` items (grid axis 0) and the batch rows (axis 1,
    in chunks of at most :data:`_MAX_GRID_Y`): its arguments are the batch-row slices of
    ``rows``, then ``args``, then ``block``."""
    B = rows[0].shape[0]
    for b0 in range(0, B, _MAX_GRID_Y):
        chunk = slice(b0, b0 + _MAX_GRID_Y)
        grid = ((n + block - 1) // block, min(B - b0, _MAX_GRID_Y))
        kernel[grid](
            *(t[chunk] for t in rows), *args, block, num_warps=_WARPS, enable_fp_fusion=True
        )


def fused_beliefs_naive(
    msg: torch.Tensor, field: torch.Tensor, slots: torch.Tensor
) -> torch.Tensor:
    """The naive twin of :func:`fused_beliefs` (plain torch).

    Shape:
        ``msg``: ``(B, K, P + 1)``; ``field``: ``(B, K, V)``; ``slots``: ``(D * V,)``;
        output: ``(B, K, V)``.
    """
    B, K, V = field.shape
    return field + msg[:, :, slots].view(B, K, -1, V).sum(dim=2)


def fused_factor_messages_naive(
    msg: torch.Tensor,
    belief: torch.Tensor,
    tables: torch.Tensor,
    wiring: FusedWiring,
    semiring: Semiring,
    damping: float,
    slots: torch.Tensor | None = None,
) -> torch.Tensor:
    """The naive twin of :func:`fused_factor_messages` (plain torch, natural broadcasting);
    returns a copy of ``msg`` with the pairwise columns replaced.

    Shape:
        ``msg``: ``(B, K, P + 1)``; ``belief``: ``(B, K, V)``; ``tables``: ``(K, K, T)``;
        ``slots``: ``(D * V,)``; output: ``(B, K, P + 1)``.
    """
    old0, old1 = msg[:, :, wiring.col0], msg[:, :, wiring.col1]  # (B, K, F)

    def cavity(var: torch.Tensor, col: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        if slots is None:
            return belief[:, :, var] - old
        cols = slots.view(-1, belief.shape[2])[:, var]  # (D, F): every column of the variable
        others = torch.where(cols != col, msg[:, :, cols], 0.0)  # (B, K, D, F), own one zeroed
        return belief[:, :, var] + others.sum(dim=2)

    q0 = cavity(wiring.var0, wiring.col0, old0)
    q1 = cavity(wiring.var1, wiring.col1, old1)
    tab = tables if wiring.table is None else tables[:, :, wiring.table]
    tab = tab.unsqueeze(0)  # (1, a, c, F)

    def reduce(x: torch.Tensor, dim: int) -> torch.Tensor:
        if semiring == "max":
            return x.amax(dim=dim)
        return torch.logsumexp(x / LOG2E, dim=dim) * LOG2E

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - torch.logsumexp(x / LOG2E, dim=1, keepdim=True) * LOG2E).clamp_min(NEG_BITS)

    new0 = normalise(reduce(tab + q1.unsqueeze(1), 2))
    new1 = normalise(reduce(tab + q0.unsqueeze(2), 1))
    out = msg.clone()
    out[:, :, wiring.col0] = torch.lerp(new0, old0, damping)
    out[:, :, wiring.col1] = torch.lerp(new1, old1, damping)
    return out


def fused_mf_messages_naive(
    q: torch.Tensor, tables: torch.Tensor, wiring: FusedWiring, n_col: int
) -> torch.Tensor:
    """The naive twin of :func:`fused_mf_messages` (plain torch); the padding column and any
    column no factor writes hold 0.

    Shape:
        ``q``: ``(B, K, V)``; ``tables``: ``(K, K, T)``; output: ``(B, K, n_col)``.
    """
    tab = tables if wiring.table is None else tables[:, :, wiring.table]
    out = q.new_zeros(q.shape[0], q.shape[1], n_col)
    out[:, :, wiring.col0] = torch.einsum("acf,bcf->baf", tab, q[:, :, wiring.var1])
    out[:, :, wiring.col1] = torch.einsum("acf,baf->bcf", tab, q[:, :, wiring.var0])
    return out


def fused_mf_update_naive(
    m: torch.Tensor, field: torch.Tensor, q: torch.Tensor, slots: torch.Tensor, damping: float
) -> torch.Tensor:
    """The naive twin of :func:`fused_mf_update` (plain torch).

    Shape:
        ``m``: ``(B, K, P + 1)``; ``field``, ``q``: ``(B, K, V)``; output: ``(B, K, V)``.
    """
    return torch.lerp(torch.softmax(fused_beliefs_naive(m, field, slots), dim=1), q, damping)


def fused_binary_messages_naive(
    lo: torch.Tensor,
    belief: torch.Tensor,
    tables: torch.Tensor,
    wiring: FusedWiring,
    semiring: Semiring,
    damping: float,
) -> torch.Tensor:
    """The naive twin of :func:`fused_binary_messages` (plain torch, through the 2-state
    log-domain contraction); returns a copy of ``lo`` with the factors' columns replaced.

    Shape:
        ``lo``: ``(B, E' + 1)``; ``belief``: ``(B, V)``; ``tables``: ``(4, T)``; output:
        ``(B, E' + 1)``.
    """
    tab = (tables if wiring.table is None else tables[:, wiring.table]).view(2, 2, -1)
    old0, old1 = lo[:, wiring.col0], lo[:, wiring.col1]
    q0 = belief[:, wiring.var0] - old0
    q1 = belief[:, wiring.var1] - old1
    zero = torch.zeros_like(q0)
    # the cavity distributions, normalised (log-probabilities of states 0 and 1: exact also
    # for huge log-odds), then the contraction
    p0 = torch.log_softmax(torch.stack([zero, q0], dim=1), dim=1)  # (B, 2, F)
    p1 = torch.log_softmax(torch.stack([zero, q1], dim=1), dim=1)
    x1 = tab.unsqueeze(0) + p0.unsqueeze(2)  # (B, a, c, F)
    x0 = tab.unsqueeze(0) + p1.unsqueeze(1)
    red = (lambda x, d: x.amax(dim=d)) if semiring == "max" else torch.logsumexp
    m1, m0 = red(x1, 1), red(x0, 2)  # (B, 2, F)
    out = lo.clone()
    out[:, wiring.col0] = torch.lerp(m0[:, 1] - m0[:, 0], old0, damping)
    out[:, wiring.col1] = torch.lerp(m1[:, 1] - m1[:, 0], old1, damping)
    return out
