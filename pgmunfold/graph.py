"""Declaration of discrete factor graphs (numpy only; no torch operations).

A :class:`FactorGraph` stores variables (hashable names, cardinalities) and *factor groups*:
many factors of one shape kept as two arrays, an integer scope array ``(F, arity)`` of variable
ids and a stacked log-potential table ``(F, *cards)`` (or one table ``(*cards)`` shared by all
``F`` factors). Nothing is stored per factor as a Python object, so million-factor graphs are
declared in seconds through :meth:`FactorGraph.add_factors`.

Single factors added with :meth:`FactorGraph.add_factor` are collected per shape and become one
group per distinct cardinality signature the first time :attr:`FactorGraph.groups` is read.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

__all__ = [
    "FactorGraph",
    "FactorGroup",
    "GraphError",
    "VariableArray",
]


class GraphError(ValueError):
    """Invalid factor-graph declaration (unknown variable, bad table shape, NaN, ...)."""


def _to_numpy(x: Any) -> np.ndarray:
    """Array-like (numpy, torch, nested lists) -> float64 numpy array of the graph's own (a
    copy, also of a float64 array or CPU tensor: later edits of the input, which would skip
    the declaration-time checks, never leak in)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=np.float64, copy=True)


def _check_table(table: np.ndarray, what: str) -> None:
    if table.size == 0 or table.max() < np.inf:  # (one pass: a NaN or +inf fails the test)
        return
    if np.isnan(table).any():
        idx = tuple(int(i) for i in np.argwhere(np.isnan(table))[0])
        raise GraphError(f"{what}: log-potential table of shape {table.shape} has NaN at {idx}")
    if np.isposinf(table).any():
        idx = tuple(int(i) for i in np.argwhere(np.isposinf(table))[0])
        raise GraphError(f"{what}: log-potential table of shape {table.shape} has +inf at {idx}")


@dataclass(frozen=True)
class VariableArray:
    """A block of variables ``(prefix, *index)`` with consecutive ids.

    Attributes:
        prefix: the first element of every element name.
        shape: shape of the array.
        cardinality: number of states of every element.
        start: id of the element at index ``(0, ..., 0)``.

    Shape:
        ``ids``: ``shape``, int64 variable ids in C order.
    """

    prefix: Hashable
    shape: tuple[int, ...]
    cardinality: int
    start: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # a Python int (np.prod breaks torch.compile graphs)

    @property
    def ids(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.size, dtype=np.int64).reshape(self.shape)

    def __getitem__(self, index: Any) -> Any:
        """Variable id(s) of the indexed element(s), like ``ids[index]``."""
        return self.ids[index]

    def name(self, flat: int) -> tuple[Hashable, ...]:
        idx = np.unravel_index(flat, self.shape)
        return (self.prefix, *(int(i) for i in idx))


@dataclass
class FactorGroup:
    """Many factors of one shape: the unit of compilation and of parameter tying.

    Attributes:
        name: the group's name (unique in its graph).
        scopes: int64 array ``(F, arity)`` of variable ids; row ``f`` is factor ``f``'s scope.
        log_potentials: float64 array ``(F, *cards)``, or ``(*cards)`` when ``shared``.
        shared: one table for all ``F`` factors (it is then one parameter when compiled).
        cards: cardinalities of the scope positions (equal for every factor of the group).
    """

    name: str
    scopes: np.ndarray
    log_potentials: np.ndarray
    shared: bool
    cards: tuple[int, ...]

    @property
    def num_factors(self) -> int:
        return int(self.scopes.shape[0])

    @property
    def arity(self) -> int:
        return int(self.scopes.shape[1])

    def table(self, f: int) -> np.ndarray:
        """Log-potential table of factor ``f``, shape ``cards``."""
        return self.log_potentials if self.shared else self.log_potentials[f]


@dataclass
class _PendingSingles:
    scopes: list[tuple[int, ...]] = field(default_factory=list)
    tables: list[np.ndarray] = field(default_factory=list)


