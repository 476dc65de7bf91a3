"""Smoke tests: the benchmark scripts run end to end at a toy size (their figures are not
checked here; speed is measured on demand, never in unit tests)."""

import json

from benchmarks import autograd_cost, compare_pgmax, grid_lbp


def test_grid_suite_runs(tmp_path):
    out = tmp_path / "grid.json"
    args = ["--sizes", "4", "--ks", "2", "3", "--iters", "2", "--algorithms", "bp", "mf"]
    grid_lbp.main([*args, "--json", str(out), "--backward"])
    rows = json.loads(out.read_text())
    assert {(r["algorithm"], r["K"]) for r in rows} == {("bp", 2), ("bp", 3), ("mf", 2), ("mf", 3)}
    assert all(r["s_per_iter"] > 0 and r["fwd_bwd_over_fwd"] > 0 for r in rows)


def test_autograd_cost_runs(tmp_path):
    out = tmp_path / "ag.json"
    args = ["--sizes", "4", "--ks", "2", "3", "--iters", "2", "4", "--repeats", "1"]
    autograd_cost.main([*args, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert len(rows) == 8
    assert {r["fast_path"] for r in rows} == {"binary", "pairwise"}
    assert all(r["saved_mb"] > 0 for r in rows)


def test_compare_pgmax_without_pgmax_says_so(capsys):
    assert compare_pgmax.main(["--pgmax-python", "/nonexistent/python", "--sizes", "4"]) == 0
    assert "not available" in capsys.readouterr().out
