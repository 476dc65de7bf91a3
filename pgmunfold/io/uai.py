"""The UAI competition formats: models (``MARKOV``/``BAYES``), evidence and ``.MAR`` results.

Model file layout (whitespace is free; only the token order matters)::

    MARKOV                  # or BAYES
    3                       # number of variables
    2 2 3                   # their cardinalities
    2                       # number of functions (factors)
    2 0 1                   # per function: scope size, then variable indices
    2 1 2
    4                       # per function: number of table entries,
     0.1 0.9 0.5 0.5        # then the entries; the LAST scope variable changes fastest
    6
     1 2 3 4 5 6

Entries are potentials (``MARKOV``) or conditional probabilities (``BAYES``: the last scope
variable is the child); both must be non-negative and become natural-log potentials, with
``0 -> -inf``. Variables are named by their index ``0..n-1`` (``int``).

Evidence (``.evid``): ``n v1 s1 ... vn sn``, or the same preceded by a sample count ``1``.
Marginals (``.MAR``): ``MAR``, the number of variables, then per variable its cardinality and its
probabilities.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    format_rows,
    group_probabilities,
    log_of,
    marginal_list,
    ragged,
    read_text,
    signature_groups,
)

__all__ = [
    "FormatError",
    "format_uai_mar",
    "parse_uai",
    "parse_uai_evidence",
    "parse_uai_mar",
    "read_uai",
    "read_uai_evidence",
    "read_uai_mar",
    "write_uai",
    "write_uai_evidence",
    "write_uai_mar",
]

logger = logging.getLogger(__name__)

_CPT_TOL = 1e-4


# --------------------------------------------------------------------------- models
def read_uai(path: PathLike) -> FactorGraph:
    """Read a UAI ``MARKOV`` or ``BAYES`` model file.

    Args:
        path: the ``.uai`` file.

    Returns:
        A :class:`~pgmunfold.graph.FactorGraph` whose variables are named ``0..n-1`` (``int``)
        with ids equal to their names, and whose factors carry ``log`` of the file's tables
        (``0 -> -inf``). Factors with equal cardinality signatures form one group (groups in
        order of first appearance, file order inside a group).

    Raises:
        FormatError: (a ``ValueError``) naming the file, the line and what was expected.
    """
    text, source = read_text(path)
    return parse_uai(text, source)


def parse_uai(text: str, source: str = "<string>") -> FactorGraph:
    """Parse the text of a UAI model file (see :func:`read_uai`); ``source`` names it in errors."""
    ts = TokenStream(text, source)
    if not ts.tokens:
        raise ts.eof_error("the preamble MARKOV or BAYES")
    kind = ts.tokens[0].upper()
    if kind not in ("MARKOV", "BAYES"):
        raise ts.error(0, f"expected the preamble MARKOV or BAYES, got {describe(ts.tokens[0])}")
    vals = ts.numbers(1)
    w = NumberWalker(ts, vals, 1)
    n = w.integer("the number of variables", low=0)
    cards = w.integers(n, "variable cardinality", low=1)
    num_f = w.integer("the number of functions", low=0)
    if 3 * num_f > len(vals) - w.pos:  # a function needs >= 3 tokens: refuse absurd counts
        raise w.error_at(
            w.pos - 1,
            f"expected the number of functions, got {num_f} but the file is too short for them",
        )
    arities, scope_ids = _read_scopes(w, n, num_f)
    groups = signature_groups(arities, cards[scope_ids])
    before = np.cumsum(arities) - arities
    sizes = np.ones(num_f, dtype=np.float64)
    for sig, members in groups:
        sizes[members] = float(np.prod(sig, dtype=np.float64))
    starts = _read_counts(w, arities, scope_ids, cards, sizes)

    # entries: counts are >= 1, so every negative number after the scopes is a table entry
    first_tab = int(starts[0]) - 1 if num_f else w.pos
    neg = np.nonzero(vals[first_tab:] < 0)[0]
    if neg.size:
        pos = first_tab + int(neg[0])
        f = int(np.searchsorted(starts, pos, side="right")) - 1
        what = "probability" if kind == "BAYES" else "potential (table entry)"
        raise w.error_at(
            pos, f"expected a non-negative {what} in function {f}, got {describe(w.token(pos))}"
        )
    if num_f:
        positive = vals > 0
        positive[starts - 1] = False  # the count tokens
        any_pos = np.logical_or.reduceat(positive, starts)
        if not any_pos.all():
            f = int(np.argmin(any_pos))
            raise w.error_at(
                int(starts[f]) - 1,
                f"function {f}: every table entry is 0, so the model has probability zero",
            )
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for sig, members in groups:
        a = len(sig)
        size = int(sizes[members[0]])
        tab = vals[starts[members][:, None] + np.arange(size)]
        if kind == "BAYES":
            _check_cpts(tab.reshape(len(members), -1, sig[-1] if sig else 1), members, w, starts)
        sc = scope_ids[before[members][:, None] + np.arange(a)]
        out.append((sc, log_of(tab).reshape(len(members), *sig)))
    return build_graph(source, list(range(n)), cards, out)


def _read_scopes(w: NumberWalker, n: int, num_f: int) -> tuple[np.ndarray, np.ndarray]:
    """Scope sizes ``(F,)`` and all scope variable ids (concatenated); checks range/repeats."""
    lst = w.pylist
    end = len(lst)
    p = w.pos
    arities = [0] * num_f
    for f in range(num_f):
        if p >= end:
            raise w.stream.eof_error(f"the scope size of function {f}")
        k = lst[p]
        if not (k.is_integer() and 0 <= k <= n):
            raise w.error_at(
                p,
                f"expected the scope size of function {f} (an integer in [0, {n}]), "
                f"got {describe(w.token(p))}",
            )
        arities[f] = int(k)
        p += 1 + int(k)
        if p > end:
            raise w.stream.eof_error(
                f"{int(k)} variable indices in the scope of function {f}, the file ends after "
                f"{end - (p - int(k))}"
            )
    ar = np.array(arities, dtype=np.int64)
    pos = ragged(w.pos + 1 + np.arange(num_f) + (np.cumsum(ar) - ar), ar)
    v = w.values[pos]
    bad = bad_integer(v) | (v < 0) | (v >= n)
    if bad.any():
        j = int(np.argmax(bad))
        f = int(np.searchsorted(np.cumsum(ar), j, side="right"))
        raise w.error_at(
            int(pos[j]),
            f"expected a variable index in the scope of function {f} (an integer in [0, {n})), "
            f"got {describe(w.token(int(pos[j])))}",
        )
    ids = v.astype(np.int64)
    _check_repeats(w, ar, ids, w.pos + np.arange(num_f) + (np.cumsum(ar) - ar))
    w.pos = p
    return ar, ids


def _check_repeats(
    w: NumberWalker, arities: np.ndarray, ids: np.ndarray, factor_pos: np.ndarray
) -> None:
    """Raise at the first factor whose scope repeats a variable."""
    found = first_repeated_scope(arities, ids)
    if found is not None:
        f, scope = found
        raise w.error_at(int(factor_pos[f]), f"function {f}: the scope {scope} repeats a variable")


def _read_counts(
    w: NumberWalker, arities: np.ndarray, ids: np.ndarray, cards: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Check every table's entry count; returns the walker position of each table's entries."""
    lst = w.pylist
    end = len(lst)
    size_list = sizes.tolist()
    p = w.pos
    starts = [0] * len(size_list)
    for f, size in enumerate(size_list):
        if p >= end:
            raise w.stream.eof_error(f"the number of table entries of function {f}")
        if lst[p] != size:
            before = int(np.cumsum(arities)[f] - arities[f])
            sc = ids[before : before + int(arities[f])]
            raise w.error_at(
                p,
                f"expected {int(size)} table entries for function {f} over variables "
                f"{sc.tolist()} of cardinalities {cards[sc].tolist()}, got the count "
                f"{describe(w.token(p))}",
            )
        starts[f] = p + 1
        p += 1 + int(size)
        if p > end:
            raise w.stream.eof_error(
                f"{int(size)} table entries of function {f}, the file ends after {end - starts[f]}"
            )
    w.pos = p
    w.expect_end(f"the {len(size_list)} function tables")
    return np.array(starts, dtype=np.int64)


