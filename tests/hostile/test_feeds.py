"""Feeds at run time: wrong names, dtypes, ranks, fixed sizes, byte order; NaN/Inf reported, not hidden.

Decision (documented in parity.py and the README): the runtime does not scan feeds for NaN/Inf
(it would cost the hot path, benchmark B3); what it computes from them is the app's business.
Parity, used by ``export`` and ``check``, counts non-finite reference values, fails on a NaN
reference (NaN matching NaN proves nothing) and on NaN/Inf the reference does not have.
"""

import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import arch
from hostile_helpers import assert_untouched, resign

import edgeship
from edgeship.errors import ParityError, SpecError
from edgeship.parity.metrics import judge, metrics
from edgeship.parity.tolerances import tolerance_for

X = np.ones((2, 10), np.float32)


@pytest.mark.parametrize("call, match", [
    (lambda m: m({"x": X, "extra": X}), r"\(unexpected extra\)"),
    (lambda m: m(x=X, y=X), r"\(unexpected y\)"),
    (lambda m: m(X, x=X), "either positionally or by name"),
    (lambda m: m(X.astype(np.int64)), "expects dtype float32, got int64"),
    (lambda m: m(X.astype(np.float16)), "expects dtype float32, got float16"),
    (lambda m: m(X.astype(">f4")), "non-native byte order"),
    (lambda m: m({"x": X.astype(">f4")}), "non-native byte order"),
    (lambda m: m(X[None]), r"expects shape \[batch, 10\], got \[1, 2, 10\]"),
    (lambda m: m(np.float32(1.0)), r"must be a numpy.ndarray|expects shape"),
    (lambda m: m(X[:, :5]), r"expects shape \[batch, 10\], got \[2, 5\]"),
    (lambda m: m({"x": X.tolist()}), "must be a numpy.ndarray"),
    (lambda m: m({"x": None}), "must be a numpy.ndarray of float32"),
])
def test_bad_feeds_are_spec_errors_naming_the_input(mlp_bundle, call, match):
    with pytest.raises(SpecError, match=match):
        call(edgeship.load(mlp_bundle))


def test_odd_but_valid_layouts_give_the_right_answer(mlp_bundle):
    m = edgeship.load(mlp_bundle)
    x = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    ref = m(x)
    np.testing.assert_array_equal(m(np.asfortranarray(x)), ref)
    np.testing.assert_array_equal(m(np.repeat(x, 2, axis=1)[:, ::2]), ref)
    np.testing.assert_array_equal(m(x.astype(">f4").astype(np.float32)), ref)


def test_cli_run_with_wrong_dtype_exit_2(mlp_bundle, tmp_path, cli):
    np.save(tmp_path / "x.npy", X.astype(np.float64))
    code, msg = cli("run", mlp_bundle, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npz")
    assert code == 2 and "expects dtype float32, got float64" in msg and "astype('float32')" in msg
    assert not (tmp_path / "y.npz").exists()


def test_runtime_passes_nan_through_without_scanning(mlp_bundle):
    x = X.copy()
    x[1, 3] = np.nan
    y = edgeship.load(mlp_bundle)(x)
    assert np.isfinite(y[0]).all() and np.isnan(y[1]).all()


# ----------------------------------------------------------------------------- NaN/Inf in parity


def test_parity_metrics_count_and_judge_nonfinite_values():
    tol = tolerance_for("fp32")
    ref = np.array([1.0, -np.inf, 2.0], np.float32)
    m = metrics(ref, ref.copy(), tol)
    assert m["nonfinite_ref"] == 1 and judge(m, tol) is None  # matching -inf (masked logits) passes
    m = metrics(ref, np.array([1.0, -np.inf, np.nan], np.float32), tol)
    assert m["nonfinite_mismatch"] == 1 and "NaN/Inf values that the reference does not have" in judge(m, tol)
    nan_ref = np.array([np.nan, 1.0], np.float32)
    m = metrics(nan_ref, nan_ref.copy(), tol)
    assert "the reference has 1 NaN value(s), which prove nothing" in judge(m, tol)
    all_nan = np.full(4, np.nan, np.float32)
    for precision in ("fp32", "fp16", "int8"):  # cosine-only tolerances no longer pass an all-NaN output
        assert "NaN" in judge(metrics(all_nan, all_nan, tolerance_for(precision)), tolerance_for(precision))


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_check_reports_nan_golden_inputs_exit_1(bundle_copy, cli, tmp_path):
    """A bundle whose golden inputs hold NaN (resigned, so checksums pass): check fails and says why."""
    m = edgeship.load(bundle_copy)
    x = X.copy()
    x[0, 0] = np.nan
    (bundle_copy / "golden" / "inputs.npz").write_bytes(_npz(**{"0/x": x}))
    (bundle_copy / "golden" / "outputs.npz").write_bytes(_npz(**{"0/output": m(x)}))
    resign(bundle_copy, "golden/inputs.npz")
    resign(bundle_copy, "golden/outputs.npz")
    report = edgeship.check(bundle_copy)
    assert not report.passed
    assert "the reference has 4 NaN value(s)" in report.failures()[0].reason
    code, msg = cli("check", bundle_copy, "--json", tmp_path / "c.json", "--junit", tmp_path / "c.xml")
    assert code == 1 and "NaN value(s)" in msg and "4 NaN/Inf" in msg
    assert json.loads((tmp_path / "c.json").read_text())["summary"][0]["nonfinite_ref"] == 4
    failure = ET.parse(tmp_path / "c.xml").getroot().find("testsuite/testcase/failure")
    assert "NaN" in failure.get("message") and "nonfinite_ref=4" in failure.text


def test_export_with_nan_example_inputs_fails_parity_and_writes_nothing(files, tmp_path):
    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    x = X.copy()
    x[1, 2] = np.inf
    np.savez(tmp_path / "ex.npz", x=x)
    out = tmp_path / "nan.edgeship"
    with pytest.raises(ParityError, match=r"reference has \d+ NaN value\(s\).*--example-inputs"):
        export(ExportConfig(model=files["dir"] / "mlp_state.pt", output=out, example_inputs=tmp_path / "ex.npz",
                            load=LoadOptions(arch=arch("MLP")), exporter="torchscript", torchscript=False))
    assert_untouched(out, {})
