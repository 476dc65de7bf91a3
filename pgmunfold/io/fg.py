"""libDAI's ``.fg`` factor-graph format.

Layout (``#`` starts a comment that runs to the end of the line; blank lines separate blocks)::

    2                   # number of factors

    2                   # per factor: number of variables,
    0 1                 #   their labels (non-negative integers),
    2 2                 #   their cardinalities,
    3                   #   the number of listed (non-zero) entries,
    0 1.5               #   then "index value" lines; the FIRST variable changes fastest
    1 0.5
    3 2.0

    1
    1
    2
    2
    0 1
    1 3

Entries that are not listed are zero (log-potential ``-inf``). Variables are named by their
labels (``int``) and get ids in increasing label order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable
from pathlib import Path

import numpy as np

from pgmunfold.graph import FactorGraph
from pgmunfold.io._common import (
    FormatError,
    NumberWalker,
    PathLike,
    TokenStream,
    bad_integer,
    build_graph,
    describe,
    first_repeated_scope,
    group_probabilities,
    log_of,
    ragged,
    read_text,
    signature_groups,
)

__all__ = ["MAX_TABLE_ENTRIES", "FormatError", "parse_fg", "read_fg", "write_fg"]

logger = logging.getLogger(__name__)

_COMMENT = re.compile(r"#[^\n]*")
MAX_TABLE_ENTRIES = 1 << 28
"""Largest dense table :func:`read_fg` allocates (the format lists only non-zero entries)."""


def read_fg(path: PathLike) -> FactorGraph:
    """Read a libDAI ``.fg`` file.

    Returns:
        A :class:`~pgmunfold.graph.FactorGraph` whose variables are named by their integer
        labels, declared in increasing label order, and whose factors carry ``log`` of the listed
        entries (unlisted entries are ``-inf``). Factors with equal cardinality signatures form one
        group (in order of first appearance, file order inside a group).

    Raises:
        FormatError: (a ``ValueError``) naming the file, the line and what was expected.
    """
    text, source = read_text(path)
    return parse_fg(text, source)


def parse_fg(text: str, source: str = "<string>") -> FactorGraph:
    """Parse the text of a ``.fg`` file (see :func:`read_fg`); ``source`` names it in errors."""
    ts = TokenStream(_COMMENT.sub("", text), source)
    vals = ts.numbers(0)
    w = NumberWalker(ts, vals, 0)
    num_f = w.integer("the number of factors", low=0)
    if 4 * num_f > len(vals) - w.pos:  # a factor needs >= 4 tokens: refuse absurd counts
        raise w.error_at(0, f"expected {num_f} factors, but the file is far too short for them")
    head, arities, nnz = _walk(w, num_f)
    # labels and cardinalities, concatenated in factor order
    lab_pos = ragged(head + 1, arities)
    card_pos = lab_pos + np.repeat(arities, arities)
    labels = _integers(w, lab_pos, "a variable label", 0, "factor", arities)
    cards = _integers(w, card_pos, "a variable cardinality", 1, "factor", arities)
    _check_labels(w, arities, labels, card_pos, head)
    groups = signature_groups(arities, cards)
    sizes = np.ones(num_f, dtype=np.float64)
    for sig, members in groups:
        sizes[members] = float(np.prod(sig, dtype=np.float64))
    big = np.nonzero(sizes > MAX_TABLE_ENTRIES)[0]
    if big.size:
        f = int(big[0])
        raise w.error_at(
            int(head[f]),
            f"factor {f}: a table of {int(sizes[f])} entries is larger than {MAX_TABLE_ENTRIES}",
        )
    nnz_pos = head + 1 + 2 * arities
    over = np.nonzero(nnz > sizes)[0]
    if over.size:
        f = int(over[0])
        raise w.error_at(
            int(nnz_pos[f]),
            f"expected the number of non-zero entries of factor {f} (an integer in "
            f"[0, {int(sizes[f])}]), got {int(nnz[f])}",
        )
    # "index value" pairs
    idx_pos = ragged(nnz_pos + 1, 2 * nnz)[::2]
    fe = np.repeat(np.arange(num_f), nnz)
    idx = vals[idx_pos]
    entry = vals[idx_pos + 1]
    bad = bad_integer(idx) | (idx < 0) | (idx >= sizes[fe])
    if bad.any():
        j = int(np.argmax(bad))
        raise w.error_at(
            int(idx_pos[j]),
            f"expected an entry index (an integer in [0, {int(sizes[fe[j]])})) of factor "
            f"{int(fe[j])}, got {describe(w.token(int(idx_pos[j])))}",
        )
    neg = np.nonzero(entry < 0)[0]
    if neg.size:
        j = int(neg[0])
        raise w.error_at(
            int(idx_pos[j]) + 1,
            f"expected a non-negative value of factor {int(fe[j])}, got "
            f"{describe(w.token(int(idx_pos[j]) + 1))}",
        )
    ii = idx.astype(np.int64)
    order = np.lexsort((ii, fe))
    dup = (fe[order][1:] == fe[order][:-1]) & (ii[order][1:] == ii[order][:-1])
    if dup.any():
        later = order[1:][dup]
        j = int(later.min())  # first repeated listing in file order
        first = int(order[np.nonzero(order == j)[0][0] - 1])
        j, first = max(j, first), min(j, first)
        raise w.error_at(
            int(idx_pos[j]),
            f"factor {int(fe[j])}: entry index {int(ii[j])} is listed twice (first on line "
            f"{ts.line_of(int(idx_pos[first]))})",
        )
    positive = np.bincount(fe[entry > 0], minlength=num_f) > 0
    if num_f and not positive.all():
        f = int(np.argmin(positive))
        raise w.error_at(
            int(nnz_pos[f]), f"factor {f}: no entry is positive, so the model has probability zero"
        )
    # variables: ids in increasing label order
    names_arr = np.unique(labels)
    ids = np.searchsorted(names_arr, labels)
    var_cards = np.zeros(len(names_arr), dtype=np.int64)
    var_cards[ids] = cards
    before = np.cumsum(arities) - arities
    rank = np.zeros(num_f, dtype=np.int64)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for sig, members in groups:
        a, size, fg_n = len(sig), int(np.prod(sig, dtype=np.int64)), len(members)
        rank[members] = np.arange(fg_n)
        in_group = np.zeros(num_f, dtype=bool)
        in_group[members] = True
        sel = in_group[fe]
        flat = np.zeros((fg_n, size), dtype=np.float64)
        flat[rank[fe[sel]], ii[sel]] = entry[sel]
        # first variable fastest: axes come out reversed, then put back in scope order
        tab = log_of(flat).reshape(fg_n, *sig[::-1]).transpose(0, *range(a, 0, -1))
        sc = ids[before[members][:, None] + np.arange(a)]
        out.append((sc, np.ascontiguousarray(tab)))
    names = [int(x) for x in names_arr.tolist()]
    return build_graph(source, names, var_cards, out)


def _walk(w: NumberWalker, num_f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk the factor blocks; returns per factor the walker position of its variable count,
    the variable count and the number of listed entries. Ends with the end-of-file check."""
    lst = w.pylist
    end = len(lst)
    p = w.pos
    head, arities, nnz = [0] * num_f, [0] * num_f, [0] * num_f
    for f in range(num_f):
        if p >= end:
            raise w.stream.eof_error(f"the number of variables of factor {f}")
        k = lst[p]
        if not (k.is_integer() and 0 <= k <= end):
            raise w.error_at(
                p,
                f"expected the number of variables of factor {f} (an integer >= 0), got "
                f"{describe(w.token(p))}",
            )
        q = p + 1 + 2 * int(k)
        if q >= end:
            raise w.stream.eof_error(
                f"{int(k)} labels, {int(k)} cardinalities and the number of non-zero entries "
                f"of factor {f}"
            )
        z = lst[q]
        if not (z.is_integer() and z >= 0):
            raise w.error_at(
                q,
                f"expected the number of non-zero entries of factor {f} (an integer >= 0), got "
                f"{describe(w.token(q))}",
            )
        head[f], arities[f], nnz[f] = p, int(k), int(z)
        p = q + 1 + 2 * int(z)
        if p > end:
            raise w.stream.eof_error(
                f"{int(z)} 'index value' lines for factor {f}, the file has only "
                f"{end - q - 1} more tokens"
            )
    w.pos = p
    w.expect_end(f"the {num_f} factors")
    as_arr = [np.array(x, dtype=np.int64) for x in (head, arities, nnz)]
    return as_arr[0], as_arr[1], as_arr[2]


