"""Exact inference for small graphs by variable elimination in the log domain (float64).

The test oracle of the library and a user feature: log partition function, marginals (as the
gradient of ``log Z`` with respect to an added zero unary) and MAP states (by max-product
elimination and conditioning). The cost is set by the largest intermediate table of a greedy
min-size elimination order; :class:`ExactInferenceTooLarge` is raised, naming the size, when it
exceeds ``max_table_size``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Literal

import numpy as np
import torch

from pgmunfold.graph import FactorGraph, GraphError
from pgmunfold.infer.ops import NEG

__all__ = [
    "ExactInferenceTooLarge",
    "exact_log_partition",
    "exact_map",
    "exact_marginals",
]

DEFAULT_MAX_TABLE = 1 << 24


class ExactInferenceTooLarge(GraphError):
    """Exact inference would need a table larger than the allowed size."""


_Factor = tuple[tuple[int, ...], torch.Tensor]


def _collect(
    fg: FactorGraph, evidence: Mapping[Any, int] | None, unaries: dict[int, torch.Tensor]
) -> list[_Factor]:
    fg.validate()
    cards = fg.cardinalities
    out: list[_Factor] = []
    for grp in fg.groups:
        # the finite sentinel keeps logsumexp's gradient free of inf - inf (see infer.ops)
        tab = torch.as_tensor(grp.log_potentials, dtype=torch.float64).clamp_min(NEG)
        for f in range(grp.num_factors):
            scope = tuple(int(v) for v in grp.scopes[f])
            out.append((scope, tab if grp.shared else tab[f]))
    for name, state in (evidence or {}).items():
        vid = fg.variable_id(name)
        k = int(cards[vid])
        s = int(state)
        if not 0 <= s < k:
            raise GraphError(f"evidence for variable {name!r}: state {s} out of range [0, {k})")
        t = torch.full((k,), NEG, dtype=torch.float64)
        t[s] = 0.0
        out.append(((vid,), t))
    for vid, t in unaries.items():
        out.append(((vid,), t))
    return out


def _align(scope: tuple[int, ...], table: torch.Tensor, target: tuple[int, ...]) -> torch.Tensor:
    """Permute/reshape ``table`` over ``scope`` to broadcast over the sorted ``target`` scope."""
    order = sorted(range(len(scope)), key=lambda i: scope[i])
    t = table.permute(*order) if len(scope) > 1 else table
    sorted_scope = [scope[i] for i in order]
    shape = [1] * len(target)
    pos = {v: i for i, v in enumerate(target)}
    for v, n in zip(sorted_scope, t.shape, strict=True):
        shape[pos[v]] = n
    return t.reshape(shape)


def _eliminate(
    factors: list[_Factor],
    cards: np.ndarray,
    semiring: Literal["sum", "max"],
    max_table_size: int,
    keep: tuple[int, ...] = (),
) -> torch.Tensor:
    """Eliminate every variable but ``keep``; return the table over ``keep`` (sorted ids)."""
    facs = list(factors)
    todo = sorted(set(range(len(cards))) - set(keep))
    # greedy min-size order, computed on the fly
    while todo:
        best, best_size = -1, None
        best_union: tuple[int, ...] = ()
        for v in todo:
            union = sorted({v} | {w for s, _ in facs if v in s for w in s})
            size = int(np.prod([int(cards[w]) for w in union], dtype=np.float64))
            if best_size is None or size < best_size:
                best, best_size, best_union = v, size, tuple(union)
        assert best_size is not None
        if best_size > max_table_size:
            space = float(np.prod(cards.astype(np.float64)))
            raise ExactInferenceTooLarge(
                f"exact inference needs an intermediate table of {best_size} entries (over "
                f"{len(best_union)} variables) > max_table_size={max_table_size}; the joint "
                f"state space has {space:.3g} configurations of {len(cards)} variables"
            )
        inside = [(s, t) for s, t in facs if best in s]
        facs = [(s, t) for s, t in facs if best not in s]
        full_shape = [int(cards[u]) for u in best_union]
        acc = torch.zeros(full_shape, dtype=torch.float64)
        for s, t in inside:
            acc = acc + _align(s, t, best_union)
        axis = best_union.index(best)
        red = torch.logsumexp(acc, dim=axis) if semiring == "sum" else acc.amax(dim=axis)
        new_scope = tuple(u for u in best_union if u != best)
        facs.append((new_scope, red))
        todo.remove(best)
    target = tuple(sorted(keep))
    shape = [int(cards[w]) for w in target]
    total = torch.zeros(shape, dtype=torch.float64)
    for s, t in facs:
        total = total + _align(s, t, target)
    return total


def exact_log_partition(
    fg: FactorGraph,
    evidence: Mapping[Any, int] | None = None,
    *,
    max_table_size: int = DEFAULT_MAX_TABLE,
) -> torch.Tensor:
    """Exact ``log Z`` (with ``evidence``: log of the unnormalised mass consistent with it).

    Returns:
        0-dim float64 tensor; ``-inf`` when every configuration has probability zero.
    """
    facs = _collect(fg, evidence, {})
    return _finite_or_neg_inf(_eliminate(facs, fg.cardinalities, "sum", max_table_size))


def _finite_or_neg_inf(x: torch.Tensor) -> torch.Tensor:
    """Map sentinel-valued results (below ``NEG / 2``) back to ``-inf``."""
    return torch.where(x < NEG / 2, torch.full_like(x, -torch.inf), x)


def exact_marginals(
    fg: FactorGraph,
    evidence: Mapping[Any, int] | None = None,
    *,
    max_table_size: int = DEFAULT_MAX_TABLE,
) -> dict[Hashable, torch.Tensor]:
    """Exact marginals of every variable (given ``evidence``), as ``d log Z / d unary``.

    Returns:
        dict name -> float64 tensor of shape ``(K,)`` (the variable's cardinality).

    Raises:
        GraphError: when the model has probability zero everywhere (given the evidence).
    """
    cards = fg.cardinalities
    with torch.enable_grad():  # marginals are a gradient: works inside torch.no_grad() too
        unaries = {
            v: torch.zeros(int(cards[v]), dtype=torch.float64, requires_grad=True)
            for v in range(len(cards))
        }
        facs = _collect(fg, evidence, unaries)
        logz = _eliminate(facs, cards, "sum", max_table_size)
        if not torch.isfinite(_finite_or_neg_inf(logz.detach())):
            raise GraphError("the model has probability zero everywhere (log Z = -inf)")
        grads = torch.autograd.grad(logz, list(unaries.values()))
    return {fg.variable_name(v): g.detach() for v, g in zip(unaries, grads, strict=True)}


def exact_map(
    fg: FactorGraph,
    evidence: Mapping[Any, int] | None = None,
    *,
    max_table_size: int = DEFAULT_MAX_TABLE,
) -> tuple[dict[Hashable, int], torch.Tensor]:
    """A most probable joint state by max-product elimination with conditioning.

    Returns:
        ``(states, score)``: dict name -> state, and the 0-dim unnormalised log-probability of
        that state (ties are broken towards the lowest state of the lowest-id variable).
    """
    cards = fg.cardinalities
    ev: dict[Hashable, int] = dict(evidence or {})
    facs = _collect(fg, ev, {})
    best = _finite_or_neg_inf(_eliminate(facs, cards, "max", max_table_size))
    if not torch.isfinite(best):
        raise GraphError("the model has probability zero everywhere (max score = -inf)")
    fixed: dict[int, int] = {fg.variable_id(k): int(s) for k, s in ev.items()}
    for v in range(len(cards)):
        if v in fixed:
            continue
        clamp: list[_Factor] = [
            ((u,), torch.where(torch.arange(int(cards[u])) == s, 0.0, NEG).double())
            for u, s in fixed.items()
        ]
        table = _eliminate(facs + clamp, cards, "max", max_table_size, keep=(v,))
        fixed[v] = int(torch.argmax(table))
    states = {fg.variable_name(v): fixed[v] for v in range(len(cards))}
    return states, best
