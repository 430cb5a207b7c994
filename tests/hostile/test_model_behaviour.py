"""Models that misbehave: train mode, nondeterminism, an op no exporter handles, int64 slicing."""

import json
from pathlib import Path

import models
import numpy as np
import pytest
import torch
from conftest import arch
from hostile_helpers import assert_untouched

import edgeship
from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import ExportError, ParityError
from edgeship.pipeline import export

HOSTILE_MODELS = Path(__file__).with_name("hostile_models.py")


def harch(name: str) -> str:
    return f"{HOSTILE_MODELS}:{name}"


def _state(tmp_path, module, name="m.pt"):
    torch.manual_seed(0)
    path = tmp_path / name
    torch.save(module.state_dict(), path)
    return path


def test_train_mode_dropout_batchnorm_is_exported_in_eval_and_reported(tmp_path, cli):
    m = models.trained(models.MobileNetish()).train()  # dropout on, batchnorm on batch statistics
    path = tmp_path / "train_mode.pt"
    torch.jit.save(torch.jit.script(m), path)
    out = tmp_path / "tm.edgeship"
    code, msg = cli("export", path, "--input", "x:1x3x16x16", "-o", out)  # batch 1: train-mode batchnorm would fail
    assert code == 0, msg
    assert "eval mode forced" in msg
    report = json.loads((out / "report.json").read_text())
    assert any("eval mode forced" in n for n in report["notes"])
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = m.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(edgeship.load(out, variant="fp32")(x), ref, atol=1e-4, rtol=1e-3)


def test_nondeterministic_model_fails_parity_and_says_why(tmp_path, cli):
    path = _state(tmp_path, models.Noisy())
    out = tmp_path / "noisy.edgeship"
    with pytest.raises(ParityError, match=r"Likely cause: the model is nondeterministic: two identical eager calls"):
        export(ExportConfig(model=path, output=out, inputs=("x:1x4",), load=LoadOptions(arch=arch("Noisy")),
                            exporter="torchscript", torchscript=False))
    code, msg = cli("export", path, "--arch", arch("Noisy"), "--input", "x:1x4", "-o", out, "--exporter", "torchscript")
    assert code == 1 and "nondeterministic" in msg  # a failed gate, not bad input
    assert_untouched(out, {})


def test_slightly_nondeterministic_model_ships_with_the_note(tmp_path):
    path = _state(tmp_path, __import__("hostile_models").TinyNoise())
    out = tmp_path / "tiny.edgeship"
    result = export(ExportConfig(model=path, output=out, inputs=("x:1x4",), load=LoadOptions(arch=harch("TinyNoise")),
                                 exporter="torchscript", torchscript=False))
    assert result.parity.passed
    note = "model is nondeterministic: two identical eager calls gave different 'output'"
    assert any(note in n for n in result.notes)
    assert any(note in n for n in json.loads((out / "report.json").read_text())["notes"])
    assert any(note in n for n in json.loads((out / "manifest.json").read_text())["notes"])


def test_op_no_exporter_handles_is_named_with_a_hint_exit_2(tmp_path, cli):
    path = _state(tmp_path, __import__("hostile_models").Bessel())
    out = tmp_path / "bessel.edgeship"
    with pytest.raises(ExportError, match=r"unsupported op: prims\.bessel_j0, aten::special_bessel_j0.*Hint: .*replace it in the model"):
        export(ExportConfig(model=path, output=out, inputs=("x:1x4",), load=LoadOptions(arch=harch("Bessel")),
                            torchscript=False))
    code, msg = cli("export", path, "--arch", harch("Bessel"), "--input", "x:1x4", "-o", out, "--exporter", "torchscript",
                    "--no-torchscript")
    assert code == 2, msg
    assert "Exporting the operator 'aten::special_bessel_j0' to ONNX opset version 17 is not supported" in msg
    assert "try --exporter dynamo" in msg
    assert "Torch IR graph" not in msg  # torch's C++ log dump stays out of the console
    assert_untouched(out, {})


def test_int64_ids_with_open_ended_slicing_pass_at_two_sizes(tmp_path):
    m = __import__("hostile_models").TailSlice()
    path = _state(tmp_path, m)
    out = tmp_path / "slice.edgeship"
    result = export(ExportConfig(model=path, output=out, inputs=("ids:2x5:int64",), dynamic_batch=True,
                                 dynamic=("ids:1=seq",), load=LoadOptions(arch=harch("TailSlice")), torchscript=False))
    assert result.parity.passed
    sizes = {
        json.dumps(s["sizes"], sort_keys=True) for s in json.loads((out / "manifest.json").read_text())["golden"]["samples"]}
    assert len(sizes) == 2
    ids = np.random.default_rng(1).integers(0, 20, (3, 11))
    with torch.no_grad():
        ref = m.eval()(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(edgeship.load(out, variant="fp32")(ids), ref, atol=1e-4, rtol=1e-3)
    assert edgeship.check(out).passed


@pytest.mark.parametrize("fallback", [False, True])
def test_fp16_variant_that_overflows_is_caught_by_parity(tmp_path, fallback):
    import models

    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    path = tmp_path / "overflow.pt"
    torch.save(models.Fp16Overflow().state_dict(), path)
    cfg = ExportConfig(model=path, output=tmp_path / "o.edgeship", inputs=("x:4x8",), quantize=("fp16",),
                       load=LoadOptions(arch=f"{models.__file__}:Fp16Overflow"), exporter="torchscript",
                       fallback=fallback)
    r = export(cfg)
    if fallback:  # the overflowing node and its consumers stay in fp32; the rest is float16
        v = r.variants["fp16"]
        assert v.excluded_nodes[0] == "/fc1/Gemm" and "/fc0/Gemm" not in v.excluded_nodes
        y = edgeship.load(r.bundle, variant="fp16")(np.ones((4, 8), np.float32))
        assert np.isfinite(y).all()
        return
    assert set(r.variants) == {"fp32"}  # not shipped
    assert not (r.bundle / "models" / "fp16.onnx").exists()
    assert any("fp16 fails parity and is not shipped" in n and "NaN/Inf" in n for n in r.notes)
    where = json.loads((r.bundle / "report.json").read_text())["divergence"]["fp16"]
    assert where["node"] == "/fc1/Gemm" and where["op_type"] == "Gemm" and where["nonfinite"] > 0
    assert "fp16 overflow" in where["hint"] and "65504" in where["hint"]
