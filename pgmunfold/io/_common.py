"""Shared machinery of the file readers: tokens with line numbers, numeric checks, errors.

Readers split the whole text once (``str.split``), convert every numeric token in one numpy call,
and only on an error go back to the text to find the line of the offending token. Error messages
always name the file, the line and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgmunfold.graph import FactorGraph, FactorGroup, GraphError

__all__ = ["FormatError", "TokenStream"]

PathLike = str | os.PathLike[str]

# ASCII characters that may occur in a numeric token (ints and decimal floats, no inf/nan)
_NON_NUMERIC = re.compile(r"[^\s0-9eE+\-.]")
_TOKEN = re.compile(r"\S+")
_MAX_EXACT_INT = float(2**53)


class FormatError(ValueError):
    """A model, evidence or result file does not follow its format.

    The message names the file, the line (when known) and what was expected.

    Attributes:
        source: the file (or the ``source`` name given to a ``parse_*`` function).
        line: 1-based line number, or ``None`` when the error is not tied to a line.
    """

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")


def read_text(path: PathLike) -> tuple[str, str]:
    """Read a text file; returns ``(text, source name)``; undecodable bytes -> FormatError."""
    source = os.fspath(path)
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig"), source  # a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FormatError(source, line, "expected a text file (bytes are not UTF-8)") from None


def describe(token: str) -> str:
    """A token for an error message (shortened when long)."""
    return repr(token if len(token) <= 40 else token[:37] + "...")


class TokenStream:
    """Whitespace-separated tokens of a text, with their line numbers computed on demand.

    ``numbers(start)`` converts the tokens ``start:`` to float64 in one call after checking that
    they are plain decimal numbers (no ``inf``/``nan``/letters), so readers can walk a file as an
    array and still report the exact token and line of any problem.
    """

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.tokens: list[str] = text.split()
        self._starts: list[int] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def line_of(self, index: int) -> int:
        """1-based line of token ``index``; past the end: the last line of the text."""
        if self._starts is None:
            self._starts = [m.start() for m in _TOKEN.finditer(self.text)]
        if index >= len(self._starts):
            return self.text.count("\n") + (0 if self.text.endswith("\n") else 1)
        return self.text.count("\n", 0, self._starts[index]) + 1

    def error(self, index: int, message: str) -> FormatError:
        """A :class:`FormatError` located at token ``index``."""
        return FormatError(self.source, self.line_of(index), message)

    def eof_error(self, expected: str) -> FormatError:
        """A :class:`FormatError` for a file that ends where ``expected`` should come."""
        return FormatError(
            self.source,
            self.line_of(len(self.tokens)),
            f"unexpected end of file: expected {expected}",
        )

    def numbers(self, start: int) -> np.ndarray:
        """Tokens ``start:`` as float64; a non-numeric token raises :class:`FormatError`."""
        toks = self.tokens[start:]
        try:
            values = np.array(toks, dtype=np.float64)
        except ValueError:
            values = None
        bad = None
        if values is None or not np.isfinite(values).all():
            bad = next(i for i, t in enumerate(toks) if not _is_finite_number(t))
        elif any(_NON_NUMERIC.search(t) for t in toks):
            # numpy accepts a few things we do not ("1_0", non-ASCII digits)
            bad = next(i for i, t in enumerate(toks) if _NON_NUMERIC.search(t))
        if bad is not None:
            raise self.error(
                start + bad, f"expected a finite decimal number, got {describe(toks[bad])}"
            )
        assert values is not None
        return values


def _is_finite_number(tok: str) -> bool:
    if _NON_NUMERIC.search(tok):
        return False
    try:
        return bool(np.isfinite(float(tok)))
    except ValueError:
        return False


class NumberWalker:
    """Sequential reader over a float array of tokens with typed, located checks.

    ``offset`` is the token index of ``values[0]`` in the :class:`TokenStream`.
    """

    def __init__(self, stream: TokenStream, values: np.ndarray, offset: int) -> None:
        self.stream = stream
        self.values = values
        self.offset = offset
        self.pos = 0
        self._list: list[float] | None = None

    @property
    def pylist(self) -> list[float]:
        """The values as a Python list (fast scalar access for sequential walks)."""
        if self._list is None:
            self._list = self.values.tolist()
        return self._list

    def error_at(self, pos: int, message: str) -> FormatError:
        return self.stream.error(self.offset + pos, message)

    def token(self, pos: int) -> str:
        return self.stream.tokens[self.offset + pos]

    def integer(self, what: str, low: int | None = None, high: int | None = None) -> int:
        """Next token as an integer in ``[low, high)``; ``what`` names it in errors."""
        if self.pos >= len(self.values):
            raise self.stream.eof_error(what)
        v = float(self.values[self.pos])
        if v != np.floor(v) or abs(v) >= _MAX_EXACT_INT:
            raise self.error_at(
                self.pos, f"expected {what} (an integer), got {describe(self.token(self.pos))}"
            )
        i = int(v)
        if (low is not None and i < low) or (high is not None and i >= high):
            if high is None:
                rng = f">= {low}"
            elif low is None:
                rng = f"< {high}"
            else:
                rng = f"in [{low}, {high})" if high > low else f"in [{low}, {high}) (none exists)"
            raise self.error_at(self.pos, f"expected {what} {rng}, got {i}")
        self.pos += 1
        return i

    def integers(self, count: int, what: str, low: int, high: int | None = None) -> np.ndarray:
        """Next ``count`` tokens as int64 in ``[low, high)`` (vectorised check)."""
        end = self.pos + count
        if end > len(self.values):
            got = len(self.values) - self.pos
            raise self.stream.eof_error(f"{count} {what}s, the file ends after {got}")
        v = self.values[self.pos : end]
        bad = (v != np.floor(v)) | (np.abs(v) >= _MAX_EXACT_INT) | (v < low)
        if high is not None:
            bad |= v >= high
        if bad.any():
            j = int(np.argmax(bad))
            rng = f">= {low}" if high is None else f"in [{low}, {high})"
            raise self.error_at(
                self.pos + j,
                f"expected {what} (an integer {rng}), got {describe(self.token(self.pos + j))}",
            )
        self.pos = end
        return v.astype(np.int64)

    def floats(self, count: int, what: str) -> np.ndarray:
        """Next ``count`` tokens (a view); a short file raises a truncation error."""
        end = self.pos + count
        if end > len(self.values):
            got = len(self.values) - self.pos
            raise self.stream.eof_error(f"{count} {what}, the file ends after {got}")
        v = self.values[self.pos : end]
        self.pos = end
        return v

    def check_non_negative(self, start: int, values: np.ndarray, what: str) -> None:
        """Raise at the first negative entry of ``values`` (which began at walker pos ``start``)."""
        neg = values < 0
        if neg.any():
            j = int(np.argmax(neg))
            raise self.error_at(
                start + j, f"expected a non-negative {what}, got {describe(self.token(start + j))}"
            )

    def expect_end(self, what: str) -> None:
        """Raise when tokens remain after the last expected one."""
        if self.pos < len(self.values):
            raise self.error_at(
                self.pos,
                f"expected the end of the file after {what}, got {describe(self.token(self.pos))} "
                f"({len(self.values) - self.pos} extra token(s))",
            )


def log_of(values: np.ndarray) -> np.ndarray:
    """Natural log of non-negative values with ``log(0) = -inf`` and no numpy warnings."""
    out = np.full(values.shape, -np.inf, dtype=np.float64)
    pos = values > 0
    out[pos] = np.log(values[pos])
    return out


def group_probabilities(grp: FactorGroup) -> tuple[np.ndarray, float]:
    """Probability-scale tables ``(F, *cards)`` of a group, and the total log shift applied.

    A factor's table is shifted by its maximum only when ``exp`` would overflow (maximum above
    700); the sum of the shifts is returned so callers can report the change of ``log Z``.
    """
    n = grp.num_factors
    tab = grp.log_potentials
    if grp.shared:
        tab = np.broadcast_to(tab, (n, *grp.cards))
    flat = tab.reshape(n, -1)
    shift = flat.max(axis=1)
    shift = np.where(shift > 700.0, shift, 0.0)
    with np.errstate(under="ignore"):
        values = np.exp(flat - shift[:, None])
    return values.reshape(n, *grp.cards), float(shift.sum())


def format_rows(values: np.ndarray) -> list[str]:
    """One line per row of a 2-D array: the shortest exact decimal of each value."""
    return [" ".join(map(repr, row)) for row in values.tolist()]


def bad_integer(values: np.ndarray) -> np.ndarray:
    """Mask of entries that are not integers exactly representable in float64."""
    return (values != np.floor(values)) | (np.abs(values) >= _MAX_EXACT_INT)


def ragged(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated positions ``starts[i] + (0..lengths[i]-1)`` for every ``i`` (int64)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def signature_groups(
    arities: np.ndarray, flat_cards: np.ndarray
) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Group factors by cardinality signature.

    Args:
        arities: ``(F,)`` scope size of every factor.
        flat_cards: the cardinalities of all scope entries, concatenated in factor order.

    Returns:
        ``(signature, factor indices)`` per distinct signature, in order of first appearance;
        the indices of a group are increasing (file order).
    """
    before = np.cumsum(arities) - arities
    found: list[tuple[int, tuple[int, ...], np.ndarray]] = []
    for a in np.unique(arities).tolist():
        fa = np.nonzero(arities == a)[0]
        if a == 0:
            found.append((int(fa[0]), (), fa))
            continue
        cm = flat_cards[before[fa][:, None] + np.arange(a)]
        uniq, first, inv = np.unique(cm, axis=0, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        order = np.argsort(inv, kind="stable")
        splits = np.split(fa[order], np.cumsum(np.bincount(inv, minlength=len(uniq)))[:-1])
        for u, members in enumerate(splits):
            found.append((int(fa[first[u]]), tuple(int(c) for c in uniq[u]), members))
    found.sort(key=lambda t: t[0])
    return [(sig, members) for _, sig, members in found]


def build_graph(
    source: str,
    names: Sequence[Hashable],
    cards: np.ndarray,
    groups: Sequence[tuple[np.ndarray, np.ndarray]],
) -> FactorGraph:
    """Declare variables (in id order) and one factor group per ``(scopes, tables)`` pair.

    Args:
        source: file name for error messages.
        names: variable names in id order.
        cards: cardinality per variable id.
        groups: ``(scope ids (F, arity), log tables (F, *cards))`` per group.
    """
    fg = FactorGraph()
    try:
        for name, k in zip(names, cards.tolist(), strict=True):
            fg.add_variable(name, int(k))
        for scopes, tables in groups:
            fg.add_factors(scopes, tables)
    except GraphError as exc:  # the readers check everything first; this is a safety net
        raise FormatError(source, None, str(exc)) from None
    return fg


def as_numpy(x: Any) -> np.ndarray:
    """numpy float64 copy of an array-like or torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def marginal_list(marginals: Mapping[Any, Any] | Sequence[Any]) -> list[np.ndarray]:
    """Marginals keyed ``0..n-1`` (mapping) or given in order (sequence) -> list of arrays."""
    if isinstance(marginals, Mapping):
        keys = list(marginals.keys())
        n = len(keys)
        if set(keys) != set(range(n)):
            raise ValueError(
                "marginals must be keyed by the variable indices 0..n-1 (as read_uai names "
                f"variables); got keys such as {keys[:5]!r}"
            )
        return [as_numpy(marginals[i]).reshape(-1) for i in range(n)]
    return [as_numpy(m).reshape(-1) for m in marginals]


def first_repeated_scope(arities: np.ndarray, ids: np.ndarray) -> tuple[int, list[int]] | None:
    """The first factor whose scope names a variable twice, with that scope, or ``None``.

    Shape:
        ``arities``: ``(F,)``; ``ids``: ``(sum(arities),)``, the scopes concatenated.
    """
    fidx = np.repeat(np.arange(len(arities)), arities)
    order = np.lexsort((ids, fidx))
    fs, vs = fidx[order], ids[order]
    dup = (fs[1:] == fs[:-1]) & (vs[1:] == vs[:-1])
    if not dup.any():
        return None
    f = int(fs[1:][dup].min())
    before = int(np.cumsum(arities)[f] - arities[f])
    return f, ids[before : before + int(arities[f])].tolist()