def _check_cpts(rows: np.ndarray, members: np.ndarray, w: NumberWalker, starts: np.ndarray) -> None:
    """Log (once per group) conditional probability rows that do not sum to 1."""
    sums = rows.sum(axis=-1)  # (F_g, parent states)
    off = np.abs(sums - 1.0) > _CPT_TOL
    if off.any():
        i, j = (int(t[0]) for t in np.nonzero(off))
        f = int(members[i])
        logger.warning(
            "%s, line %d: BAYES function %d: conditional probabilities of parent state %d sum "
            "to %.6g, not 1 (%d such rows in functions of this shape); the table is used as given",
            w.stream.source,
            w.stream.line_of(w.offset + int(starts[f]) - 1),
            f,
            j,
            float(sums[i, j]),
            int(off.sum()),
        )


def write_uai(fg: FactorGraph, path: PathLike) -> None:
    """Write ``fg`` as a UAI ``MARKOV`` file (tables are ``exp`` of the log-potentials).

    Variables are written in id order (their names are not kept: reading the file back names
    them ``0..n-1``). Tables are written with the shortest exact decimal of each value, so a round
    trip reproduces the model up to ``log(exp(x))`` rounding. A table whose largest log-potential
    exceeds 700 is shifted down by it to avoid overflow (the distribution is unchanged, ``log Z``
    drops by the shift; a warning is logged).
    """
    Path(path).write_text(_format_uai(fg), encoding="utf-8")


