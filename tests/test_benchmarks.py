"""Smoke tests: the benchmark scripts run end to end at a toy size (their figures are not
checked here; speed is measured on demand, never in unit tests)."""

import json

import pytest

from benchmarks import autograd_cost, compare_pgmax, grid_lbp, launch_overhead, roofline


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


def test_roofline_runs_and_counts_the_layout_of_each_path(tmp_path):
    out = tmp_path / "roof.json"
    args = ["--sizes", "4", "--ks", "2", "3", "--iters", "2", "--repeats", "1", "--copy-mb", "4"]
    roofline.main([*args, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == ["binary", "pairwise"]
    # N=4: V=16 variables, E=24 factors, D=48 directed messages (float32)
    assert roofline.compulsory_bytes(4, 2) == 4 * (2 * 48 + 4 * 48 + 2 * 16)
    assert roofline.compulsory_bytes(4, 3) == 4 * (2 * 48 * 3 + 2 * 24 * 9 + 2 * 16 * 3)
    assert all(0 < r["roofline_fraction"] for r in rows)


# torch's own import of inductor modules (torch.utils.mkldnn) warns about torch.jit
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_launch_overhead_runs_eager_and_compiled(tmp_path):
    out = tmp_path / "launch.json"
    args = ["--sizes", "3", "--ks", "2", "--iters", "2", "--repeats", "1"]
    launch_overhead.main([*args, "--backend", "aot_eager", "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["eager_s_per_iter"] > 0 and row["compile_default_s_per_iter"] > 0
    assert row["compile_default_max_diff"] < 1e-5
