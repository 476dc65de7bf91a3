"""Compile-time schedules: colour classes for sequential BP and mean-field sweeps.

* Factor colouring: factors of one colour share no variable, so updating a colour class in
  parallel is the same as updating its factors one after another.
* Variable colouring: variables of one colour share no factor, so a parallel mean-field update of
  a class is exact coordinate ascent (the variational bound never decreases).

Both are greedy in id order (deterministic: the same graph gives the same schedule).
"""

from __future__ import annotations

import numpy as np

from pgmunfold.compile.wiring import Wiring

__all__ = ["factor_colouring", "variable_colouring"]


def _smallest_free(used: np.ndarray) -> int:
    """Smallest non-negative colour not in ``used`` (entries < 0 are ignored)."""
    used = used[used >= 0]
    if not used.size:
        return 0
    taken = np.zeros(int(used.max()) + 2, dtype=bool)
    taken[used] = True
    return int(np.argmin(taken))


def _factor_ids_per_variable(w: Wiring) -> list[np.ndarray]:
    """Global factor ids (numbered group by group, in declared order) incident to each
    variable (edges are laid out merge by merge: each group's block is placed by its
    ``edge_start``)."""
    efac = np.zeros(w.num_edges, dtype=np.int64)
    base = 0
    for g in w.groups:
        efac[g.edge_start : g.edge_stop] = np.repeat(np.arange(base, base + g.num_factors), g.arity)
        base += g.num_factors
    order = np.argsort(w.edge_var, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(w.degree)])
    return [efac[order[bounds[v] : bounds[v + 1]]] for v in range(w.num_variables)]


def factor_colouring(w: Wiring) -> list[np.ndarray]:
    """Greedy colouring of all factors (numbered group by group, factor by factor).

    Returns:
        per group, an int64 array ``(F_g,)`` of colours.
    """
    var_facs = _factor_ids_per_variable(w)
    colour = np.full(sum(g.num_factors for g in w.groups), -1, dtype=np.int64)
    out = []
    f = 0
    for g, sc in zip(w.groups, w.scopes, strict=True):
        for row in sc:
            if len(row):  # constant (arity-0) factors are never scheduled: colour -1
                colour[f] = _smallest_free(colour[np.concatenate([var_facs[v] for v in row])])
            f += 1
        out.append(colour[f - g.num_factors : f])
    return out


def variable_colouring(w: Wiring) -> np.ndarray:
    """Greedy colouring of variables: two variables sharing a factor get different colours.

    Shape:
        output: ``(V,)`` int64 colours.
    """
    var_facs = _factor_ids_per_variable(w)
    rows = [row for sc in w.scopes for row in sc]
    colour = np.full(w.num_variables, -1, dtype=np.int64)
    for v in range(w.num_variables):
        facs = var_facs[v]
        nb = np.concatenate([rows[f] for f in facs]) if facs.size else np.zeros(0, np.int64)
        colour[v] = _smallest_free(colour[nb])
    return colour