def _integers(
    w: NumberWalker, pos: np.ndarray, what: str, low: int, unit: str, arities: np.ndarray
) -> np.ndarray:
    """Tokens at ``pos`` as int64 ``>= low``; the error names the factor of the bad token."""
    v = w.values[pos]
    bad = bad_integer(v) | (v < low)
    if bad.any():
        j = int(np.argmax(bad))
        f = int(np.searchsorted(np.cumsum(arities), j, side="right"))
        raise w.error_at(
            int(pos[j]),
            f"expected {what} of {unit} {f} (an integer >= {low}), got "
            f"{describe(w.token(int(pos[j])))}",
        )
    return v.astype(np.int64)


def _check_labels(
    w: NumberWalker, arities: np.ndarray, labels: np.ndarray, card_pos: np.ndarray, head: np.ndarray
) -> None:
    """No label twice in a factor; one cardinality per label across the file."""
    found = first_repeated_scope(arities, labels)
    if found is not None:
        f, lab = found
        raise w.error_at(int(head[f]), f"factor {f}: the labels {lab} repeat a variable")
    fidx = np.repeat(np.arange(len(arities)), arities)
    cards = w.values[card_pos].astype(np.int64)
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    first_of = first[inv.reshape(-1)]
    mismatch = np.nonzero(cards != cards[first_of])[0]
    if mismatch.size:
        j = int(mismatch[0])
        f = int(fidx[j])
        raise w.error_at(
            int(card_pos[j]),
            f"factor {f}: variable {int(labels[j])} has cardinality {int(cards[j])} here but "
            f"{int(cards[first_of[j]])} in an earlier factor "
            f"(line {w.stream.line_of(int(card_pos[first_of[j]]))})",
        )


