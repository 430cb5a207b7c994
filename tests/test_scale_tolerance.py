"""fp32 parity on large-magnitude outputs (issue 20, item 7): pixel-space boxes differ from the
eager reference by float32 rounding that is tiny relative to the output's magnitude. The default
atol grows with the output's scale; a failure that is relative-small says so and names the
per-output tolerance that passes."""

import models
import numpy as np
import pytest
import torch
from conftest import arch

from edgeship.bundle.golden import Sample
from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import ParityError
from edgeship.parity.evaluate import RunResult, compare_outputs, judge_outputs
from edgeship.parity.tolerances import Tolerance, Tolerances, tolerance_for
from edgeship.pipeline import export


def _boxes(drift: float, seed: int = 0):
    """Pixel-space boxes in [0, 640), a few coordinates at the image edge (0), and a candidate off by
    ``drift`` (relative to 640) on 4% of the elements, as a detector's fp32 ONNX run is."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 640, (100, 4)).astype(np.float32)
    ref[:10, :2] = 0.0
    got = ref.copy()
    hit = rng.random(ref.shape) < 0.04
    hit[:10, :2] = True
    got[hit] += np.float32(640 * drift)
    return ref, got


def test_relative_small_errors_on_a_large_output_pass_the_default():
    """2.5e-3 on values up to 640 (4e-6 of the scale): float32 rounding, not a wrong export."""
    ref, got = _boxes(2.5e-3 / 640)
    check = compare_outputs("r", "fp32", "s", "", {"boxes": ref}, {"boxes": got}, lambda _o: tolerance_for("fp32"))[0]
    assert check.passed, check.reason
    legacy = Tolerance(atol=1e-4, rtol=1e-3, max_outlier_frac=0.0)  # atol fixed, whatever the scale
    assert not compare_outputs("r", "fp32", "s", "", {"boxes": ref}, {"boxes": got}, lambda _o: legacy)[0].passed


def test_a_relative_small_failure_says_so_and_names_the_tolerance_that_passes():
    ref, got = _boxes(1e-4)  # 0.064 px: past the scaled default, still small relative to the scale
    check = compare_outputs("r", "fp32", "s", "", {"boxes": ref}, {"boxes": got}, lambda _o: tolerance_for("fp32"))[0]
    assert not check.passed
    assert "small relative to the output's magnitude" in check.reason and "values up to 6" in check.reason
    suggested = check.reason.split("--tolerance fp32/boxes:atol=")[1].split()[0].rstrip(".;,")
    tol = Tolerances().merged({"fp32/boxes": {"atol": float(suggested)}}).get("fp32", "boxes")
    assert compare_outputs("r", "fp32", "s", "", {"boxes": ref}, {"boxes": got}, lambda _o: tol)[0].passed


def test_a_large_error_gets_no_such_excuse():
    ref, got = _boxes(0.05)  # 32 px off: a wrong export
    check = compare_outputs("r", "fp32", "s", "", {"boxes": ref}, {"boxes": got}, lambda _o: tolerance_for("fp32"))[0]
    assert not check.passed and "small relative" not in check.reason


def test_the_scale_floor_can_be_turned_off_and_is_recorded():
    ref, got = _boxes(2.5e-3 / 640)
    strict = Tolerances.from_dict({"fp32/boxes": {"atol_scale": 0}}).get("fp32", "boxes")
    assert not compare_outputs("r", "fp32", "s", "", {"boxes": ref}, {"boxes": got}, lambda _o: strict)[0].passed
    report = judge_outputs([RunResult("r", 0, Sample("s", {}, {}), {"boxes": got})], [{"boxes": ref}], tolerance_for("fp32"))
    assert report.tolerances["fp32"]["boxes"]["atol_scale"] == 1e-5


def test_export_fails_with_the_hint_end_to_end(tmp_path, monkeypatch):
    """onnxruntime's output drifts by 1e-4 of the output's scale (simulated): fp32 parity fails and the
    message says it is relative-small and which --tolerance passes; with it, the export passes."""
    from edgeship.runtimes.ort import OrtRunner

    real = OrtRunner._infer

    def drift(self, feeds):
        out = real(self, feeds)
        return {k: v + np.float32(1e-4) * np.abs(v).max() for k, v in out.items()}

    monkeypatch.setattr(OrtRunner, "_infer", drift)
    path = tmp_path / "mlp.pt"
    m = models.trained(models.MLP())
    with torch.no_grad():
        m.net[-1].weight.mul_(1000.0)  # outputs in the hundreds
    torch.save(m.state_dict(), path)
    cfg = ExportConfig(model=path, output=tmp_path / "m.edgeship", inputs=("x:4x10",), load=LoadOptions(arch=arch("MLP")),
                       quantize=("fp32",), torchscript=False)
    with pytest.raises(ParityError, match=r"small relative to the output's magnitude.*--tolerance fp32/output:atol=") as e:
        export(cfg)
    atol = str(e.value).split("--tolerance fp32/output:atol=")[1].split()[0].rstrip(".;,")
    r = export(ExportConfig(**{**cfg.__dict__, "tolerances": {"fp32/output": {"atol": float(atol)}}}))
    assert r.parity.passed
