"""Equal unnamed dynamic axes (issue 20, item 1): tied when a stage fails in a way keeping them
apart can explain (on a sample where their sizes differ, or an exporter naming them), kept apart
when a whole run passes so; any other failure ends the export after one run."""

import models
import numpy as np
import pytest
import torch
from conftest import arch

import edgeship
from edgeship.config import ExportConfig, LoadOptions
from edgeship.pipeline import export

AXES = ("input_ids:0", "input_ids:1", "attention_mask:0", "attention_mask:1")


def _shortcut(tmp_path, exporter="auto", torchscript=False):
    path = tmp_path / "enc.pt"
    torch.save(models.trained(models.ShortcutMask()).state_dict(), path)
    example = tmp_path / "ex.npz"
    ids = np.random.default_rng(0).integers(1, 50, (2, 12)).astype(np.int64)
    np.savez(example, input_ids=ids, attention_mask=np.ones_like(ids))  # no padding: eager skips the mask
    return ExportConfig(model=path, output=tmp_path / "e.edgeship", example_inputs=example, dynamic=AXES,
                        load=LoadOptions(arch=arch("ShortcutMask")), quantize=("fp32",), torchscript=torchscript,
                        exporter=exporter)


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_axes_eager_accepts_apart_are_tied_when_the_export_fails_apart(tmp_path, exporter):
    """Eager passes with the mask's sizes apart from the ids' (it skips an all-ones mask); the
    exported graph does not. The run is retried with the equal axes tied, and the note says why."""
    r = export(_shortcut(tmp_path, exporter))
    assert [t.shape for t in r.spec.inputs] == [("batch", "seq")] * 2
    notes = [n for n in r.notes if "must be equal" in n]
    assert any(n.startswith("input_ids:0, attention_mask:0 must be equal: exported as one symbol 'batch'") for n in notes)
    assert any(n.startswith("input_ids:1, attention_mask:1 must be equal: exported as one symbol 'seq'") for n in notes)
    assert all("failed with them apart" in n for n in notes), notes
    assert r.parity.passed
    m = edgeship.load(r.bundle)
    ids = np.array([[3, 4, 5, 6, 7]] * 3)
    mask = np.ones_like(ids)
    mask[0, 3:] = 0
    eager = models.ShortcutMask()
    eager.load_state_dict(torch.load(tmp_path / "enc.pt"))
    with torch.no_grad():
        want = eager(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(m(ids, mask), want, atol=1e-5)


def test_a_failed_trace_apart_ties_them_too(tmp_path):
    """The TorchScript stage is where it first shows: the trace fails parity with the sizes apart."""
    r = export(_shortcut(tmp_path, "torchscript", torchscript=True))
    assert {s.name: s.status for s in r.stages}["torchscript"] == "ok"
    assert any("must be equal" in n and "torchscript stage" in n for n in r.notes), r.notes
    assert [t.shape for t in r.spec.inputs] == [("batch", "seq")] * 2


def test_named_symbols_are_never_tied(tmp_path):
    """Symbols the user named are the user's decision: no retry, the failure is reported."""
    from edgeship.errors import ParityError

    cfg = _shortcut(tmp_path, "torchscript")
    cfg = ExportConfig(**{**cfg.__dict__, "dynamic": ("input_ids:0=b1", "input_ids:1=s1", "attention_mask:0=b2",
                                                       "attention_mask:1=s2")})
    with pytest.raises(ParityError, match="does not follow the dynamic axis") as e:
        export(cfg)
    assert ("if those axes must be equal (an attention mask and its ids), give them one symbol: "
            "--dynamic input_ids:0=b1 --dynamic attention_mask:0=b1 --dynamic input_ids:1=s1 --dynamic attention_mask:1=s1"
            ) in str(e.value)


def _concat(tmp_path) -> ExportConfig:
    """Two inputs whose batch sizes are independent (concatenated), equal in the example: kept apart."""
    path = tmp_path / "cat.pt"
    torch.save(models.ConcatBatch().state_dict(), path)
    return ExportConfig(model=path, output=tmp_path / "c.edgeship", inputs=("a:2x6", "b:2x6"), dynamic=("a:0", "b:0"),
                        load=LoadOptions(arch=arch("ConcatBatch")), quantize=("fp32",))


def test_axes_that_pass_apart_stay_apart(tmp_path):
    """Two inputs whose batch sizes are independent (concatenated): the whole run passes with them
    apart, so nothing is tied and no second run is made."""
    stages = []
    r = export(_concat(tmp_path),
               lambda event, name, result: stages.append(name) if event == "start" else None)
    assert stages.count("load") == 1 and not any("must be equal" in n for n in r.notes)
    assert [t.shape for t in r.spec.inputs] == [("a_dim0", 6), ("b_dim0", 6)]


def test_when_tying_does_not_help_both_failures_are_said(tmp_path, monkeypatch):
    """The exported graph fails where the axes differ (an axis matter: tied once); the tied run
    then fails on its own, and the error says both."""
    from edgeship.errors import ExportError
    from edgeship.pipeline import runner

    def onnx_stage(ctx):
        if ctx.tie_reason:
            raise ExportError("the tied export broke too")
        return runner.onnx_stage(ctx)

    monkeypatch.setattr(runner, "STAGES", [(n, onnx_stage if n == "onnx" else f, m) for n, f, m in runner.STAGES])
    with pytest.raises(ExportError, match=r"does not follow the dynamic axes.* Tied to one symbol, they failed as well: "
                                          r"the tied export broke too$"):
        export(_shortcut(tmp_path, "torchscript"))
    assert not (tmp_path / "e.edgeship").exists()


def _count_loads(cfg) -> tuple[list[str], BaseException]:
    loads: list[str] = []
    with pytest.raises(Exception) as e:
        export(cfg, lambda event, name, result: loads.append(name) if event == "start" and name == "load" else None)
    return loads, e.value


def test_an_exporter_failure_unrelated_to_the_axes_runs_the_export_once(tmp_path, monkeypatch):
    """An exporter that fails whatever the axes: no second run, no word about ties."""
    from edgeship.errors import ExportError
    from edgeship.exporters import onnx as onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_export, "_run_exporter", broken)
    loads, e = _count_loads(_shortcut(tmp_path))
    assert isinstance(e, ExportError) and "exporter exploded" in str(e), e
    assert loads == ["load"] and "Tied" not in str(e) and "apart" not in str(e), (loads, e)
    assert not (tmp_path / "e.edgeship").exists()