def write_fg(fg: FactorGraph, path: PathLike) -> None:
    """Write ``fg`` in libDAI's ``.fg`` format (tables are ``exp`` of the log-potentials).

    Labels are the variable names when all are non-negative ``int`` (as :func:`read_fg` names
    them), otherwise the variable ids. Only non-zero entries are listed, with the shortest exact
    decimal of each value. A variable in no factor gets a uniform unary factor so that it is not
    lost. A table whose largest log-potential exceeds 700 is shifted down by it (``log Z``
    changes by the shift; a warning is logged).
    """
    Path(path).write_text(_format_fg(fg), encoding="utf-8")


def _labels(fg: FactorGraph) -> list[int]:
    names: list[Hashable] = fg.variables
    if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in names):
        return [int(n) for n in names]  # type: ignore[call-overload]
    return list(range(len(names)))


def _format_fg(fg: FactorGraph) -> str:
    labels = np.array(_labels(fg), dtype=np.int64)
    cards = fg.cardinalities
    groups = fg.groups
    used = np.zeros(len(cards), dtype=bool)
    for g in groups:
        used[g.scopes.ravel()] = True
    isolated = np.nonzero(~used)[0].tolist()
    num_f = sum(g.num_factors for g in groups) + len(isolated)
    out = [f"# written by pgmunfold: {len(cards)} variables, {num_f} factors", str(num_f)]
    total_shift = 0.0
    for g in groups:
        values, shift = group_probabilities(g)
        total_shift += shift
        # first variable fastest: reverse the table axes before flattening
        flat = values.transpose(0, *range(g.arity, 0, -1)).reshape(g.num_factors, -1)
        card_line = " ".join(map(str, g.cards))
        for sc, row in zip(g.scopes.tolist(), flat.tolist(), strict=True):
            nz = [i for i, x in enumerate(row) if x > 0]
            out += ["", str(len(sc)), " ".join(str(labels[v]) for v in sc), card_line]
            out.append(str(len(nz)))
            out += [f"{i} {row[i]!r}" for i in nz]
    for v in isolated:  # keep variables that are in no factor: uniform unary factor
        k = int(cards[v])
        out += ["", "1", str(labels[v]), str(k), str(k)] + [f"{i} 1.0" for i in range(k)]
    if total_shift:
        logger.warning(
            "write_fg: tables rescaled to avoid overflow; log Z of the written model is lower "
            "by %.6g",
            total_shift,
        )
    return "\n".join(out) + "\n"
