"""What an exporter's failure says (issue 20, item 5): the real cause and where, and only fixes
that work."""

import models
import pytest
import torch
from conftest import arch

from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import ExportError
from edgeship.exporters.onnx_errors import export_hint
from edgeship.pipeline import export


def _traced_attention(tmp_path):
    m = models.trained(models.Attention())
    path = tmp_path / "attn_ts.pt"
    torch.jit.save(torch.jit.trace(m, torch.randint(0, 50, (2, 7)), check_trace=False), path)
    torch.save(m.state_dict(), tmp_path / "attn.pt")
    return path


@pytest.mark.parametrize("opset", [None, 20])
def test_a_torchscript_archive_the_exporter_cannot_type_says_the_cause_and_the_fix(tmp_path, opset):
    path = _traced_attention(tmp_path)
    cfg = ExportConfig(model=path, output=tmp_path / "a.edgeship", inputs=("ids:2x7:int64",), quantize=("fp32",),
                       torchscript=False, opset=opset)
    with pytest.raises(ExportError) as e:
        export(cfg)
    text = str(e.value)
    assert "[inside nn.MultiheadAttention 'attn'] Unsupported: ONNX export of transpose for tensor of unknown rank" in text
    assert "(type 'Tensor')" not in text and "try a higher --opset" not in text
    assert "a higher --opset fails the same way" in text and "--arch module:factory" in text
    # ... and the fix it names works
    r = export(ExportConfig(model=tmp_path / "attn.pt", output=tmp_path / "b.edgeship", inputs=("ids:2x7:int64",),
                            load=LoadOptions(arch=arch("Attention")), quantize=("fp32",), torchscript=False))
    assert r.parity.passed


def test_the_cli_says_it_without_a_traceback(tmp_path, cli):
    path = _traced_attention(tmp_path)
    code, out = cli("export", path, "--input", "ids:2x7:int64", "-o", tmp_path / "c.edgeship", "--quantize", "fp32")
    assert code == 2 and "Traceback" not in out and "tensor of unknown rank" in out


def test_opset_is_suggested_only_where_a_higher_one_translates_the_op():
    text = "Exporting the operator '{}' to ONNX opset version 17 is not supported."
    assert "try --opset 18" in export_hint(text.format("aten::col2im"), ["torchscript"])  # translated from opset 18 on
    nowhere = export_hint(text.format("aten::is_autocast_enabled"), ["torchscript"], script=True)
    assert "--opset" not in nowhere and "in any opset" in nowhere and "--arch module:factory" in nowhere


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_defaulted_forward_parameters_are_bound_not_made_graph_inputs(tmp_path, exporter):
    """forward(input_ids, logits_to_keep=0) given input_ids only: the parameter keeps its default in
    every exporter; the graph takes input_ids alone and the int8 variant and its fallback run."""
    import edgeship

    path = tmp_path / "keep.pt"
    torch.save(models.trained(models.KeepLast()).state_dict(), path)
    r = export(ExportConfig(model=path, output=tmp_path / "k.edgeship", inputs=("input_ids:2x8:int64",),
                            dynamic_batch=True, load=LoadOptions(arch=arch("KeepLast")), quantize=("dynamic",),
                            tolerances={"int8": {"min_cosine": 0.99999999}}, exporter=exporter))
    assert r.spec.input_names == ["input_ids"] and r.parity.passed
    m = edgeship.load(r.bundle, variant="fp32")
    assert [t.name for t in m.inputs] == ["input_ids"]
    assert m(torch.randint(0, 50, (3, 8)).numpy()).shape == (3, 8, 32)


def test_a_graph_input_the_spec_does_not_have_is_an_export_error(tmp_path):
    """Whatever exporter adds an input (a defaulted parameter made a tensor), it is refused at the
    ONNX check, with a message, never an onnxruntime error deep in a later stage."""
    from edgeship.exporters.onnx import export_onnx
    from edgeship.spec import IOSpec, TensorSpec

    class Two(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    spec = IOSpec((TensorSpec("x", "float32", (2, 3)),), (TensorSpec("output", "float32", (2, 3)),))
    args = (torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ExportError, match=r"has input\(s\) the spec does not: .*forward\(\) parameter with a default"):
        export_onnx(Two(), args, spec, tmp_path / "t.onnx", exporter="torchscript")


def test_onnxruntime_refusing_a_variant_in_the_fallback_drops_the_variant(tmp_path, monkeypatch):
    """An onnxruntime error inside the int8 fallback (here: a run without a feed it requires) drops
    that variant with a note; the export goes on with fp32 and never ends in a traceback."""
    import onnxruntime

    from edgeship.parity import localize

    def refuse(model_path, feeds, workdir):
        return onnxruntime.InferenceSession(str(model_path)).run(None, {})

    monkeypatch.setattr(localize, "_activations", refuse)
    path = tmp_path / "mlp.pt"
    torch.save(models.trained(models.MLP()).state_dict(), path)
    r = export(ExportConfig(model=path, output=tmp_path / "m.edgeship", inputs=("x:2x10",), load=LoadOptions(arch=arch("MLP")),
                            quantize=("dynamic",), torchscript=False, tolerances={"int8": {"min_cosine": 0.99999999}}))
    assert set(r.variants) == {"fp32"}
    assert any(n.startswith("int8_dynamic not built: onnxruntime failed on it:") and "missing from input feed" in n
               for n in r.notes), r.notes
