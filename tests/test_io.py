"""File formats: UAI models/evidence/MAR results and libDAI .fg (readers, writers, errors)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgmunfold.exact import exact_log_partition, exact_marginals
from pgmunfold.graph import FactorGraph
from pgmunfold.io import (
    FormatError,
    parse_fg,
    parse_uai,
    parse_uai_evidence,
    parse_uai_mar,
    read_fg,
    read_uai,
    read_uai_evidence,
    read_uai_mar,
    write_fg,
    write_uai,
    write_uai_evidence,
    write_uai_mar,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
UAI_DIR = SHARED / "uai2014-mar"
LIBDAI_DIR = SHARED / "libdai"
UAI_NAMES = sorted(p.name for p in UAI_DIR.glob("*.uai")) if UAI_DIR.is_dir() else []
FG_NAMES = sorted(p.name for p in LIBDAI_DIR.glob("*.fg")) if LIBDAI_DIR.is_dir() else []
needs_uai = pytest.mark.skipif(not UAI_NAMES, reason="shared UAI 2014 data not present")
needs_libdai = pytest.mark.skipif(not FG_NAMES, reason="shared libDAI data not present")


# --------------------------------------------------------------------------- helpers
def brute_log_joint(fg: FactorGraph) -> np.ndarray:
    """Unnormalised log-probability of every joint state, shape ``cards`` (tiny graphs only)."""
    cards = [int(c) for c in fg.cardinalities]
    out = np.zeros(cards)
    for x in itertools.product(*[range(c) for c in cards]):
        out[x] = sum(float(t[tuple(x[v] for v in sc)]) for sc, t in fg.factors())
    return out


def factor_dict(fg: FactorGraph) -> dict[tuple[int, ...], list[np.ndarray]]:
    """Tables per scope (order of factors inside the graph does not matter)."""
    out: dict[tuple[int, ...], list[np.ndarray]] = {}
    for sc, t in fg.factors():
        out.setdefault(sc, []).append(np.asarray(t))
    return out


def assert_same_model(a: FactorGraph, b: FactorGraph) -> None:
    assert a.cardinalities.tolist() == b.cardinalities.tolist()
    da, db = factor_dict(a), factor_dict(b)
    assert sorted(da) == sorted(db)
    for sc in da:
        assert len(da[sc]) == len(db[sc])
        for ta, tb in zip(da[sc], db[sc], strict=True):
            assert ta.shape == tb.shape
            assert (np.isneginf(ta) == np.isneginf(tb)).all()
            fin = np.isfinite(ta)
            np.testing.assert_allclose(ta[fin], tb[fin], rtol=1e-12, atol=1e-12)


def random_int_graph(seed: int, n: int = 5, num_factors: int = 6) -> FactorGraph:
    """Random model with int names 0..n-1, arities 0-3, -inf entries and a shared group."""
    rng = np.random.default_rng(seed)
    fg = FactorGraph()
    cards = rng.integers(1, 4, size=n)
    for i, c in enumerate(cards):
        fg.add_variable(i, int(c))
    for _ in range(num_factors):
        arity = int(rng.integers(1, min(3, n) + 1))
        scope = tuple(int(v) for v in rng.choice(n, size=arity, replace=False))
        t = rng.normal(scale=2.0, size=tuple(int(cards[v]) for v in scope))
        t[rng.random(t.shape) < 0.2] = -np.inf
        t.flat[int(rng.integers(t.size))] = 0.5
        fg.add_factor(scope, t)
    pairs = np.array([[0, 1], [1, 2]]) if n >= 3 else None
    if pairs is not None and cards[0] == cards[1] == cards[2]:
        fg.add_factors(pairs, rng.normal(size=(int(cards[0]), int(cards[0]))))
    return fg


SMALL_MARKOV = """MARKOV
3
2 2 3
3
1 0
2 0 1
2 1 2

2
 0.25 0.75
4
 1.0 2.0
 3.0 4.0
6
 1 2 3
 4 5 6
"""

SMALL_BAYES = """BAYES
3
2 2 2
3
1 0
2 0 1
3 0 1 2

2
 0.6 0.4
4
 0.7 0.3
 0.2 0.8
8
 0.9 0.1
 0.5 0.5
 0.4 0.6
 0.0 1.0