def _format_uai(fg: FactorGraph) -> str:
    cards = fg.cardinalities
    groups = fg.groups
    lines = ["MARKOV", str(len(cards)), " ".join(map(str, cards.tolist()))]
    lines.append(str(sum(g.num_factors for g in groups)))
    for g in groups:
        sc = np.concatenate([np.full((g.num_factors, 1), g.arity), g.scopes], axis=1)
        lines += [" ".join(map(str, row)) for row in sc.tolist()]
    total_shift = 0.0
    for g in groups:
        values, shift = group_probabilities(g)
        total_shift += shift
        size = str(int(np.prod(g.cards, dtype=np.int64)))
        for row in format_rows(values.reshape(g.num_factors, -1)):
            lines += ["", size, row]
    if total_shift:
        logger.warning(
            "write_uai: tables rescaled to avoid overflow; log Z of the written model is lower "
            "by %.6g",
            total_shift,
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- evidence
def read_uai_evidence(path: PathLike, fg: FactorGraph | None = None) -> dict[int, int]:
    """Read a UAI evidence file into ``{variable index: state}``.

    Both forms are accepted: ``n v1 s1 ... vn sn`` and the same preceded by a sample count of
    ``1``. They are told apart by the number of tokens (odd for the first form, even for the
    second); a file with several samples is rejected. An empty file is no evidence.

    Args:
        path: the ``.evid`` file.
        fg: optional model: indices and states are then checked against its cardinalities.

    Raises:
        FormatError: naming the file, the line and what was expected.
    """
    text, source = read_text(path)
    return parse_uai_evidence(text, source, fg)


def parse_uai_evidence(
    text: str, source: str = "<string>", fg: FactorGraph | None = None
) -> dict[int, int]:
    """Parse the text of a UAI evidence file (see :func:`read_uai_evidence`)."""
    ts = TokenStream(text, source)
    if not ts.tokens:
        return {}
    w = NumberWalker(ts, ts.numbers(0), 0)
    if len(ts) % 2 == 0:
        samples = w.integer("the number of evidence samples", low=0)
        if samples != 1:
            raise w.error_at(
                0,
                f"expected the sample count 1 (or an odd number of tokens: 'n v1 s1 ...'), "
                f"got {samples} samples",
            )
    n_vars = len(fg.cardinalities) if fg is not None else None
    count = w.integer("the number of observed variables", low=0)
    if 2 * count != len(ts) - w.pos:
        raise w.error_at(
            w.pos - 1,
            f"expected {count} (variable, state) pairs ({2 * count} tokens) after the count, "
            f"got {len(ts) - w.pos} tokens",
        )
    evidence: dict[int, int] = {}
    for _ in range(count):
        at = w.pos
        v = w.integer("an observed variable index", low=0, high=n_vars)
        high = int(fg.cardinalities[v]) if fg is not None else None
        s = w.integer(f"the state of variable {v}", low=0, high=high)
        if v in evidence and evidence[v] != s:
            raise w.error_at(at, f"variable {v} is observed twice, in states {evidence[v]} and {s}")
        evidence[v] = s
    return evidence


def write_uai_evidence(evidence: Mapping[int, int], path: PathLike) -> None:
    """Write ``{variable index: state}`` in the single-line form ``n v1 s1 ...``."""
    items = " ".join(f"{int(v)} {int(s)}" for v, s in evidence.items())
    Path(path).write_text(f"{len(evidence)} {items}".rstrip() + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- marginals
_BEGIN = re.compile(r"^-BEGIN-\s*$", re.MULTILINE)


def read_uai_mar(path: PathLike) -> list[np.ndarray]:
    """Read a UAI ``.MAR`` result file: one probability vector per variable, in index order.

    Accepts ``MAR n k0 p.. k1 p..``, the older form with a sample count ``1`` after ``MAR``, and
    anytime files with ``-BEGIN-`` blocks (the last block is read).

    Raises:
        FormatError: naming the file, the line and what was expected.
    """
    text, source = read_text(path)
    return parse_uai_mar(text, source)


def parse_uai_mar(text: str, source: str = "<string>") -> list[np.ndarray]:
    """Parse the text of a ``.MAR`` file (see :func:`read_uai_mar`)."""
    ts = TokenStream(text, source)
    if not ts.tokens:
        raise ts.eof_error("the header MAR")
    if ts.tokens[0].upper() != "MAR":
        raise ts.error(0, f"expected the header MAR, got {describe(ts.tokens[0])}")
    blocks = list(_BEGIN.finditer(text))
    if blocks:  # anytime output: read the last block, keeping line numbers
        cut = blocks[-1].end()
        body = "\n" * text.count("\n", 0, cut) + text[cut:].split("-END-")[0]
        ts = TokenStream(body, source)
        w = NumberWalker(ts, ts.numbers(0), 0)
    else:
        w = NumberWalker(ts, ts.numbers(1), 1)
    n = w.integer("the number of variables", low=0)
    if n == 1 and _mar_has_sample_count(w):
        n = w.integer("the number of variables", low=0)
    out: list[np.ndarray] = []
    for i in range(n):
        k = w.integer(f"the cardinality of variable {i}", low=1)
        start = w.pos
        p = w.floats(k, f"probabilities of variable {i}")
        w.check_non_negative(start, p, "probability")
        out.append(p.copy())
    w.expect_end(f"the marginals of {n} variables")
    return out


def _mar_has_sample_count(w: NumberWalker) -> bool:
    """After ``MAR 1``: is the ``1`` a sample count (rest parses as ``n k p...``) or n=1?"""
    v = w.values[w.pos :]
    if len(v) == 0:
        return False
    k = v[0]
    # n = 1: exactly one cardinality followed by k probabilities
    if k == np.floor(k) and k >= 1 and len(v) == 1 + int(k):
        return False
    return True


def write_uai_mar(
    marginals: Mapping[Any, Any] | Sequence[Any], path: PathLike, digits: int = 10
) -> None:
    """Write marginals in the UAI ``.MAR`` format (see :func:`format_uai_mar`)."""
    Path(path).write_text(format_uai_mar(marginals, digits), encoding="utf-8")


def format_uai_mar(marginals: Mapping[Any, Any] | Sequence[Any], digits: int = 10) -> str:
    """Marginals as the text of a UAI ``.MAR`` file.

    Args:
        marginals: a sequence of probability vectors in variable-index order, or a mapping keyed
            by the indices ``0..n-1`` (e.g. ``out.marginals`` of a network compiled from
            :func:`read_uai`); numpy arrays or torch tensors ``(K,)``.
        digits: significant digits per probability.
    """
    margs = marginal_list(marginals)
    parts = [str(len(margs))]
    for m in margs:
        parts.append(str(m.size))
        parts.extend(f"{float(x):.{digits}g}" for x in m.tolist())
    return "MAR\n" + " ".join(parts) + "\n"
