"""The unfolding tutorials run end to end at their CI size and save their figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path) -> str:
    pytest.importorskip("matplotlib")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tutorials" / script), "--size", "ci", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_tutorial_01_sigmoid_net_is_mean_field(tmp_path):
    stdout = _run("01_sigmoid_net_is_mean_field.py", tmp_path)
    assert "max |diff| = 0.0e+00" in stdout
    for name in ("accuracy_vs_parameters.png", "training_curves.png", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["checks"]["mf_vs_mlp"] == 0.0
    assert res["checks"]["mf_vs_engine"] < 1e-12 and res["checks"]["bp_vs_engine"] < 1e-12
    assert res["checks"]["tree_bp_error"] < 1e-12 < res["checks"]["tree_mlp_error"]
    accs = {row["network"]: row["accuracy"][0] for row in res["table"]}
    assert len(accs) == 6 and all(a > 0.3 for a in accs.values())  # far above chance (0.1)


def test_tutorial_02_unfolded_bp_for_ising_denoising(tmp_path):
    _run("02_unfolded_bp_for_ising_denoising.py", tmp_path)
    for name in ("examples.png", "couplings.png", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())
    rows = {row["network"].split(",")[0] + (" trained" if "trained" in row["network"] else ""):
            row for row in res["table"]}  # fmt: skip
    assert rows["untied BP trained"]["accuracy"] > rows["pixelwise (unaries only)"]["accuracy"]
    for h in res["histories"].values():
        assert h[-1] < h[0]  # discriminative training lowered the training loss


def test_tutorial_03_deep_nmf_speech_enhancement(tmp_path):
    import os
    import shutil

    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"needs {missing} (apt-get install -y espeak-ng sox); CI installs them")
    stdout = _run("03_deep_nmf_speech_enhancement.py", tmp_path)
    assert "deep NMF" in stdout
    for name in ("results.json", "results.png", "results.md"):
        assert (tmp_path / name).stat().st_size > 0
    res = json.loads((tmp_path / "results.json").read_text())["results"]
    assert len(res) == 4
    # every method enhances: positive SI-SDR improvement on held-out voices
    assert all(row["si_sdri"]["avg"] > 0 for row in res.values())
