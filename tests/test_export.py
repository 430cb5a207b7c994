"""End-to-end export: formats, multi-input/int64, dynamic axes, failures that write nothing."""

import json

import models
import numpy as np
import pytest
import torch
from conftest import arch

import edgeship
from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import ParityError, SpecError
from edgeship.pipeline import export


def _stages(result):
    return {s.name: s.status for s in result.stages}


def _max_abs(result, variant="fp32"):
    return max(r["max_abs"] for r in result.parity.summary() if r["variant"] == variant)


@pytest.mark.parametrize("name, opts", [
    ("mlp_ts.pt", LoadOptions()),
    ("mlp_ep.pt2", LoadOptions()),
    ("mlp_state.pt", LoadOptions(arch=arch("MLP"))),
    ("mlp_pickled.pt", LoadOptions(trust_pickle=True, imports=("models",))),
    ("mlp.onnx", LoadOptions()),
])
def test_every_format_exports_with_dynamic_batch(files, tmp_path, name, opts):
    cfg = ExportConfig(model=files["dir"] / name, output=tmp_path / "b.edgeship", inputs=("x:1x10",),
                       dynamic_batch=name != "mlp.onnx", load=opts, exporter="auto")
    result = export(cfg)
    assert result.parity.passed
    assert _max_abs(result) <= 1e-4
    assert result.spec.inputs[0].shape == ("batch", 10)
    m = edgeship.load(result.bundle, variant="fp32")  # the default may be int8
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 10)).astype(np.float32)
        with torch.no_grad():
            ref = files["module"](torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(m(x), ref, atol=1e-4, rtol=1e-3)


def test_dynamo_is_tried_first_and_recorded(files, tmp_path):
    cfg = ExportConfig(model=files["dir"] / "mlp_state.pt", output=tmp_path / "b.edgeship", inputs=("x:1x10",),
                       dynamic_batch=True, load=LoadOptions(arch=arch("MLP")))
    result = export(cfg)
    report = json.loads((result.bundle / "report.json").read_text())
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["source"]["exporter"] == "dynamo" and manifest["source"]["opset"] == 20
    assert [s["name"] for s in report["stages"]] == ["load", "torchscript", "onnx", "optimize", "quantize", "parity", "select"]
    assert all(s["seconds"] >= 0 for s in report["stages"])


def test_multi_input_int64_dict_outputs(tmp_path):
    m = models.trained(models.MultiIO())
    path = tmp_path / "multi.pt"
    torch.save(m.state_dict(), path)
    cfg = ExportConfig(model=path, output=tmp_path / "multi.edgeship", inputs=("feats:2x6", "ids:2x5:int64"),
                       dynamic_batch=True, dynamic=("ids:1=seq",), load=LoadOptions(arch=arch("MultiIO")),
                       exporter="torchscript")
    result = export(cfg)
    assert result.spec.output_names == ["logits", "hidden"]
    assert result.spec.inputs[1].shape == ("batch", "seq") and result.spec.inputs[1].dtype == "int64"
    assert _max_abs(result) <= 1e-4
    b = edgeship.load(result.bundle, variant="fp32")
    feats, ids = np.ones((3, 6), np.float32), np.ones((3, 9), np.int64)
    out = b({"feats": feats, "ids": ids})
    with torch.no_grad():
        ref = m(torch.from_numpy(feats), torch.from_numpy(ids))
    np.testing.assert_allclose(out["logits"], ref["logits"].numpy(), atol=1e-4, rtol=1e-3)
    logits, hidden = b(feats, ids)
    assert hidden.shape == (3, 8)


@pytest.mark.slow
def test_bert_style_encoder_three_int64_inputs_dynamic_batch_and_sequence(tmp_path):
    m = models.trained(models.BertStyle())
    path = tmp_path / "bert.pt"
    torch.save(m.state_dict(), path)
    names = ("input_ids", "attention_mask", "token_type_ids")
    ids = np.random.default_rng(0).integers(0, 100, (2, 16))
    mask = np.ones((2, 16), np.int64)
    mask[1, 12:] = 0
    example = tmp_path / "example.npz"
    np.savez(example, input_ids=ids, attention_mask=mask, token_type_ids=np.zeros((2, 16), np.int64))
    cfg = ExportConfig(model=path, output=tmp_path / "bert.edgeship", example_inputs=example,
                       dynamic_batch=True, dynamic=tuple(f"{n}:1=seq" for n in names),
                       output_names=("last_hidden_state", "pooler_output"), load=LoadOptions(arch=arch("BertStyle")))
    result = export(cfg)
    assert [t.dtype for t in result.spec.inputs] == ["int64"] * 3
    assert result.spec.outputs[0].shape == ("batch", "seq", 32)
    assert _max_abs(result) <= 1e-4
    sizes = {tuple(s["sizes"].items()) for s in json.loads((result.bundle / "manifest.json").read_text())["golden"]["samples"]}
    assert len(sizes) == 2  # each dynamic axis at two sizes


def test_specialised_trace_fails_parity_naming_axis_and_size(tmp_path):
    """int(x.size(0)) is a constant in a trace: with the TorchScript-based exporter forced, the
    bundle must not ship. (With --exporter auto the dynamo exporter follows the axis.)"""
    m = models.trained(models.SpecialisedTrace())
    path = tmp_path / "spec.pt"
    torch.save(m.state_dict(), path)
    out = tmp_path / "spec.edgeship"
    with pytest.raises(ParityError, match=r"x:0 \(batch=2, exported at 1\).*specialised"):
        export(ExportConfig(model=path, output=out, inputs=("x:1x12",), dynamic_batch=True, exporter="torchscript",
                            load=LoadOptions(arch=arch("SpecialisedTrace"))))
    assert not out.exists()
    assert not list(tmp_path.glob(".spec.edgeship.tmp-*"))


def test_nondeterministic_model_is_reported(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "noisy.pt"
    torch.save(models.Noisy().state_dict(), path)
    with pytest.raises(ParityError, match=r"fp32 ONNX parity failed: .* Likely cause: the model is nondeterministic: "
                                          r"two identical eager calls gave different 'output' \(dropout or random ops "
                                          r"left on\?\).* Nothing was written") as e:
        export(ExportConfig(model=path, output=tmp_path / "n.edgeship", inputs=("x:1x4",),
                            load=LoadOptions(arch=arch("Noisy")), exporter="torchscript"))
    assert e.value.report is not None and not e.value.report.passed  # for --json/--junit
    assert not (tmp_path / "n.edgeship").exists()


def test_missing_input_spec_shows_the_syntax(files, tmp_path):
    with pytest.raises(SpecError, match=r"--input NAME:SHAPE\[:DTYPE\].*forward takes: x"):
        export(ExportConfig(model=files["dir"] / "mlp_state.pt", output=tmp_path / "b.edgeship",
                            load=LoadOptions(arch=arch("MLP"))))
    assert not (tmp_path / "b.edgeship").exists()


def test_wrong_input_shape_is_a_spec_error(files, tmp_path):
    with pytest.raises(SpecError, match=r"golden sample .* failed.*Check --input"):
        export(ExportConfig(model=files["dir"] / "mlp_state.pt", output=tmp_path / "b.edgeship",
                            inputs=("x:1x7",), load=LoadOptions(arch=arch("MLP"))))


def test_zip_bundle_and_replacing_an_old_bundle(files, tmp_path):
    cfg = ExportConfig(model=files["dir"] / "mlp_ts.pt", output=tmp_path / "m.edgeship.zip", inputs=("x:1x10",),
                       exporter="torchscript")
    export(cfg)
    first = (tmp_path / "m.edgeship.zip").read_bytes()
    export(cfg)  # replaced atomically
    assert edgeship.load(tmp_path / "m.edgeship.zip")(files["x"][:1]).shape == (1, 4)
    assert len(first) > 0 and not list(tmp_path.glob(".m.edgeship.zip.tmp-*"))


def test_output_path_that_is_not_a_bundle_is_not_replaced(files, tmp_path):
    from edgeship.errors import BundleError

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(BundleError, match="not an edgeship bundle"):
        export(ExportConfig(model=files["dir"] / "mlp_ts.pt", output=precious, inputs=("x:1x10",),
                            exporter="torchscript"))
    assert (precious / "thesis.txt").read_text() == "do not delete"


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [True, False])
def test_bert_style_from_input_specs(tmp_path, dynamic):
    """--input sizes are the example's sizes on dynamic axes; static shapes export too."""
    m = models.trained(models.BertStyle())
    path = tmp_path / "bert.pt"
    torch.save(m.state_dict(), path)
    names = ("input_ids", "attention_mask", "token_type_ids")
    dyn = dict(dynamic_batch=True, dynamic=tuple(f"{n}:1=seq" for n in names)) if dynamic else {}
    cfg = ExportConfig(model=path, output=tmp_path / "bert.edgeship", inputs=tuple(f"{n}:2x16:int64" for n in names),
                       load=LoadOptions(arch=arch("BertStyle")), **dyn)
    result = export(cfg)
    assert _max_abs(result) <= 1e-4
    samples = json.loads((result.bundle / "manifest.json").read_text())["golden"]["samples"]
    if dynamic:
        assert result.spec.outputs[0].shape == ("batch", "seq", 32)
        assert [s["sizes"] for s in samples][0] == {"batch": 2, "seq": 16}
        assert samples[-1]["sizes"] == {"batch": 4, "seq": 8}
    else:
        assert result.spec.outputs[0].shape == (2, 16, 32)