def _failing(stage: str, error: Exception):
    def fail(ctx):
        raise error
    return fail


@pytest.mark.parametrize("stage", ["onnx", "optimize", "parity"])
@pytest.mark.parametrize("make", [
    lambda: __import__("edgeship.errors").errors.DiskFullError("no room left for the ONNX export"),
    lambda: __import__("edgeship.errors").errors.TargetUnavailableError("target cuda: no CUDAExecutionProvider"),
    lambda: __import__("edgeship.errors").errors.InferenceTimeout("did not finish within 1 s", stuck=True),
    lambda: __import__("edgeship.errors").errors.ParityError("fp32 ONNX parity failed: output 'y' on sample example: "
                                                             "max abs 1.0"),
], ids=["disk-full", "target", "timeout", "parity-at-equal-sizes"])
def test_failures_that_are_not_the_axes_doing_run_the_export_once(tmp_path, monkeypatch, stage, make):
    """A full disk, a missing target, a timeout (whose class takes other arguments), an fp32 failure
    on the example (where the axes have equal sizes): raised as they are after one run."""
    from edgeship.pipeline import runner

    error = make()
    monkeypatch.setattr(runner, "STAGES", [(n, _failing(n, error) if n == stage else f, m) for n, f, m in runner.STAGES])
    loads, e = _count_loads(_concat(tmp_path))
    assert e is error and loads == ["load"], (loads, e)
    assert "Tied" not in str(e) and "apart" not in str(e)
    assert not (tmp_path / "c.edgeship").exists()


BERT = """
import torch
from transformers import BertConfig, BertModel

def tiny_bert():
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg)
"""


@pytest.mark.slow
def test_a_hugging_face_bert_state_dict_with_one_flag_per_axis(tmp_path, monkeypatch):
    """The issue's case: transformers' BertModel skips an all-ones mask in eager mode, so eager passes
    with the mask's sizes apart from the ids'; the export does not, and the axes are tied."""
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "tinybert.py").write_text(BERT)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tinybert

    torch.manual_seed(0)
    path = tmp_path / "bert.pt"
    torch.save(tinybert.tiny_bert().state_dict(), path)
    example = tmp_path / "ex.npz"
    ids = np.random.default_rng(0).integers(1, 100, (2, 16)).astype(np.int64)
    np.savez(example, input_ids=ids, attention_mask=np.ones_like(ids))
    r = export(ExportConfig(model=path, output=tmp_path / "b.edgeship", example_inputs=example, dynamic=AXES,
                            load=LoadOptions(arch=f"{tmp_path / 'tinybert.py'}:tiny_bert"), quantize=("fp32",)))
    assert [t.shape for t in r.spec.inputs] == [("batch", "seq")] * 2 and r.parity.passed
    assert sum("must be equal" in n and "failed with them apart" in n for n in r.notes) == 2