"""

SMALL_FG = """# a comment
2

2
4 7
2 3
4
0 1.0
1 2.0   # entry (1, 0)
5 6.0
2 3.0

# unary on label 7
1
7
3
3
0 1
1 1
2 0.5
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- UAI models
def test_uai_table_order_last_variable_fastest() -> None:
    fg = parse_uai(SMALL_MARKOV)
    assert fg.cardinalities.tolist() == [2, 2, 3]
    assert fg.variables == [0, 1, 2]
    tabs = factor_dict(fg)
    np.testing.assert_allclose(tabs[(0,)][0], np.log([0.25, 0.75]))
    np.testing.assert_allclose(tabs[(0, 1)][0], np.log([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(tabs[(1, 2)][0], np.log([[1, 2, 3], [4, 5, 6]]))


def test_uai_zero_entries_become_minus_inf_and_no_warnings() -> None:
    fg = parse_uai(SMALL_BAYES)
    t = factor_dict(fg)[(0, 1, 2)][0]
    assert np.isneginf(t[1, 1, 0]) and t[1, 1, 1] == 0.0
    assert np.isfinite(np.delete(t.ravel(), 6)).all()


def test_uai_groups_by_shape_in_order_of_first_appearance() -> None:
    text = (
        "MARKOV 3 2 2 3 4 2 0 1 2 1 2 2 1 0 2 0 2 4 1 1 1 1 6 1 1 1 1 1 1 4 2 2 2 2 6 1 2 3 4 5 6"
    )
    fg = parse_uai(text)
    assert [g.cards for g in fg.groups] == [(2, 2), (2, 3)]
    assert fg.groups[0].scopes.tolist() == [[0, 1], [1, 0]]
    assert fg.groups[1].scopes.tolist() == [[1, 2], [0, 2]]
    np.testing.assert_allclose(fg.groups[1].log_potentials[1], np.log([[1, 2, 3], [4, 5, 6]]))


def test_bayes_file_is_a_normalised_joint() -> None:
    fg = parse_uai(SMALL_BAYES)
    joint = np.exp(brute_log_joint(fg))
    assert joint.sum() == pytest.approx(1.0, abs=1e-12)
    # P(x0=1, x1=0, x2=1) = 0.4 * P(x1=0|x0=1) * P(x2=1|x0=1,x1=0)
    assert joint[1, 0, 1] == pytest.approx(0.4 * 0.2 * 0.6)
    assert float(exact_log_partition(fg)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_random_bayes_networks_normalise(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    cards = rng.integers(2, 4, size=n)
    lines = ["BAYES", str(n), " ".join(map(str, cards)), str(n)]
    tables = []
    for v in range(n):
        parents = sorted(rng.choice(v, size=min(v, int(rng.integers(0, 3))), replace=False))
        scope = [*map(int, parents), v]
        lines.append(" ".join(map(str, [len(scope), *scope])))
        cpt = rng.dirichlet(np.ones(cards[v]), size=int(np.prod(cards[parents])))
        cpt[cpt < 0.05] = 0.0
        cpt /= cpt.sum(axis=1, keepdims=True)
        tables.append(cpt.ravel())
    for t in tables:
        lines += ["", str(t.size), " ".join(repr(float(x)) for x in t)]
    fg = read_uai(write(tmp_path, "bn.uai", "\n".join(lines)))
    assert np.exp(brute_log_joint(fg)).sum() == pytest.approx(1.0, abs=1e-9)
    assert float(exact_log_partition(fg)) == pytest.approx(0.0, abs=1e-9)


def test_bayes_unnormalised_cpt_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="pgmunfold.io.uai"):
        parse_uai("BAYES 1 2 1 1 0 2 0.5 0.6", "net.uai")
    assert "net.uai, line 1" in caplog.text and "sum to 1.1" in caplog.text


@pytest.mark.parametrize("seed", range(6))
def test_uai_round_trip(tmp_path: Path, seed: int) -> None:
    fg = random_int_graph(seed)
    path = tmp_path / "m.uai"
    write_uai(fg, path)
    back = read_uai(path)
    assert_same_model(fg, back)
    if np.isfinite(float(exact_log_partition(fg))):
        assert float(exact_log_partition(back)) == pytest.approx(
            float(exact_log_partition(fg)), abs=1e-10
        )
        ma, mb = exact_marginals(fg), exact_marginals(back)
        for v in range(len(fg)):
            torch.testing.assert_close(ma[v], mb[v], atol=1e-10, rtol=0)


def test_uai_writer_rescales_huge_potentials(caplog: pytest.LogCaptureFixture) -> None:
    fg = FactorGraph()
    fg.add_variable(0, 2)
    fg.add_factor((0,), [800.0, 799.0])
    with caplog.at_level("WARNING"):
        back = parse_uai(_written(fg, "uai"))
    assert "lower by 800" in caplog.text
    np.testing.assert_allclose(next(back.factors())[1], [0.0, -1.0], atol=1e-12)


def _written(fg: FactorGraph, kind: str) -> str:
    from pgmunfold.io.fg import _format_fg
    from pgmunfold.io.uai import _format_uai

    return _format_uai(fg) if kind == "uai" else _format_fg(fg)


def test_uai_arity_zero_function_kept() -> None:
    fg = parse_uai("MARKOV 1 2 2 0 1 0 1 2.0 2 1 3")
    assert float(exact_log_partition(fg)) == pytest.approx(np.log(2.0 * 4.0))


# --------------------------------------------------------------------------- evidence
def test_evidence_both_forms_and_empty(tmp_path: Path) -> None:
    old = write(tmp_path, "a.evid", "2 0 1 2 2\n")
    new = write(tmp_path, "b.evid", "1\n2 0 1 2 2\n")
    assert read_uai_evidence(old) == read_uai_evidence(new) == {0: 1, 2: 2}
    assert parse_uai_evidence("") == {} == parse_uai_evidence("0") == parse_uai_evidence("1 0")
    assert parse_uai_evidence("1 1 0") == {1: 0}  # old form, one observation
    assert parse_uai_evidence("1 1 1 0") == {1: 0}  # sample count, one observation


def test_evidence_round_trip(tmp_path: Path) -> None:
    write_uai_evidence({3: 1, 0: 2}, tmp_path / "e.evid")
    assert read_uai_evidence(tmp_path / "e.evid") == {3: 1, 0: 2}
    write_uai_evidence({}, tmp_path / "n.evid")
    assert read_uai_evidence(tmp_path / "n.evid") == {}


def test_evidence_checked_against_model() -> None:
    fg = parse_uai(SMALL_MARKOV)
    assert parse_uai_evidence("1 2 2", fg=fg) == {2: 2}
    with pytest.raises(FormatError, match=r"e.evid, line 1: expected the state of variable 1 in "):
        parse_uai_evidence("1 1 2", "e.evid", fg=fg)
    with pytest.raises(FormatError, match=r"line 2: expected an observed variable index in \[0, 3"):
        parse_uai_evidence("1\n3 0", "e.evid", fg=fg)
    with pytest.raises(FormatError, match="sample count 1"):
        parse_uai_evidence("3 1 0 1 1 1 0 1 2 0", "e.evid")
    with pytest.raises(FormatError, match="observed twice"):
        parse_uai_evidence("2 0 1 0 0", "e.evid")


def test_evidence_conditioning_matches_brute_force() -> None:
    fg = parse_uai(SMALL_MARKOV)
    ev: dict[Hashable, int] = {k: s for k, s in parse_uai_evidence("1\n1 2 1").items()}
    joint = np.exp(brute_log_joint(fg))[:, :, 1]
    joint /= joint.sum()
    m = exact_marginals(fg, evidence=ev)
    np.testing.assert_allclose(m[0].numpy(), joint.sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(m[1].numpy(), joint.sum(axis=0), atol=1e-12)
    np.testing.assert_allclose(m[2].numpy(), [0, 1, 0], atol=1e-12)


# --------------------------------------------------------------------------- MAR files
def test_mar_round_trip_and_forms(tmp_path: Path) -> None:
    margs = [np.array([0.25, 0.75]), np.array([1.0]), np.array([0.1, 0.2, 0.7])]
    write_uai_mar(margs, tmp_path / "a.MAR")
    back = read_uai_mar(tmp_path / "a.MAR")
    assert [m.tolist() for m in back] == [m.tolist() for m in margs]
    as_dict = {i: torch.tensor(m) for i, m in enumerate(margs)}
    write_uai_mar(as_dict, tmp_path / "b.MAR")
    assert (tmp_path / "b.MAR").read_text() == (tmp_path / "a.MAR").read_text()
    assert [m.tolist() for m in parse_uai_mar("MAR\n1\n1 2 0.5 0.5")] == [[0.5, 0.5]]
    assert [m.tolist() for m in parse_uai_mar("MAR 1 2 0.5 0.5")] == [[0.5, 0.5]]
    anytime = "MAR\n-BEGIN-\n1\n1 2 0.9 0.1\n-END-\n-BEGIN-\n1\n1 2 0.5 0.5\n-END-\n"
    assert [m.tolist() for m in parse_uai_mar(anytime)] == [[0.5, 0.5]]
    with pytest.raises(FormatError, match=r"a.MAR, line 8: expected a finite decimal number"):
        parse_uai_mar(anytime.replace("0.5 0.5", "0.5 x"), "a.MAR")
    with pytest.raises(ValueError, match="keyed by the variable indices"):
        write_uai_mar({"a": [1.0]}, tmp_path / "c.MAR")


def test_mar_errors() -> None:
    with pytest.raises(
        FormatError, match=r"r.MAR, line 2: unexpected end of file: expected 2 prob"
    ):
        parse_uai_mar("MAR\n2 2 0.5 0.5 2 0.1", "r.MAR")
    with pytest.raises(FormatError, match="expected the header MAR"):
        parse_uai_mar("PR 1 2 0.5 0.5", "r.MAR")
    with pytest.raises(FormatError, match="non-negative probability"):
        parse_uai_mar("MAR 1 2 -0.5 1.5", "r.MAR")


# --------------------------------------------------------------------------- libDAI .fg
def test_fg_first_variable_fastest_sparse_and_comments() -> None:
    fg = parse_fg(SMALL_FG)
    assert fg.variables == [4, 7]
    assert fg.cardinalities.tolist() == [2, 3]
    tabs = factor_dict(fg)
    expect = np.full((2, 3), -np.inf)
    expect[0, 0], expect[1, 0], expect[1, 2], expect[0, 1] = np.log([1.0, 2.0, 6.0, 3.0])
    np.testing.assert_array_equal(tabs[(0, 1)][0], expect)
    np.testing.assert_allclose(tabs[(1,)][0], np.log([1.0, 1.0, 0.5]))


def test_fg_scope_order_kept() -> None:
    fg = parse_fg("1\n2\n3 1\n2 3\n6\n0 1\n1 2\n2 3\n3 4\n4 5\n5 6\n")
    assert fg.variables == [1, 3]
    sc, t = next(fg.factors())
    assert sc == (1, 0)  # label 3 first: id 1
    np.testing.assert_allclose(np.exp(t), [[1, 3, 5], [2, 4, 6]])


@pytest.mark.parametrize("seed", range(6))
def test_fg_round_trip(tmp_path: Path, seed: int) -> None:
    fg = random_int_graph(seed)
    write_fg(fg, tmp_path / "m.fg")
    back = read_fg(tmp_path / "m.fg")
    assert back.variables == fg.variables  # isolated variables kept (uniform unary added)
    cov = {v for sc, _ in fg.factors() for v in sc}
    extra = [v for v in range(len(fg)) if v not in cov]
    fa, fb = factor_dict(fg), factor_dict(back)
    for v in extra:
        np.testing.assert_array_equal(fb.pop((v,))[-1], np.zeros(int(fg.cardinalities[v])))
        if not fb.get((v,)):
            fb.pop((v,), None)
    assert sorted(fa) == sorted(fb)
    if np.isfinite(float(exact_log_partition(fg))):
        assert float(exact_log_partition(back)) == pytest.approx(
            float(exact_log_partition(fg)), abs=1e-10
        )


def test_fg_non_int_names_use_ids(tmp_path: Path) -> None:
    fg = FactorGraph()
    fg.add_variable("a", 2)
    fg.add_variable(("x", 1), 3)
    fg.add_factor(("a", ("x", 1)), np.log(np.arange(1.0, 7.0)).reshape(2, 3))
    write_fg(fg, tmp_path / "n.fg")
    back = read_fg(tmp_path / "n.fg")
    assert back.variables == [0, 1]
    np.testing.assert_allclose(next(back.factors())[1], next(fg.factors())[1], atol=1e-14)


def test_uai_to_fg_to_uai_same_marginals(tmp_path: Path) -> None:
    fg = parse_uai(SMALL_MARKOV)
    write_fg(fg, tmp_path / "m.fg")
    back = read_fg(tmp_path / "m.fg")
    ma, mb = exact_marginals(fg), exact_marginals(back)
    for v in range(3):
        torch.testing.assert_close(ma[v], mb[v], atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- bad files
BAD_UAI = [
    ("", r"line 1: unexpected end of file: expected the preamble MARKOV or BAYES"),
    ("MRF 1 2 0", r"line 1: expected the preamble MARKOV or BAYES, got 'MRF'"),
    ("MARKOV\n2\n2 x\n0", r"line 3: expected a finite decimal number, got 'x'"),
    (
        "MARKOV\n2\n2 2.5\n0",
        r"line 3: expected variable cardinality \(an integer >= 1\), got '2.5'",
    ),
    ("MARKOV\n2\n2 0\n0", r"line 3: expected variable cardinality \(an integer >= 1\), got '0'"),
    (
        "MARKOV\n2\n2 2\n1\n2 0 2\n",
        r"line 5: expected a variable index in the scope of function 0 \(an int.*, got '2'",
    ),
    ("MARKOV\n2\n2 2\n1\n2 0 0\n4 1 1 1 1", r"line 5: function 0: the scope \[0, 0\] repeats"),
    ("MARKOV\n2\n2 2\n1\n2 0 1\n3\n1 1 1", r"line 6: expected 4 table entries for function 0"),
    ("MARKOV\n2\n2 2\n1\n2 0 1\n4\n1 1 1\n", r"line 7: unexpected end of file: expected 4 table"),
    ("MARKOV\n2\n2 2\n1\n2 0 1\n4\n1 -1 1 1", r"line 7: expected a non-negative potential"),
    (
        "BAYES\n1\n2\n1\n1 0\n2\n-0.5 1.5",
        r"line 7: expected a non-negative probability in function 0, got '-0.5",
    ),
    ("MARKOV\n1\n2\n1\n1 0\n2\n0 0", r"line 6: function 0: every table entry is 0"),
    ("MARKOV\n1\n2\n1\n1 0\n2\n1 nan", r"line 7: expected a finite decimal number, got 'nan'"),
    ("MARKOV\n1\n2\n1\n1 0\n2\n1 1e400", r"line 7: expected a finite decimal number"),
    ("MARKOV\n1\n2\n1\n1 0\n2\n1 1\n7", r"line 8: expected the end of the file after the 1 func"),
    ("MARKOV\n3\n2 2 2\n1\n3 0 1", r"line 5: unexpected end of file: expected 3 variable indices"),
    ("MARKOV\n1\n2\n9999\n1 0\n", r"line 4: expected the number of functions, got 9999 but"),
]


@pytest.mark.parametrize(("text", "message"), BAD_UAI)
def test_bad_uai_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.uai", text)
    with pytest.raises(FormatError, match=re.escape(str(path)) + ", " + message) as info:
        read_uai(path)
    assert isinstance(info.value, ValueError)
    assert info.value.source == str(path)


BAD_FG = [
    ("1\n1\n0\n2\n1\n2 1", r"line 6: expected an entry index \(an integer in \[0, 2\)\) of fact"),
    ("1\n1\n0\n2\n2\n0 1\n0 2", r"line 7: factor 0: entry index 0 is listed twice \(first on li"),
    ("1\n1\n0\n2\n1\n0 -1", r"line 6: expected a non-negative value of factor 0, got '-1'"),
    (
        "1\n1\n0\n2\n3\n0 1\n1 1\n0 1",
        r"line 5: expected the number of non-zero entries of factor 0",
    ),
    ("1\n1\n0\n2\n3\n0 1", r"line 6: unexpected end of file: expected 3 'index value' lines"),
    ("1\n1\n0\n2\n2\n0 1", r"line 6: unexpected end of file: expected 2 'index value' lines"),
    ("2\n1\n0\n2\n1\n0 1\n1\n0\n3\n1\n0 1", r"line 9: factor 1: variable 0 has cardinality 3"),
    ("1\n2\n0 0\n2 2\n1\n0 1", r"line 2: factor 0: the labels \[0, 0\] repeat a variable"),
    (
        "1\n1\n-1\n2\n1\n0 1",
        r"line 3: expected a variable label of factor 0 \(an integer >= 0\), got",
    ),
    ("1\n1\n0\n2\n1\n0 0", r"line 5: factor 0: no entry is positive"),
    ("1\n1\n0\n2\n1\n0 1\n5", r"line 7: expected the end of the file after the 1 factors, got"),
    ("1\n1\n0\n2\n1\n0 x # c", r"line 6: expected a finite decimal number, got 'x'"),
    ("1 # one\n", r"line 1: expected 1 factors, but the file is far too short"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FG)
def test_bad_fg_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.fg", text)
    with pytest.raises(FormatError, match=re.escape(str(path)) + ", " + message):
        read_fg(path)


def test_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.uai"
    path.write_bytes(b"\xef\xbb\xbf" + SMALL_MARKOV.replace("\n", "\r\n").encode())
    assert_same_model(read_uai(path), parse_uai(SMALL_MARKOV))


def test_binary_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.uai"
    path.write_bytes(b"MARKOV\n\xff\xfe\x00")
    with pytest.raises(FormatError, match=r"bin.uai, line 2: expected a text file"):
        read_uai(path)


# --------------------------------------------------------------------------- fuzzing
REPLACEMENTS = ["0", "1", "2", "3", "-1", "2.5", "1e400", "nan", "x", "99", "MARKOV", "#", ""]


def _mutate(text: str, ops: list[tuple[int, int, int]]) -> str:
    toks = text.split()
    for op, a, b in ops:
        if not toks:
            break
        i = a % len(toks)
        if op == 0:  # delete a token
            del toks[i]
        elif op == 1:  # replace a token
            toks[i] = REPLACEMENTS[b % len(REPLACEMENTS)]
        elif op == 2:  # insert a token
            toks.insert(i, REPLACEMENTS[b % len(REPLACEMENTS)])
        elif op == 3:  # truncate
            toks = toks[:i]
        else:  # duplicate a token
            toks.insert(i, toks[i])
    return " ".join(t for t in toks if t)


mutations = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 100)),
    min_size=1,
    max_size=3,
)


def _check_graph(fg: FactorGraph) -> None:
    cards = fg.cardinalities
    for sc, t in fg.factors():
        assert t.shape == tuple(int(cards[v]) for v in sc)
        assert not np.isnan(t).any() and not np.isposinf(t).any()
        assert np.isfinite(t).any() or t.size == 0


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutations, st.sampled_from([SMALL_MARKOV, SMALL_BAYES]))
def test_fuzz_uai_reader(ops: list[tuple[int, int, int]], base: str) -> None:
    text = _mutate(base, ops)
    try:
        fg = parse_uai(text, "fuzz.uai")
    except FormatError as exc:
        assert str(exc).startswith("fuzz.uai")
        return
    _check_graph(fg)


@FUZZ
@given(mutations)
def test_fuzz_fg_reader(ops: list[tuple[int, int, int]]) -> None:
    text = _mutate(SMALL_FG.replace("#", "\n#"), ops)
    try:
        fg = parse_fg(text, "fuzz.fg")
    except FormatError as exc:
        assert str(exc).startswith("fuzz.fg")
        return
    _check_graph(fg)


@FUZZ
@given(mutations, st.sampled_from(["1\n3 0 1 2 2 1 0", "2 0 1 2 2"]))
def test_fuzz_evidence_and_mar_readers(ops: list[tuple[int, int, int]], base: str) -> None:
    model = parse_uai(SMALL_MARKOV)
    try:
        ev = parse_uai_evidence(_mutate(base, ops), "fuzz.evid", fg=model)
        assert all(0 <= s < model.cardinalities[v] for v, s in ev.items())
    except FormatError as exc:
        assert str(exc).startswith("fuzz.evid")
    try:
        margs = parse_uai_mar(_mutate("MAR 2 2 0.5 0.5 3 0.2 0.3 0.5", ops), "fuzz.MAR")
        assert all(m.ndim == 1 and m.size >= 1 and (m >= 0).all() for m in margs)
    except FormatError as exc:
        assert str(exc).startswith("fuzz.MAR")


char_edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.text(alphabet="0123456789 .-+eE\n#x")),
    min_size=1,
    max_size=3,
)


@FUZZ
@given(char_edits, st.sampled_from([SMALL_MARKOV, SMALL_BAYES, SMALL_FG]))
def test_fuzz_character_edits(edits: list[tuple[int, int, str]], base: str) -> None:
    """Delete up to 3 characters and insert text anywhere: only FormatError or a valid graph."""
    text = base
    for at, cut, insert in edits:
        i = at % (len(text) + 1)
        text = text[:i] + insert + text[i + cut :]
    for parse in (parse_uai, parse_fg):
        try:
            fg = parse(text, "edit")
        except FormatError as exc:
            assert str(exc).startswith("edit")
            continue
        _check_graph(fg)


# --------------------------------------------------------------------------- shared data
@needs_uai
@pytest.mark.parametrize("name", UAI_NAMES)
def test_uai2014_instances_read(name: str) -> None:
    fg = read_uai(UAI_DIR / name)
    ev = read_uai_evidence(UAI_DIR / f"{name}.evid", fg=fg)
    ref = read_uai_mar(UAI_DIR / f"{name}.MAR")
    assert [m.size for m in ref] == fg.cardinalities.tolist()
    for m in ref:
        assert m.sum() == pytest.approx(1.0, abs=1e-4)
    for v, s in ev.items():  # observed variables have a point-mass reference marginal
        assert ref[v][s] == pytest.approx(1.0, abs=1e-6)
    assert fg.variables == list(range(len(fg)))
    _check_graph(fg)


@needs_uai
def test_uai2014_counts() -> None:
    assert len(UAI_NAMES) == 17
    fg = read_uai(UAI_DIR / "Grids_12.uai")
    assert (len(fg), fg.num_factors) == (100, 280)
    assert read_uai_evidence(UAI_DIR / "Promedus_12.uai.evid") == {29: 1, 36: 1, 219: 1}


@needs_uai
def test_uai2014_exact_marginals_of_a_small_grid() -> None:
    fg = read_uai(UAI_DIR / "Grids_12.uai")
    ref = read_uai_mar(UAI_DIR / "Grids_12.uai.MAR")
    m = exact_marginals(fg)
    err = max(float(np.abs(m[v].numpy() - ref[v]).max()) for v in range(len(fg)))
    assert err < 1e-6  # the reference has 6 significant digits


@needs_libdai
@pytest.mark.parametrize("name", FG_NAMES)
def test_libdai_graphs_read(name: str, tmp_path: Path) -> None:
    fg = read_fg(LIBDAI_DIR / name)
    _check_graph(fg)
    write_fg(fg, tmp_path / name)
    assert_same_model(fg, read_fg(tmp_path / name))
    write_uai(fg, tmp_path / "m.uai")
    assert_same_model(fg, read_uai(tmp_path / "m.uai"))


def _libdai_exact() -> list[np.ndarray]:
    text = (LIBDAI_DIR / "testfast.out").read_text()
    block = text.split("\nEXACT", 1)[1].split("\nJTREE", 1)[0]
    pat = re.compile(r"\(\{x(\d+)\}, \(([^)]*)\)\)")
    found = {int(i): np.array([float(p) for p in ps.split(",")]) for i, ps in pat.findall(block)}
    return [found[i] for i in range(len(found))]


@needs_libdai
def test_libdai_testfast_matches_libdai_exact() -> None:
    fg = read_fg(LIBDAI_DIR / "testfast.fg")
    assert fg.variables == list(range(16))
    ref = _libdai_exact()
    m = exact_marginals(fg)
    for v in range(16):
        np.testing.assert_allclose(m[v].numpy(), ref[v], atol=6e-4)  # 4 digits in the file


@needs_libdai
def test_libdai_alarm_is_a_normalised_bayes_net() -> None:
    fg = read_fg(LIBDAI_DIR / "alarm.fg")
    assert len(fg) == 37
    assert float(exact_log_partition(fg)) == pytest.approx(0.0, abs=1e-3)
