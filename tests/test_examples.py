"""The examples run as a user runs them."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def _run_example(script: Path, out: Path) -> str:
    r = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _figure(text: str, pattern: str) -> float:
    import re

    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text[-2000:]}"
    return float(m.group(1))


@pytest.mark.slow
def test_digits_cnn_int8_keeps_accuracy(tmp_path):
    out = _run_example(ROOT / "examples" / "digits_cnn" / "train.py", tmp_path)
    fp32 = _figure(out, r"fp32 ([0-9.]+),")
    int8 = _figure(out, r"int8_static ([0-9.]+) \(drop")
    assert fp32 > 0.9 and fp32 - int8 <= 0.01


@pytest.mark.slow
def test_minilm_int8_embeddings_match_fp32(tmp_path):
    out = _run_example(ROOT / "examples" / "minilm" / "run.py", tmp_path)
    # one --dynamic flag per axis and no symbol names: the three sequence axes are tied
    assert "input_ids:1, attention_mask:1, token_type_ids:1 must be equal: exported as one symbol 'seq'" in " ".join(out.split())
    assert _figure(out, r"vs eager: max abs ([0-9.e+-]+)") <= 1e-4
    assert _figure(out, r"min cosine ([0-9.]+)") >= 0.99
    assert _figure(out, r"int8's top 3 for ([0-9]+)%") == 100


def test_ci_gate_script(tmp_path):
    """examples/ci/gate.sh, as the workflow runs it: export, check with JUnit, and a latency gate."""
    import os

    from junitparser import JUnitXml

    src = ROOT / "examples" / "simplenet"
    for f in ("model.py", "train.py"):
        shutil.copy(src / f, tmp_path / f)
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, check=True, capture_output=True)
    env = {**os.environ, "EDGESHIP": f"{sys.executable} -m edgeship", "CI": "true"}
    gate = str(ROOT / "examples" / "ci" / "gate.sh")
    r = subprocess.run(["bash", gate, "simplenet_state.pt", "out", "--arch", "model.py:SimpleNet", "--input", "x:1x10",
                        "--dynamic-batch"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    cases = [c for suite in JUnitXml.fromfile(str(tmp_path / "out" / "parity.xml")) for c in suite]
    assert cases and all(c.is_passed for c in cases)
    base = tmp_path / "out" / "base.json"
    subprocess.run([*EDGESHIP, "profile", "out/model.edgeship", "-n", "20", "--json", str(base)], cwd=tmp_path, check=True,
                   capture_output=True)
    r = subprocess.run(["bash", gate, "out/model.edgeship", "out2"], cwd=tmp_path, capture_output=True, text=True,
                       env={**env, "BASELINE": str(base), "MAX_REGRESSION": "500%"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # a bundle with one changed byte fails the gate with exit 2 (corrupt), before any parity run
    onnx_file = tmp_path / "out" / "model.edgeship" / "models" / "fp32.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-50] ^= 1
    onnx_file.write_bytes(bytes(data))
    r = subprocess.run(["bash", gate, "out/model.edgeship", "out3"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "sha256" in r.stdout + r.stderr
