"""The examples run as a user runs them."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EDGESHIP = [sys.executable, "-m", "edgeship"]


def test_simplenet_train_export_check_and_load(tmp_path):
    src = ROOT / "examples" / "simplenet"
    for f in ("model.py", "train.py"):
        shutil.copy(src / f, tmp_path / f)
    r = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    losses = [line for line in r.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) == 10 and "test loss" in r.stdout
    for model, extra in (("simplenet_state.pt", ["--arch", "model.py:SimpleNet"]), ("simplenet_ts.pt", [])):
        r = subprocess.run([*EDGESHIP, "export", model, *extra, "--input", "x:1x10", "--dynamic-batch",
                            "-o", f"{model}.edgeship"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Parity vs eager reference" in r.stdout and "Bundle:" in r.stdout
        r = subprocess.run([*EDGESHIP, "check", f"{model}.edgeship"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0 and "check passed" in r.stdout, r.stdout + r.stderr
    import edgeship

    m = edgeship.load(tmp_path / "simplenet_state.pt.edgeship")
    assert m(np.ones((5, 10), np.float32)).shape == (5, 1)
    app = ROOT / "examples" / "embed_app" / "app.py"
    r = subprocess.run([sys.executable, str(app), "simplenet_state.pt.edgeship"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "output: float32[2, 1]" in r.stdout and "torch imported: False" in r.stdout
