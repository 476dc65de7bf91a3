"""``python -m pgmunfold infer``: files in, UAI marginals and a summary out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgmunfold.cli import main, marginal_errors, run_inference
from pgmunfold.exact import exact_log_partition, exact_marginals
from pgmunfold.graph import FactorGraph
from pgmunfold.io import read_fg, read_uai, read_uai_mar, write_fg, write_uai, write_uai_mar

REPO = Path(__file__).resolve().parents[1]
try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

LIBDAI = Path(__file__).resolve().parents[2] / "shared" / "data" / "libdai"


def chain_model() -> FactorGraph:
    """A tree (BP is exact): 0 - 1 - 2 with unaries, cardinalities 2, 3, 2."""
    rng = np.random.default_rng(3)
    fg = FactorGraph()
    for i, k in enumerate((2, 3, 2)):
        fg.add_variable(i, k)
    fg.add_factor((0, 1), rng.normal(size=(2, 3)))
    fg.add_factor((1, 2), rng.normal(size=(3, 2)))
    for i, k in enumerate((2, 3, 2)):
        fg.add_factor((i,), rng.normal(size=k))
    return fg


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    fg = chain_model()
    paths = {k: tmp_path / n for k, n in [("model", "chain.uai"), ("evid", "chain.uai.evid")]}
    write_uai(fg, paths["model"])
    paths["evid"].write_text("1\n1 2 1\n")
    exact = exact_marginals(read_uai(paths["model"]), evidence={2: 1})
    paths["mar"] = tmp_path / "chain.uai.MAR"
    write_uai_mar(exact, paths["mar"])
    return paths


def test_infer_writes_marginals_and_summary(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.MAR"
    argv = ["infer", str(files["model"]), "--evid", str(files["evid"]), "--out", str(out)]
    rc = main([*argv, "--mar", str(files["mar"]), "--iterations", "20"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    assert re.search(r"chain.uai: bp parallel damping=0: [\d.]+ s, 20 iterations", line)
    assert "(converged)" in line and "log Z = " in line
    mx = float(re.search(r"max \|err\| = (\S+),", line).group(1))  # type: ignore[union-attr]
    assert mx < 1e-8
    got = read_uai_mar(out)
    ref = read_uai_mar(files["mar"])
    for p, q in zip(got, ref, strict=True):
        np.testing.assert_allclose(p, q, atol=1e-8)
    assert got[2].tolist() == [0.0, 1.0]  # the observed variable
    logz = float(re.search(r"log Z = (\S+?),", line).group(1))  # type: ignore[union-attr]
    expect = float(exact_log_partition(read_uai(files["model"]), evidence={2: 1}))
    assert logz == pytest.approx(expect, abs=1e-5)  # Bethe = exact on a tree


@pytest.mark.parametrize(
    "extra",
    [
        ["--algorithm", "mf", "--schedule", "sequential"],
        ["--schedule", "sequential", "--damping", "0.3", "--dtype", "float32"],
        # (without CUDA the fused kernels run in Triton's interpreter, see conftest)
        pytest.param(
            ["--backend", "triton"],
            marks=pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed"),
        ),
    ],
)
def test_infer_options(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    out = tmp_path / "o.MAR"
    assert main(["infer", str(files["model"]), "--out", str(out), *extra]) == 0
    assert extra[1] in capsys.readouterr().out
    margs = read_uai_mar(out)
    assert [m.size for m in margs] == [2, 3, 2]
    assert all(m.sum() == pytest.approx(1.0, abs=1e-5) for m in margs)


def test_infer_stdout_and_default_output(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["infer", str(files["model"]), "--out", "-"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("MAR\n3 2 ") and "iterations" in cap.err
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["infer", str(files["model"])]) == 0
    assert (work / "chain.uai.MAR").exists()
    capsys.readouterr()
    assert main(["infer", str(files["model"])]) == 2  # never overwrites unless told
    assert "exists; name it with --out" in capsys.readouterr().err


def test_infer_reports_bad_files(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.uai"
    bad.write_text("MARKOV\n1\n2\n1\n1 0\n2\n0.5 -1\n")
    assert main(["infer", str(bad), "--out", "-"]) == 2
    assert "bad.uai, line 7: expected a non-negative potential" in capsys.readouterr().err
    wrong = tmp_path / "wrong.MAR"
    wrong.write_text("MAR 3 2 0.5 0.5 2 0.5 0.5 2 0.5 0.5\n")
    assert main(["infer", str(files["model"]), "--out", "-", "--mar", str(wrong)]) == 2
    assert "variable 1: the reference has 2 states, the model 3" in capsys.readouterr().err
    assert main(["infer", str(files["model"]), "--evid", str(tmp_path / "none.evid")]) == 2
    assert (
        main(["infer", str(files["model"]), "--schedule", "sequential", "--backend", "triton"]) == 2
    )
    assert "backend='triton' needs schedule='parallel'" in capsys.readouterr().err
    evid = tmp_path / "e.evid"
    evid.write_text("1 1 3")
    assert main(["infer", str(files["model"]), "--evid", str(evid)]) == 2
    assert "e.evid, line 1: expected the state of variable 1 in [0, 3)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["infer", str(files["model"]), "--damping", "1.0"])


def test_infer_fg_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fg = chain_model()
    write_fg(fg, tmp_path / "chain.fg")
    assert main(["infer", str(tmp_path / "chain.fg"), "--out", str(tmp_path / "c.MAR")]) == 0
    exact = exact_marginals(read_fg(tmp_path / "chain.fg"))
    got = read_uai_mar(tmp_path / "c.MAR")
    for i in range(3):
        np.testing.assert_allclose(got[i], exact[i].numpy(), atol=1e-8)


def test_marginal_errors() -> None:
    p = [np.array([0.2, 0.8]), np.array([1.0, 0.0, 0.0])]
    q = [np.array([0.3, 0.7]), np.array([0.9, 0.1, 0.0])]
    mx, mean = marginal_errors(p, q)
    assert mx == pytest.approx(0.1) and mean == pytest.approx(0.1)
    with pytest.raises(ValueError, match="reference has 1 variables"):
        marginal_errors(p, q[:1])


def test_python_dash_m(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.MAR"
    proc = subprocess.run(
        [sys.executable, "-m", "pgmunfold", "infer", str(files["model"]), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "iterations" in proc.stdout and out.exists()


def _libdai_row(method: str) -> tuple[float, float]:
    for line in (LIBDAI / "testfast.out").read_text().splitlines():
        cols = line.split()
        if cols and cols[0] == method:
            return float(cols[1]), float(cols[5])
    raise AssertionError(method)


@pytest.mark.skipif(not (LIBDAI / "testfast.out").exists(), reason="libDAI data not present")
@pytest.mark.parametrize(
    ("algorithm", "method", "schedule"),
    [("bp", "BP", "parallel"), ("bp", "BP", "sequential"), ("mf", "MF", "sequential")],
)
def test_libdai_testfast_rows(algorithm: str, method: str, schedule: str) -> None:
    """Same fixed points as libDAI: max variable error and log Z error of its testfast rows."""
    fg = read_fg(LIBDAI / "testfast.fg")
    iterations = 100 if algorithm == "mf" else 200
    res = run_inference(fg, algorithm=algorithm, iterations=iterations, schedule=schedule, tol=1e-9)
    assert res.converged
    exact = exact_marginals(fg)
    mx, _ = marginal_errors(res.marginals, [exact[v].numpy() for v in range(16)])
    dz = res.log_partition - float(exact_log_partition(fg))
    ref_mx, ref_dz = _libdai_row(method)
    assert f"{mx:.3e}" == f"{ref_mx:.3e}"
    assert f"{dz:+.3e}" == f"{ref_dz:+.3e}"
    torch.testing.assert_close(torch.tensor(mx), torch.tensor(ref_mx), rtol=1e-3, atol=0)
