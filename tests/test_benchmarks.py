"""Smoke tests: the benchmark scripts run end to end at a toy size (their figures are not
checked here; speed is measured on demand, never in unit tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pgmunfold as pu
from benchmarks import (
    ab_forward,
    autograd_cost,
    compare_pgmax,
    contraction_memory,
    enumerated,
    forward_overhead,
    fused_tiles,
    grid_lbp,
    hub_graphs,
    launch_overhead,
    log_form_backward,
    mixed_cardinality,
    op_traffic,
    page_faults,
    roofline,
    uai_autograd,
    uai_pgmax,
)
from pgmunfold.infer import fused
from pgmunfold.infer.pairwise import NEG_BITS


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
    # the log form's loop over states (LogStateReduce), max-product
    log_form = ["--contraction", "logsumexp", "--semiring", "max", "--json", str(out)]
    autograd_cost.main(["--sizes", "4", "--ks", "3", "--iters", "2", "--repeats", "1", *log_form])
    rows = json.loads(out.read_text())
    assert [r["semiring"] for r in rows] == ["max", "max"] and rows[0]["bwd_s"] > 0


def test_log_form_backward_runs(tmp_path, capsys):
    out = tmp_path / "lf.json"
    args = ["--grids", "4:3", "3:5", "--iters", "2", "--repeats", "1", "--batch", "2"]
    assert log_form_backward.main([*args, "--label", "X", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["N"], r["K"], r["semiring"]) for r in rows] == [
        (4, 3, "sum"),
        (4, 3, "max"),
        (3, 5, "sum"),
        (3, 5, "max"),
    ]
    assert all(r["path"] == "pairwise" and r["bwd_ms_per_iter"] > 0 for r in rows)
    assert capsys.readouterr().out.count("X N=") == 4


def test_compare_pgmax_without_pgmax_says_so(capsys):
    assert compare_pgmax.main(["--pgmax-python", "/nonexistent/python", "--sizes", "4"]) == 0
    assert "not available" in capsys.readouterr().out


def test_hub_graphs_runs_and_checks_stars_against_the_closed_form(tmp_path, capsys):
    out = tmp_path / "hub.json"
    args = ["--sizes", "300", "--ks", "2", "3", "--iters", "30", "--repeats", "1"]
    hub_graphs.main([*args, "--pgmax-python", "/nonexistent/python", "--json", str(out)])
    assert "PGMax not run" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [(r["graph"], r["K"]) for r in rows] == [("star", 2), ("star", 3), ("ba", 2), ("ba", 3)]
    stars = rows[:2]
    assert [r["path"] for r in stars] == ["binary", "pairwise"]  # both bucket the hub's slots
    assert all(r["buckets"] == 1 for r in stars)
    assert all(r["slots"] == 2 * 300 and r["one_table_slots"] == 301 * 300 for r in stars)
    assert all(r["max_err_exact"] < 1e-5 for r in stars)  # a tree: BP converges to exact


def test_uai_pgmax_declares_the_same_model_for_both(capsys):
    assert uai_pgmax.main(["--pgmax-python", "/nonexistent/python"]) == 0
    assert "not available" in capsys.readouterr().out
    path = uai_pgmax.DATA / "Pedigree_11.uai"  # arity 1-4, hard zeros, evidence
    fg, arrays = uai_pgmax.declare(path, floor=-200.0)
    n = int(arrays["n_groups"])
    assert n == len(fg.groups) and len(pu.read_uai_evidence(str(path) + ".evid")) > 0
    for i, g in enumerate(fg.groups):
        np.testing.assert_array_equal(arrays[f"scopes_{i}"], g.scopes)
        np.testing.assert_array_equal(arrays[f"tables_{i}"], g.log_potentials)
        assert np.isfinite(g.log_potentials).all() and g.log_potentials.min() >= -200.0


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
    # the fused kernels read each table once (both directions), write beliefs instead of fields
    assert roofline.compulsory_bytes(4, 3, "triton") == 4 * (2 * 48 * 3 + 24 * 9 + 2 * 16 * 3)
    assert roofline.compulsory_bytes(4, 2, "triton") == 4 * (2 * 48 + 4 * 24 + 2 * 16)
    assert roofline.fused_kernel_bytes(4, 2) == 4 * (6 * 16 + 10 * 24 + 4 * 16 + 4 * 24)
    pytest.importorskip("triton")  # on CPU the kernels run in Triton's interpreter (conftest)
    fused = ["--sizes", "4", "--ks", "3", "--iters", "2", "--repeats", "1", "--copy-mb", "4"]
    roofline.main([*fused, "--backend", "triton", "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["path"] == "fused"
    # V=16, E=24, K=3: floats 2*16*3 + 4*16*3 + 6*24*3 + 24*9 = 936, ints 4*16 + 4*24 = 160
    assert row["kernel_bytes_per_iter"] == roofline.fused_kernel_bytes(4, 3) == 4 * (936 + 160)


# torch's own import of inductor modules (torch.utils.mkldnn) warns about torch.jit
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_launch_overhead_runs_eager_and_compiled(tmp_path):
    out = tmp_path / "launch.json"
    args = ["--sizes", "3", "--ks", "2", "--iters", "2", "--repeats", "1"]
    launch_overhead.main([*args, "--backend", "aot_eager", "--compile-steps", "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["eager_s_per_iter"] > 0 and row["compile_default_s_per_iter"] > 0
    assert row["compile_default_max_diff"] < 1e-5
    # (K = 2: the binary path, which compile_steps leaves as it is)
    assert row["compile_steps_s_per_iter"] > 0 and row["compile_steps_max_diff"] < 1e-5


def test_op_traffic_charges_reads_and_writes_per_op():
    x = torch.ones(4, 6)
    idx = torch.tensor([0, 2, 2])
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
    ) as prof:
        g = torch.index_select(x, 0, idx)  # reads 24 + 3 (int64), writes 3 x 6
        g.addcmul_(g, g)  # in place: reads 3 x 18, writes 18
        x.sum(dim=1, keepdim=True)  # reads 24, writes 4
        torch.sub(x, x[:, :1])  # broadcast: reads 24 + 4, writes 24
    got = {e.name: op_traffic.op_bytes(e) for e in prof.events() if e.cpu_parent is None}
    assert got["aten::index_select"] == 4 * 24 + 8 * 3 + 4 * 18
    assert got["aten::addcmul_"] == 4 * (3 * 18 + 18)
    assert got["aten::sum"] == 4 * (24 + 4)
    assert got["aten::sub"] == 4 * (24 + 4 + 24)


def test_op_traffic_per_iteration_counts_the_binary_step(tmp_path):
    out = tmp_path / "ops.json"
    op_traffic.main(["--sizes", "4", "--ks", "2", "3", "--json", str(out)])
    binary, pairwise = json.loads(out.read_text())
    # every iteration gathers (index_select) and damps (lerp) once per message tensor
    assert binary["by_op"]["aten::lerp"]["launches"] == 1
    assert binary["by_op"]["aten::index_select"]["launches"] >= 2
    assert pairwise["kernels_per_iter"] > binary["kernels_per_iter"] > 5
    assert pairwise["bytes_per_iter"] > roofline.compulsory_bytes(4, 3)


def test_forward_overhead_fits_fixed_and_per_iteration_cost(tmp_path):
    out = tmp_path / "fo.json"
    args = ["--sizes", "4", "--ks", "2", "3", "--iters", "1", "3", "--repeats", "1"]
    forward_overhead.main([*args, "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [(r["K"], r["path"]) for r in rows] == [(2, "binary"), (3, "pairwise")]
    for r in rows:
        t1, t3 = r["times_s"]["1"], r["times_s"]["3"]
        assert r["per_iter_s"] == pytest.approx((t3 - t1) / 2)
        assert r["fixed_s"] == pytest.approx(t1 - r["per_iter_s"])
    with pytest.raises(SystemExit):
        forward_overhead.main(["--iters", "5"])


def test_fused_tiles_sweeps_each_configuration(tmp_path):
    pytest.importorskip("triton")  # on CPU the kernels run in Triton's interpreter (conftest)
    out = tmp_path / "tiles.json"
    args = ["--sizes", "3", "--ks", "2", "--iters", "2", "--repeats", "1"]
    fused_tiles.main([*args, "--tiles", "64", "4096", "--warps", "2", "--json", str(out)])
    mf = tmp_path / "tiles_mf.json"
    fused_tiles.main(
        [*args, "--tiles", "64", "--warps", "2", "--algorithm", "mf", "--json", str(mf)]
    )
    assert all(r["max_abs_dp"] < 1e-5 for r in json.loads(mf.read_text()))
    rows = json.loads(out.read_text())
    assert [(r["backend"], r["tile"]) for r in rows] == [
        ("torch", 0),
        ("triton", 64),
        ("triton", 4096),
    ]
    assert all(r["max_abs_dp"] < 1e-5 for r in rows)


def test_fused_kernels_compile_for_an_h100_without_spills(tmp_path):
    # no GPU needed: Triton's CUDA backend and its bundled ptxas compile for sm_90; in a process
    # of its own, as this one's kernels run in the interpreter (conftest)
    pytest.importorskip("triton")
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # (triton 3.9 warns when it is unset)
    args = ["--ahead-of-time", "--ks", "3", "8", "--dtypes", "fp32", "fp64"]
    args += ["--tiles", str(fused._TILE)]
    args += ["--warps", str(fused._WARPS), "--json", str(out)]
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.fused_tiles", *args], cwd=root, env=env, check=True
    )
    rows = json.loads(out.read_text())
    assert len(rows) == 4
    for row in rows:
        for name in ("beliefs", "factors", "factors_exact", "mf_factors", "mf_variables"):
            assert row[name]["stack_bytes"] == 0, row
            assert 0 < row[name]["registers"] <= 128, row


def test_fused_variants_compile_with_a_bare_triton(tmp_path):
    # the script needs nothing but triton (it checks other Triton versions in bare venvs)
    pytest.importorskip("triton")
    from benchmarks import fused_variants

    assert fused_variants.NEG_BITS == NEG_BITS
    assert all(fused_variants.pow2(k) == fused._pow2(k) for k in range(1, 70))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    script = Path(fused_variants.__file__)
    args = ["--ks", "3", "--dtypes", "fp32", "--itypes", "i64"]
    proc = subprocess.run(
        [sys.executable, "-I", str(script), *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 kernel variants compiled for sm_90" in proc.stdout


def test_enumerated_benchmark_times_both_contractions(tmp_path):
    out = tmp_path / "enum.json"
    args = ["--sizes", "3", "--ks", "2", "--arities", "2", "3", "--batches", "2"]
    enumerated.main([*args, "--iters", "2", "--repeats", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [(r["arity"], r["auto"]) for r in rows] == [(2, "enumerate"), (3, "enumerate")]
    assert all(r["max_abs_diff"] < 1e-5 and r["ratio"] > 0 for r in rows)


@pytest.mark.parametrize("algorithm", ["bp", "mf"])
def test_uai_autograd_times_training_on_a_general_instance(tmp_path, algorithm):
    out = tmp_path / "ua.json"
    args = ["--only", "Promedus_14", "--algorithm", algorithm, "--batch", "2", "--iters", "2"]
    assert uai_autograd.main([*args, "--repeats", "1", "--passes", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["contraction"] == "enumerate" and row["batch"] == 2
    assert all(row[k] > 0 for k in ("nograd", "fwd", "bwd"))
    assert uai_autograd.main(["--only", "no such instance"]) == 1


def test_contraction_memory_reports_both_contractions(capsys):
    args = ["--size", "4", "--k", "2", "--batch", "1", "--iters", "1"]
    assert contraction_memory.main([*args, "--contractions", "enumerate", "logsumexp"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:2] == ["enumerate", "True"]
    assert lines[3].split()[:2] == ["logsumexp", "False"]


def test_mixed_cardinality_reports_every_contraction(capsys):
    """One 64-state variable on a short binary chain: ``auto`` takes the enumerated
    contraction, ``logsumexp`` keeps the pairwise path; with a 4-state one ``auto`` keeps it."""
    args = ["--n", "30", "--ks", "4", "64", "--iters", "2", "--repeats", "1", "--grad"]
    assert mixed_cardinality.main(args) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    paths = {(int(r[0]), r[1]): r[2] for r in rows}
    assert paths == {
        (4, "auto"): "pairwise",
        (4, "logsumexp"): "pairwise",
        (4, "enumerate"): "enumerated",
        (64, "auto"): "enumerated",
        (64, "logsumexp"): "pairwise",
        (64, "enumerate"): "enumerated",
    }
    assert all(len(r) == 6 and float(r[4]) > 0 and float(r[5]) > 0 for r in rows)
    assert mixed_cardinality.main([*args, "--algorithm", "mf"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert {(int(r[0]), r[1]): r[2] for r in rows} == paths  # (the same routes)


def test_ab_forward_runs_each_checkout_in_its_own_child(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ab.json"
    args = ["--trees", str(root), str(root), "--grids", "3:2:1:2", "3:3:2:1"]
    args += ["--compile", "semiring=max", "damping=0.2"]
    assert ab_forward.compile_options(args[-2:]) == {"semiring": "max", "damping": 0.2}
    ab_forward.main([*args, "--alternations", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["grid 3 K=2 T=1", "grid 3 K=3 T=2"]
    assert all(len(r["A_ms"]) == len(r["B_ms"]) == 1 and r["ratio_of_medians"] > 0 for r in rows)
    assert "grid 3 K=3 T=2" in capsys.readouterr().out


def test_ab_forward_times_the_build_in_build_mode(tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ab.json"
    args = ["--trees", str(root), str(root), "--grids", "3:2:1:2", "--uai", "CSP_11:1:1"]
    ab_forward.main([*args, "--mode", "build", "--alternations", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["grid 3 K=2 T=1", "CSP_11 T=1"]
    assert all(0 < r["A_ms"][0] < 60e3 and 0 < r["B_ms"][0] < 60e3 for r in rows)


@pytest.mark.parametrize("mode", ["nograd", "train"])
def test_page_faults_compares_the_two_allocator_settings(tmp_path, mode):
    out = tmp_path / "pf.json"
    args = ["--sizes", "3", "--ks", "2", "--iters", "2", "--modes", mode, "--passes", "1"]
    page_faults.main([*args, "--repeats", "2", "--json", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["mode"] == mode and row["default_s"] > 0 and row["tuned_s"] > 0
    assert row["default_faults"] >= 0 and row["tuned_faults"] >= 0
