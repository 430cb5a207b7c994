"""Held-out data for the parity gates (issue 20, item 10): --eval-data, a held-out split of
--calibration, and the margin each quantized variant passed by."""

import json

import models
import numpy as np
import pytest
import torch
from conftest import arch

from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import SpecError
from edgeship.pipeline import export


def _blind_mlp(tmp_path):
    """An MLP that ignores input feature 0: inputs where that feature is huge (held out) make dynamic
    int8's per-tensor activation scale crush the features it uses; the example has none."""
    torch.manual_seed(0)  # the weights, whatever the tests before left in torch's global generator
    m = models.trained(models.MLP())
    with torch.no_grad():
        m.net[0].weight[:, 0] = 0.0
    path = tmp_path / "mlp.pt"
    torch.save(m.state_dict(), path)
    rng = np.random.default_rng(0)
    example = tmp_path / "example.npz"
    np.savez(example, x=rng.standard_normal((8, 10)).astype(np.float32))
    held = rng.standard_normal((12, 10)).astype(np.float32)
    held[:, 0] = 5000.0
    heldout = tmp_path / "heldout.npz"
    np.savez(heldout, x=held)  # the input's own rank: 12 batch-1 samples
    return path, example, heldout


def _cfg(tmp_path, path, example, **kw):
    base = dict(model=path, output=tmp_path / "m.edgeship", example_inputs=example, dynamic_batch=True,
                load=LoadOptions(arch=arch("MLP")), quantize=("dynamic",), torchscript=False)
    return ExportConfig(**{**base, **kw})


def test_a_variant_that_passes_only_on_its_examples_is_gated_on_held_out_data(tmp_path):
    path, example, heldout = _blind_mlp(tmp_path)
    r = export(_cfg(tmp_path, path, example))
    assert "int8_dynamic" in r.variants  # the golden samples alone say it is fine ...
    note = next(n for n in r.notes if n.startswith("int8_dynamic: cosine"))
    assert "golden sample(s)" in note and "margin +" in note and "pass --eval-data" in note
    r = export(_cfg(tmp_path, path, example, eval_data=str(heldout), fallback=False, output=tmp_path / "h.edgeship"))
    assert "int8_dynamic" not in r.variants  # ... the held-out data says it is not
    assert any(n.startswith("int8_dynamic fails parity and is not shipped: output on sample eval-0 (a held-out sample)")
               for n in r.notes), r.notes
    report = json.loads((r.bundle / "report.json").read_text())
    assert report["held_out"] == {"source": f"--eval-data {heldout}", "samples": 12}
    golden = np.load(r.bundle / "golden" / "inputs.npz")
    assert not any(np.any(golden[k] == 5000.0) for k in golden.files)  # held-out data is not shipped


def test_the_margin_is_reported_on_held_out_samples(tmp_path):
    path, example, _ = _blind_mlp(tmp_path)
    rng = np.random.default_rng(1)
    held = tmp_path / "fair.npz"
    np.savez(held, x=rng.standard_normal((40, 10)).astype(np.float32))
    r = export(_cfg(tmp_path, path, example, eval_data=str(held)))
    assert "int8_dynamic" in r.variants
    gates = json.loads((r.bundle / "report.json").read_text())["gates"]["int8_dynamic"]
    assert gates["held_out"]["samples"] == 40 and gates["golden"]["samples"] == 3 + 8  # the 8 example rows on their own
    cos = gates["held_out"]["cosine"]
    assert cos["threshold"] == 0.99 and cos["margin"] == pytest.approx(cos["worst"] - 0.99)
    note = next(n for n in r.notes if n.startswith("int8_dynamic: cosine"))
    assert "on 40 held-out sample(s)" in note and f"--eval-data {held}" in note and "are few" not in note


def test_a_share_of_the_calibration_data_can_be_held_out(tmp_path):
    path, example, _ = _blind_mlp(tmp_path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(2).standard_normal((8, 10)).astype(np.float32))
    r = export(_cfg(tmp_path, path, example, calibration=str(calib), quantize=("static",), eval_split=0.25))
    report = json.loads((r.bundle / "report.json").read_text())
    assert report["calibration"]["samples"] == 6
    assert report["held_out"] == {"source": "the last 2 of 8 --calibration samples (--eval-split 0.25)", "samples": 2}
    r = export(_cfg(tmp_path, path, example, calibration=str(calib), quantize=("static",), output=tmp_path / "n.edgeship"))
    report = json.loads((r.bundle / "report.json").read_text())
    assert report["calibration"]["samples"] == 8 and report["held_out"] is None  # the split is asked for, never silent


