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

from pgmunfold.infer.ops import NEG, Semiring, floored_exp

__all__ = ["enumerated_messages", "enumerated_tables"]


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
