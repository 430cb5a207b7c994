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
