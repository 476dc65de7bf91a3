"""Conversion to and from `pgmpy <https://pgmpy.org>`_ discrete models (optional dependency).

:func:`from_pgmpy` turns a pgmpy ``DiscreteMarkovNetwork`` (``MarkovNetwork`` in older
releases), ``FactorGraph`` or ``DiscreteBayesianNetwork`` (``BayesianNetwork``) into a
:class:`~pgmunfold.FactorGraph`; :func:`to_pgmpy` goes the other way, to a Markov network.

Conventions:

* Variables keep pgmpy's node names (any hashable: strings, ints, tuples) and are declared in
  the model's node order, so the same model always gives the same graph.
* pgmpy stores potentials (non-negative values); pgmunfold stores log-potentials. Zeros become
  ``-inf`` (hard constraints) and back.
* States are integer positions ``0 .. k-1``. pgmpy's named states are taken in the order of the
  first factor (or CPD) that mentions the variable; other factors are permuted to agree with it.

pgmpy is not a dependency of pgmunfold: ``pip install pgmpy`` (or ``pgmunfold[pgmpy]``).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from pgmunfold.graph import FactorGraph, GraphError

__all__ = ["from_pgmpy", "to_pgmpy"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "pgmunfold's pgmpy interop needs the optional dependency pgmpy: "
    "pip install pgmpy  (or: pip install 'pgmunfold[pgmpy]')"
)

# exp() of a log-potential above this overflows float64; such tables are rescaled on export
_MAX_LOG = 700.0


def _pgmpy() -> Any:
    try:
        import pgmpy.factors.discrete as factors
        import pgmpy.models as models
    except ImportError as exc:  # pragma: no cover - exercised only without pgmpy
        raise ImportError(_INSTALL_HINT) from exc
    return models, factors


def _model_classes(models: Any, *names: str) -> tuple[type, ...]:
    """The classes among ``names`` that this pgmpy release defines (deprecated stubs included)."""
    return tuple(c for n in names if isinstance(c := getattr(models, n, None), type))


def _log_table(values: Any, what: str) -> np.ndarray:
    vals = np.asarray(values, dtype=np.float64)
    if np.isnan(vals).any():
        raise GraphError(f"{what}: the pgmpy table contains NaN")
    if (vals < 0).any():
        raise GraphError(f"{what}: the pgmpy table has negative entries (potentials must be >= 0)")
    with np.errstate(divide="ignore"):
        return np.log(vals)


def _factor_table(
    factor: Any, cards: dict[Hashable, int], states: dict[Hashable, list[Any]], what: str
) -> tuple[tuple[Hashable, ...], np.ndarray]:
    """(scope, log table) of a pgmpy ``DiscreteFactor``, states aligned with ``states``."""
    scope = tuple(factor.variables)
    table = _log_table(factor.values, what)
    names = getattr(factor, "state_names", None) or {}
    for axis, var in enumerate(scope):
        k = int(table.shape[axis])
        if var in cards and cards[var] != k:
            raise GraphError(
                f"{what}: variable {var!r} has {k} states here but {cards[var]} elsewhere"
            )
        cards.setdefault(var, k)
        mine = list(names.get(var, range(k)))
        ref = states.setdefault(var, mine)
        if mine != ref:
            if sorted(map(repr, mine)) != sorted(map(repr, ref)):
                raise GraphError(
                    f"{what}: variable {var!r} has states {mine} here but {ref} elsewhere"
                )
            perm = [mine.index(s) for s in ref]
            table = np.take(table, perm, axis=axis)
    return scope, table


def from_pgmpy(model: Any) -> FactorGraph:
    """Convert a pgmpy discrete model into a :class:`~pgmunfold.FactorGraph`.

    Args:
        model: a pgmpy ``DiscreteMarkovNetwork`` / ``MarkovNetwork`` (its factors), a
            ``FactorGraph`` (its factors) or a ``DiscreteBayesianNetwork`` /
            ``BayesianNetwork`` (one factor per CPD, over the child and its parents; the
            result's ``log Z`` is then 0).

    Returns:
        A factor graph over the same variables (pgmpy's node names), with one factor per pgmpy
            factor or CPD and tables as log values (zeros become ``-inf``); factors of one shape
            form one factor group.

    Raises:
        ImportError: pgmpy is not installed.
        TypeError: ``model`` is not one of the supported pgmpy models.
        GraphError: inconsistent cardinalities or state names, negative or NaN entries, or a
            variable no factor mentions (its cardinality is then unknown).
    """
    models, factors = _pgmpy()
    bayes = _model_classes(models, "DiscreteBayesianNetwork", "BayesianNetwork")
    markov = _model_classes(
        models, "DiscreteMarkovNetwork", "MarkovNetwork", "FactorGraph", "MarkovModel"
    )
    m: Any = model  # isinstance() against a tuple of classes would narrow it to ``object``
    if bayes and isinstance(model, bayes):
        cpds = list(m.get_cpds())
        pgm_factors = [cpd.to_factor() for cpd in cpds]
        labels = [f"CPD of {cpd.variable!r}" for cpd in cpds]
    elif markov and isinstance(model, markov):
        pgm_factors = list(m.get_factors())
        labels = [
            f"pgmpy factor {i} over {tuple(f.variables)!r}" for i, f in enumerate(pgm_factors)
        ]
    else:
        supported = ", ".join(c.__name__ for c in (*markov, *bayes))
        raise TypeError(f"from_pgmpy: unsupported model type {type(model).__name__}; {supported}")

    factor_type = factors.DiscreteFactor
    order: list[Hashable] = [n for n in m.nodes() if not isinstance(n, factor_type)]
    seen = set(order)
    cards: dict[Hashable, int] = {}
    states: dict[Hashable, list[Any]] = {}
    converted: list[tuple[tuple[Hashable, ...], np.ndarray]] = []
    for f, label in zip(pgm_factors, labels, strict=True):
        scope, table = _factor_table(f, cards, states, label)
        converted.append((scope, table))
        for v in scope:
            if v not in seen:
                seen.add(v)
                order.append(v)
    missing = [v for v in order if v not in cards]
    if missing:
        raise GraphError(
            f"from_pgmpy: no factor or CPD mentions {missing[:5]!r}, so their cardinality is "
            f"unknown; add a factor (e.g. a uniform one) for each"
        )
    fg = FactorGraph()
    for v in order:
        fg.add_variable(v, cards[v])
    for scope, table in converted:
        fg.add_factor(scope, table)
    logger.debug(
        "from_pgmpy: %s -> %d variables, %d factors",
        type(model).__name__,
        len(order),
        len(converted),
    )
    return fg


def _potentials(table: np.ndarray, what: str) -> np.ndarray:
    top = float(table.max()) if table.size else 0.0
    if top > _MAX_LOG:
        logger.warning(
            "to_pgmpy: %s has log-potentials up to %.1f; rescaled by exp(-%.1f) to avoid "
            "overflow (marginals are unchanged, log Z shifts by that amount)",
            what,
            top,
            top,
        )
        table = table - top
    with np.errstate(under="ignore"):
        return np.exp(table)


def to_pgmpy(fg: FactorGraph) -> Any:
    """Convert a factor graph into a pgmpy ``DiscreteMarkovNetwork`` (``MarkovNetwork``).

    Every factor becomes one ``DiscreteFactor`` with values ``exp(log_potentials)`` (``-inf``
    becomes 0); every factor's scope becomes a clique of the network; a variable no factor
    touches gets a uniform unary factor so that pgmpy knows its cardinality. Factors without
    variables (constants) are multiplied into the first factor. The distribution and, unless a
    table must be rescaled to avoid overflow (logged), ``Z`` are preserved.

    Intended for small graphs: one Python object per factor.

    Raises:
        ImportError: pgmpy is not installed.
    """
    models, factors = _pgmpy()
    network_cls = getattr(models, "DiscreteMarkovNetwork", None) or models.MarkovNetwork
    factor_cls = factors.DiscreteFactor
    fg.validate()
    cards = fg.cardinalities
    names: list[Hashable] = fg.variables
    net = network_cls()
    net.add_nodes_from(names)
    covered = np.zeros(len(names), dtype=bool)
    out: list[Any] = []
    constant = 0.0
    for grp in fg.groups:
        for f in range(grp.num_factors):
            scope: Sequence[int] = [int(v) for v in grp.scopes[f]]
            table = np.asarray(grp.table(f), dtype=np.float64)
            if not scope:
                constant += float(table)
                continue
            covered[scope] = True
            scope_names = [names[v] for v in scope]
            for i, a in enumerate(scope_names):
                for b in scope_names[i + 1 :]:
                    net.add_edge(a, b)
            vals = _potentials(table, f"factor {f} of group {grp.name!r}")
            out.append(factor_cls(scope_names, [int(cards[v]) for v in scope], vals))
    for v in np.nonzero(~covered)[0]:
        k = int(cards[v])
        out.append(factor_cls([names[int(v)]], [k], np.ones(k)))
    if constant != 0.0 and out:
        first = out[0]
        out[0] = factor_cls(
            list(first.variables), list(first.cardinality), first.values * np.exp(constant)
        )
    net.add_factors(*out)
    logger.debug("to_pgmpy: %d variables, %d factors", len(names), len(out))
    return net