@pytest.mark.parametrize("make, match", [
    (lambda d: str(d / "missing.npz"), r"--eval-data .*missing\.npz: cannot read it .*No such file"),
    (lambda d: _npz(d, y=np.zeros((2, 10), np.float32)), r"--eval-data .* has arrays \['y'\], but the model's inputs are \['x'\]"),
    (lambda d: _npz(d, x=np.zeros((2, 7), np.float32)), r"eval data sample 0 from .*expects shape \[batch, 10\]"),
    (lambda d: _npz(d, x=np.zeros((2, 10), np.int64)), r"eval data sample 0 .*expects dtype float32"),
])
def test_bad_held_out_data_is_refused_before_anything_is_written(tmp_path, make, match):
    path, example, _ = _blind_mlp(tmp_path)
    with pytest.raises(SpecError, match=match):
        export(_cfg(tmp_path, path, example, eval_data=make(tmp_path)))
    assert not (tmp_path / "m.edgeship").exists()


def _npz(folder, **arrays):
    path = folder / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


def test_held_out_samples_the_model_cannot_run_are_named(tmp_path):
    path = tmp_path / "kv.pt"
    torch.save(models.PastKV().state_dict(), path)
    held = tmp_path / "ids.npz"
    np.savez(held, input_ids=np.full((2, 7), 99, np.int64), attention_mask=np.ones((2, 7), np.int64))  # ids past the vocabulary
    cfg = ExportConfig(model=path, output=tmp_path / "k.edgeship", inputs=("input_ids:2x7:int64", "attention_mask:2x7:int64"),
                       load=LoadOptions(arch=arch("PastKV")), quantize=("fp32",), eval_data=str(held), dynamic_batch=True)
    with pytest.raises(SpecError, match=r"--eval-data .*ids\.npz: the model cannot run on held-out sample 0: .*index out of range"):
        export(cfg)


def test_cli_flags(cli, tmp_path):
    path, example, heldout = _blind_mlp(tmp_path)
    base = ["export", path, "--arch", arch("MLP"), "--example-inputs", example, "--dynamic-batch", "--no-torchscript",
            "--quantize", "dynamic", "--no-tune"]
    code, out = cli(*base, "--eval-data", heldout, "--eval-samples", "3", "-o", tmp_path / "c.edgeship")
    assert code == 0, out
    assert json.loads((tmp_path / "c.edgeship" / "report.json").read_text())["held_out"]["samples"] == 3
    code, out = cli(*base, "--eval-split", "1.5", "-o", tmp_path / "d.edgeship")
    assert code == 2 and "--eval-split" in out


def test_without_held_out_data_each_example_row_is_judged_on_its_own(tmp_path, monkeypatch):
    """The gate is the worst row of the example, not the cosine of the flattened batch, which one
    bad row among eight barely moves (simulated: int8 gets row 5 wrong when it runs alone)."""
    from edgeship.runtimes.ort import OrtRunner

    path, example, _ = _blind_mlp(tmp_path)
    row5 = np.load(example)["x"][5:6]
    real = OrtRunner._infer

    def wrong_on_row5(self, feeds):
        out = real(self, feeds)
        if not isinstance(self.model, bytes) and "int8" in str(self.model) and np.array_equal(feeds["x"], row5):
            return {k: -v for k, v in out.items()}
        return out

    monkeypatch.setattr(OrtRunner, "_infer", wrong_on_row5)
    r = export(_cfg(tmp_path, path, example, fallback=False))
    assert any(n.startswith("int8_dynamic fails parity and is not shipped: output on sample row-5") for n in r.notes), r.notes
    monkeypatch.setattr(OrtRunner, "_infer", real)
    r = export(_cfg(tmp_path, path, example, output=tmp_path / "ok.edgeship"))
    rows = {c["sample"] for c in json.loads((r.bundle / "report.json").read_text())["parity"]["checks"]
            if c["sample"].startswith("row-")}
    assert rows == {f"row-{i}" for i in range(8)}
    assert any("on 11 golden sample(s), 8 of them the first one's rows each on its own" in n for n in r.notes), r.notes