class FactorGraph:
    """A discrete Markov random field: variables and factor groups with log-potential tables.

    The unnormalised log-probability of a joint state ``x`` is the sum over factors ``f`` of
    ``log_potentials_f[x[scope_f]]``; ``-inf`` entries are hard zeros.

    Example::

        fg = FactorGraph()
        fg.add_variable("a", cardinality=2)
        fg.add_variable("b", cardinality=3)
        fg.add_factor(("a", "b"), np.zeros((2, 3)))
        x = fg.add_variables("x", shape=(4, 4), cardinality=2)
        pairs = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
        fg.add_factors(pairs, np.zeros((2, 2)))       # one table shared by 12 factors
    """

    def __init__(self) -> None:
        self._cards_chunks: list[np.ndarray] = []
        self._num_declared = 0
        self._single_names: dict[Hashable, int] = {}
        self._single_ids: list[int] = []  # sorted ids of singly-declared variables
        self._single_id_names: list[Hashable] = []
        self._arrays: list[VariableArray] = []
        self._array_by_prefix: dict[Hashable, VariableArray] = {}
        self._array_starts: list[int] = []
        self._cards_cache: np.ndarray | None = None
        self._groups: list[FactorGroup] = []
        self._pending: dict[tuple[int, ...], _PendingSingles] = {}
        self._group_names: set[str] = set()

    # ------------------------------------------------------------------ variables
    @property
    def num_variables(self) -> int:
        return self._num_vars()

    def add_variable(self, name: Hashable, cardinality: int) -> int:
        """Declare one variable; returns its integer id.

        Args:
            name: a hashable name (str, int, or tuple of str/int).
            cardinality: number of discrete states, >= 1.
        """
        self._check_name_free(name)
        card = self._check_card(cardinality, name)
        vid = self._num_vars()
        self._extend_cards(np.array([card], dtype=np.int64))
        self._single_names[name] = vid
        self._single_ids.append(vid)
        self._single_id_names.append(name)
        return vid

    def add_variables(
        self, prefix: Hashable, shape: int | Sequence[int], cardinality: int
    ) -> VariableArray:
        """Declare an array of variables named ``(prefix, i, j, ...)``.

        Returns a :class:`VariableArray` (its ``ids`` index the array).

        Shape:
            ``result.ids``: ``shape``, the variable ids in C order.
        """
        shp = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
        if any(s < 0 for s in shp):
            raise GraphError(f"variable array {prefix!r}: negative shape {shp}")
        try:
            hash(prefix)
        except TypeError as exc:
            raise GraphError(f"variable array prefix {prefix!r} is not hashable") from exc
        if prefix in self._array_by_prefix:
            raise GraphError(f"variable array {prefix!r} is declared twice")
        for nm in self._single_names:
            if isinstance(nm, tuple) and nm and nm[0] == prefix and len(nm) == len(shp) + 1:
                raise GraphError(
                    f"variable array {prefix!r} of shape {shp} clashes with the variable {nm!r}"
                )
        card = self._check_card(cardinality, prefix)
        arr = VariableArray(prefix, shp, card, self._num_vars())
        self._extend_cards(np.full(arr.size, card, dtype=np.int64))
        self._arrays.append(arr)
        self._array_by_prefix[prefix] = arr
        self._array_starts.append(arr.start)
        return arr

    def _num_vars(self) -> int:
        return self._num_declared

    def _extend_cards(self, cards: np.ndarray) -> None:
        self._cards_chunks.append(cards)
        self._num_declared += len(cards)
        self._cards_cache = None

    def _check_card(self, cardinality: Any, name: Any) -> int:
        try:
            card = int(cardinality)
        except (TypeError, ValueError) as exc:
            raise GraphError(
                f"variable {name!r}: cardinality {cardinality!r} is not an integer"
            ) from exc
        if card != cardinality or card < 1:
            raise GraphError(
                f"variable {name!r}: cardinality must be an integer >= 1, got {cardinality!r}"
            )
        return card

    def _check_name_free(self, name: Hashable) -> None:
        try:
            hash(name)
        except TypeError as exc:
            raise GraphError(f"variable name {name!r} is not hashable") from exc
        if name in self._single_names:
            raise GraphError(f"variable {name!r} is declared twice")
        if self._array_lookup(name) is not None:
            raise GraphError(
                f"variable {name!r} is declared twice (it is an element of a variable array)"
            )

    def _array_lookup(self, name: Any) -> int | None:
        if not isinstance(name, tuple) or not name or not self._array_by_prefix:
            return None
        try:
            arr = self._array_by_prefix.get(name[0])
        except TypeError:
            return None
        if arr is None or len(name) != len(arr.shape) + 1:
            return None
        idx = name[1:]
        if not all(
            isinstance(i, int | np.integer) and 0 <= i < s
            for i, s in zip(idx, arr.shape, strict=True)
        ):
            return None
        flat = int(np.ravel_multi_index(tuple(int(i) for i in idx), arr.shape)) if arr.shape else 0
        return arr.start + flat

    @property
    def cardinalities(self) -> np.ndarray:
        """Cardinality of every variable, indexed by id.

        Shape:
            ``(V,)`` int64.
        """
        if self._cards_cache is None:
            chunks = self._cards_chunks
            self._cards_cache = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
            self._cards_cache.setflags(write=False)
        return self._cards_cache

    def __len__(self) -> int:
        return self._num_vars()

    def variable_id(self, name: Hashable) -> int:
        """Integer id of a variable name; raises :class:`GraphError` naming it when unknown."""
        vid = self._lookup(name)
        if vid is None:
            raise GraphError(f"unknown variable {name!r}")
        return vid

    def _lookup(self, name: Any) -> int | None:
        try:
            vid = self._single_names.get(name)
        except TypeError:
            return None
        if vid is not None:
            return vid
        return self._array_lookup(name)

    def __contains__(self, name: object) -> bool:
        return self._lookup(name) is not None

    def variable_name(self, vid: int) -> Hashable:
        """Name of the variable with id ``vid``."""
        vid = int(vid)
        if not 0 <= vid < self._num_vars():
            raise GraphError(f"variable id {vid} out of range [0, {self._num_vars()})")
        k = bisect.bisect_right(self._array_starts, vid) - 1
        if k >= 0:
            arr = self._arrays[k]
            if vid < arr.start + arr.size:
                return arr.name(vid - arr.start)
        j = bisect.bisect_left(self._single_ids, vid)
        return self._single_id_names[j]

    @property
    def variables(self) -> list[Hashable]:
        """All variable names in id order (builds a list: avoid on million-variable graphs)."""
        return [self.variable_name(i) for i in range(self._num_vars())]

    def iter_variables(self) -> Iterator[tuple[Hashable, int]]:
        """Yield ``(name, cardinality)`` in id order."""
        cards = self.cardinalities
        for i in range(self._num_vars()):
            yield self.variable_name(i), int(cards[i])

    @property
    def variable_arrays(self) -> list[VariableArray]:
        return list(self._arrays)

    # ------------------------------------------------------------------ factors
    def _resolve_scope(self, scope: Any, what: str) -> tuple[int, ...]:
        if isinstance(scope, str) or not isinstance(scope, Iterable):
            scope = (scope,)
        ids = []
        for nm in scope:
            if isinstance(nm, int | np.integer) and self._lookup(nm) is None:
                raise GraphError(
                    f"{what}: unknown variable {nm!r} (add_factor takes variable names; "
                    "for integer ids, as returned by add_variable, use add_factors)"
                )
            vid = self._lookup(nm)
            if vid is None:
                raise GraphError(f"{what}: unknown variable {nm!r}")
            ids.append(vid)
        if len(set(ids)) != len(ids):
            raise GraphError(f"{what}: scope {tuple(scope)!r} repeats a variable")
        return tuple(ids)

    def add_factor(self, scope: Any, log_potentials: Any) -> None:
        """Add one factor over the variables ``scope`` (names, in table-axis order).

        Args:
            scope: tuple of variable names (a single name is a unary factor).
            log_potentials: array-like (numpy or torch) of log-potentials.

        Shape:
            ``log_potentials``: ``(card(scope[0]), ..., card(scope[-1]))``.
        """
        what = f"factor over {scope!r}"
        ids = self._resolve_scope(scope, what)
        table = _to_numpy(log_potentials)
        cards = tuple(int(self.cardinalities[i]) for i in ids)
        if table.shape != cards:
            raise GraphError(
                f"{what}: log-potential table has shape {table.shape}, expected {cards} "
                f"(the cardinalities of the scope)"
            )
        _check_table(table, what)
        self._check_not_all_zero(table, what)
        pend = self._pending.setdefault(cards, _PendingSingles())
        pend.scopes.append(ids)
        pend.tables.append(table)

    def add_factors(self, scopes: Any, log_potentials: Any, name: str | None = None) -> FactorGroup:
        """Add a group of ``F`` factors of one shape.

        Args:
            scopes: ``F`` scopes of equal arity: an int array ``(F, arity)`` of variable ids, or a
                sequence of tuples of variable names.
            log_potentials: ``(F, *cards)`` stacked tables, or ``(*cards)`` shared by all factors
                (compiled as a single parameter).
            name: optional group name (default ``"group<i>"``); must be unique.

        Shape:
            ``scopes``: ``(F, arity)``; ``log_potentials``: ``(F, *cards)`` or ``(*cards)``.
        """
        gname = name if name is not None else f"group{len(self._groups)}"
        if gname in self._group_names:
            raise GraphError(f"factor group name {gname!r} is used twice")
        what = f"factor group {gname!r}"
        sc = self._scopes_array(scopes, what)
        F, arity = sc.shape
        table = _to_numpy(log_potentials)
        if F == 0:
            raise GraphError(f"{what}: no scopes given")
        every = self.cardinalities
        if every.min(initial=0) == every.max(initial=0):  # (one cardinality: one shape)
            cards = (int(every[0]),) * arity
        else:
            cards_all = every[sc]  # (F, arity)
            cards = tuple(int(c) for c in cards_all[0])
            bad = np.nonzero((cards_all != cards_all[0]).any(axis=1))[0]
            if bad.size:
                f = int(bad[0])
                raise GraphError(
                    f"{what}: factor {f} over {self._scope_names(sc[f])} has cardinalities "
                    f"{tuple(int(c) for c in cards_all[f])}, but factor 0 over "
                    f"{self._scope_names(sc[0])} has {cards}; a group needs one shape"
                )
        if table.shape == cards:
            shared = True
        elif table.shape == (F, *cards):
            shared = False
        else:
            raise GraphError(
                f"{what}: log-potential table has shape {table.shape}, expected {(F, *cards)} "
                f"(stacked) or {cards} (shared) for {F} scopes of cardinalities {cards}"
            )
        if arity > 1:
            if arity <= 4:  # (every pair of positions: cheaper than a sort of each row)
                pairs = [(i, j) for i in range(arity) for j in range(i + 1, arity)]
                same = functools.reduce(np.logical_or, (sc[:, i] == sc[:, j] for i, j in pairs))
            else:
                srt = np.sort(sc, axis=1)
                same = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
            rep = np.nonzero(same)[0]
            if rep.size:
                f = int(rep[0])
                raise GraphError(
                    f"{what}: factor {f} scope {self._scope_names(sc[f])} repeats a variable"
                )
        _check_table(table, what)
        self._check_not_all_zero(
            table if shared else table.reshape(F, -1), what, stacked=not shared
        )
        grp = FactorGroup(gname, sc, table, shared, cards)
        self._groups.append(grp)
        self._group_names.add(gname)
        return grp

    def _check_not_all_zero(self, table: np.ndarray, what: str, stacked: bool = False) -> None:
        flat = table.reshape(table.shape[0], -1) if stacked else table.reshape(1, -1)
        if flat.shape[1] == 0 or flat.min() > -np.inf:  # (one pass: no hard zero at all)
            return
        dead = np.nonzero(np.isneginf(flat).all(axis=1))[0]
        if dead.size:
            which = f" (factor {int(dead[0])})" if stacked else ""
            raise GraphError(
                f"{what}{which}: every entry of the log-potential table is -inf, so the model "
                f"has probability zero everywhere"
            )

    def _scopes_array(self, scopes: Any, what: str) -> np.ndarray:
        if hasattr(scopes, "detach"):
            scopes = scopes.detach().cpu().numpy()
        if isinstance(scopes, np.ndarray) and scopes.dtype.kind in "iu":
            sc = np.array(
                scopes, dtype=np.int64, order="C"
            )  # own copy: later edits of the input never leak in
            if sc.ndim == 1:
                sc = sc[:, None]
            if sc.ndim != 2:
                raise GraphError(
                    f"{what}: integer scopes must have shape (F, arity), got {scopes.shape}"
                )
            n = self._num_vars()
            if sc.size and (sc.min() < 0 or sc.max() >= n):
                f, j = (int(t[0]) for t in np.nonzero((sc < 0) | (sc >= n)))
                raise GraphError(
                    f"{what}: factor {f} refers to variable id {int(sc[f, j])}, "
                    f"but ids range over [0, {n})"
                )
            return np.ascontiguousarray(sc)
        rows = [self._resolve_scope(s, f"{what}, factor {i}") for i, s in enumerate(scopes)]
        if not rows:
            raise GraphError(f"{what}: no scopes given")
        ar = {len(r) for r in rows}
        if len(ar) != 1:
            raise GraphError(
                f"{what}: scopes have different arities {sorted(ar)}; a group needs one arity"
            )
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)

    def _scope_names(self, row: np.ndarray) -> tuple[Hashable, ...]:
        return tuple(self.variable_name(int(v)) for v in row)

    def _flush(self) -> None:
        for cards, pend in sorted(self._pending.items()):
            label = "x".join(str(c) for c in cards) or "scalar"
            gname = f"factors[{label}]"
            k = 1
            while gname in self._group_names:
                k += 1
                gname = f"factors[{label}]#{k}"
            sc = np.asarray(pend.scopes, dtype=np.int64).reshape(len(pend.scopes), len(cards))
            grp = FactorGroup(gname, sc, np.stack(pend.tables), False, cards)
            self._groups.append(grp)
            self._group_names.add(gname)
        self._pending.clear()

    @property
    def groups(self) -> list[FactorGroup]:
        """Factor groups in declaration order (single factors grouped per shape, appended)."""
        if self._pending:
            self._flush()
        return list(self._groups)

    @property
    def num_factors(self) -> int:
        return sum(g.num_factors for g in self.groups)

    def factors(self) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """Yield ``(scope ids, table)`` for every factor (slow path, for small graphs and I/O)."""
        for g in self.groups:
            for f in range(g.num_factors):
                yield tuple(int(v) for v in g.scopes[f]), g.table(f)

    def validate(self) -> None:
        """Raise :class:`GraphError` if the graph cannot be compiled (e.g. no variables)."""
        if self._num_vars() == 0:
            raise GraphError("the factor graph is empty: declare variables before compiling")

    # ------------------------------------------------------------------ analysis
    def to_networkx(self) -> nx.Graph:
        """Bipartite variable/factor graph.

        Variable nodes are ``("v", id)`` with attributes ``bipartite=0``, ``kind="variable"``,
        ``name``, ``cardinality``; factor nodes are ``("f", group_index, f)`` with ``bipartite=1``,
        ``kind="factor"``, ``group`` (group name), ``index``, ``scope`` (tuple of ids). An edge
        joins each factor to each variable of its scope, with attribute ``slot`` (scope position).
        """
        g = nx.Graph()
        cards = self.cardinalities
        for v in range(self._num_vars()):
            g.add_node(
                ("v", v),
                bipartite=0,
                kind="variable",
                name=self.variable_name(v),
                cardinality=int(cards[v]),
            )
        for gi, grp in enumerate(self.groups):
            for f in range(grp.num_factors):
                node = ("f", gi, f)
                scope = tuple(int(v) for v in grp.scopes[f])
                g.add_node(node, bipartite=1, kind="factor", group=grp.name, index=f, scope=scope)
                for slot, v in enumerate(scope):
                    g.add_edge(node, ("v", v), slot=slot)
        return g

    def is_tree(self) -> bool:
        """True when the factor graph is a forest (BP is then exact)."""
        g = self.to_networkx()
        return g.number_of_nodes() == 0 or nx.is_forest(g)

    def __repr__(self) -> str:
        gs = ", ".join(f"{g.name}: {g.num_factors}x{g.cards}" for g in self.groups)
        return f"FactorGraph(variables={self._num_vars()}, groups=[{gs}])"
