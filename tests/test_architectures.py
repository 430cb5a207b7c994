"""Real architectures typed as users type them (issue 11): equal dynamic axes tied, inputs bound
to forward() by name, a really static axis named. Small models of our own with the same patterns."""

import json

import models
import numpy as np
import pytest
import torch
from conftest import arch, fake_p50s

import edgeship
from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import SpecError
from edgeship.pipeline import export


def _state(model, tmp_path, name):
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_unnamed_equal_axes_are_tied_to_one_symbol(tmp_path):
    """--dynamic input_ids:1 --dynamic attention_mask:1 --dynamic token_type_ids:1, no symbol names:
    the encoder needs the three equal, so they are exported as one symbol and said so."""
    path = _state(models.trained(models.BertStyle()), tmp_path, "bert")
    names = ("input_ids", "attention_mask", "token_type_ids")
    cfg = ExportConfig(model=path, output=tmp_path / "b.edgeship", inputs=tuple(f"{n}:2x16:int64" for n in names),
                       dynamic=tuple(f"{n}:1" for n in names), load=LoadOptions(arch=arch("BertStyle")),
                       quantize=("fp32",), torchscript=False)
    r = export(cfg)
    assert any(n.startswith("input_ids:1, attention_mask:1, token_type_ids:1 must be equal: exported as one symbol 'seq' "
                            "(the eager model fails with them apart") for n in r.notes), r.notes
    assert [t.shape for t in r.spec.inputs] == [(2, "seq")] * 3
    samples = json.loads((r.bundle / "manifest.json").read_text())["golden"]["samples"]
    assert samples[-1]["sizes"] == {"seq": 8}
    assert r.parity.passed


def test_independent_axes_are_not_tied(tmp_path):
    path = _state(models.ConcatBatch(), tmp_path, "cat")
    cfg = ExportConfig(model=path, output=tmp_path / "c.edgeship", inputs=("a:2x6", "b:2x6"),
                       dynamic=("a:0", "b:0"), load=LoadOptions(arch=arch("ConcatBatch")), quantize=("fp32",),
                       torchscript=False)
    r = export(cfg)
    assert not any("must be equal" in n for n in r.notes)
    assert [t.shape for t in r.spec.inputs] == [("a_dim0", 6), ("b_dim0", 6)]
    m = edgeship.load(r.bundle)
    y = m(np.ones((3, 6), np.float32), np.ones((5, 6), np.float32))
    assert y.shape == (8, 3)


def test_an_axis_that_is_really_static_is_named(tmp_path):
    """x is reshaped to a fixed size: tying x:0 with y:0 (same size) does not help, and the
    message names x:0, the axis that cannot change, not y:0."""
    class FixedBatch(torch.nn.Module):
        def forward(self, x, y):
            return x.reshape(2, 3) * y.sum()

    path = tmp_path / "fixed.pt"
    torch.jit.save(torch.jit.script(FixedBatch()), path)
    cfg = ExportConfig(model=path, output=tmp_path / "f.edgeship", inputs=("x:2x3", "y:2x3"), dynamic=("x:0", "y:0"))
    with pytest.raises(SpecError, match=r"fails when only x:0 \(symbol 'x_dim0'\) changes size \(2 -> 4\).*drop it from --dynamic"):
        export(cfg)
    assert not (tmp_path / "f.edgeship").exists()


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_inputs_are_bound_to_forward_by_name(tmp_path, exporter):
    """forward(input_ids, past=None, attention_mask=None) with inputs input_ids, attention_mask:
    the mask goes to attention_mask, not to past, in eager, tracing and both ONNX exporters."""
    path = _state(models.PastKV(), tmp_path, "gpt")
    cfg = ExportConfig(model=path, output=tmp_path / "g.edgeship", inputs=("input_ids:2x7:int64", "attention_mask:2x7:int64"),
                       dynamic_batch=True, load=LoadOptions(arch=arch("PastKV")), quantize=("fp32",), exporter=exporter)
    r = export(cfg)
    assert any("attention_mask are passed to forward() by name" in n for n in r.notes)
    assert {s.name: s.status for s in r.stages}["torchscript"] == "ok"
    assert r.parity.passed and {c.runner for c in r.parity.checks} >= {"torchscript", "onnxruntime-cpu"}
    m = edgeship.load(r.bundle)
    assert [t.name for t in m.inputs] == ["input_ids", "attention_mask"]
    ids = np.array([[1, 2, 3, 4, 5, 6, 7]] * 3)
    mask = np.ones_like(ids)
    eager = models.PastKV()
    eager.load_state_dict(torch.load(path))
    with torch.no_grad():
        want = eager(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(m(ids, mask), want, atol=1e-5)


def test_an_input_named_after_no_parameter_is_refused(tmp_path):
    path = _state(models.PastKV(), tmp_path, "gpt")
    cfg = ExportConfig(model=path, output=tmp_path / "g.edgeship", inputs=("input_ids:2x7:int64", "mask:2x7:int64"),
                       load=LoadOptions(arch=arch("PastKV")))
    with pytest.raises(SpecError, match=r"input\(s\) mask match no parameter .* takes input_ids, past, attention_mask"):
        export(cfg)


def _program(tmp_path, dynamic: bool):
    m = models.MultiIO().eval()
    feats, ids = torch.randn(2, 6), torch.randint(0, 10, (2, 3))
    shapes = {"feats": {0: torch.export.Dim("b", min=1, max=32)}, "ids": {0: torch.export.Dim("b", min=1, max=32)}}
    ep = torch.export.export(m, (feats, ids), dynamic_shapes=shapes if dynamic else None)
    path = tmp_path / "prog.pt2"
    torch.export.save(ep, path)
    return path


def test_exported_program_keeps_its_own_dynamic_batch_without_flags(tmp_path):
    r = export(ExportConfig(model=_program(tmp_path, True), output=tmp_path / "p.edgeship", quantize=("fp32",)))
    assert [t.shape[0] for t in r.spec.inputs] == ["batch", "batch"]
    assert any("keeps its own dynamic axes feats:0=batch, ids:0=batch" in n for n in r.notes)
    samples = json.loads((r.bundle / "manifest.json").read_text())["golden"]["samples"]
    assert [s["sizes"] for s in samples][-1] == {"batch": 4}
    m = edgeship.load(r.bundle)
    out = m(np.ones((5, 6), np.float32), np.ones((5, 3), np.int64))
    assert all(o.shape[0] == 5 for o in (out if isinstance(out, tuple) else (out,)))


def test_a_flag_on_an_axis_the_program_fixed_is_refused(tmp_path):
    path = _program(tmp_path, False)
    with pytest.raises(SpecError, match=r"--dynamic-batch\): the \.pt2 itself fixed feats:0 .*dynamic axes are none"):
        export(ExportConfig(model=path, output=tmp_path / "p.edgeship", dynamic_batch=True))
    assert not (tmp_path / "p.edgeship").exists()


OUTPUT_CLASS = """
from dataclasses import dataclass
import torch

@dataclass
class Scores:
    logits: torch.Tensor
    probs: torch.Tensor

torch.export.register_dataclass(Scores, serialized_type_name="scoresmod.Scores")

class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        return Scores(y, torch.softmax(y, -1))
"""


@pytest.mark.slow
def test_a_program_returning_a_registered_dataclass_needs_import_first(tmp_path):
    import subprocess
    import sys

    (tmp_path / "scoresmod.py").write_text(OUTPUT_CLASS)
    save = ("import torch, scoresmod; ep = torch.export.export(scoresmod.Head().eval(), (torch.randn(2, 4),)); "
            "torch.export.save(ep, 'head.pt2')")
    subprocess.run([sys.executable, "-c", save], cwd=tmp_path, check=True, capture_output=True)
    cmd = [sys.executable, "-m", "edgeship", "export", "head.pt2", "-o", "head.edgeship", "--quantize", "fp32"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the program returns scoresmod.Scores" in r.stderr and "--import scoresmod" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "head.edgeship").exists()
    r = subprocess.run(cmd + ["--import", "scoresmod"], cwd=tmp_path, capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert [t.name for t in edgeship.load(tmp_path / "head.edgeship").outputs] == ["logits", "probs"]


def test_torchscript_archive_with_dict_outputs_exports(tmp_path):
    """A strict=False trace returning a dict (as of a Hugging Face model): flattened, named by key."""
    m = models.MultiIO().eval()
    path = tmp_path / "dict_ts.pt"
    torch.jit.save(torch.jit.trace(m, (torch.randn(2, 6), torch.randint(0, 10, (2, 3))), strict=False), path)
    r = export(ExportConfig(model=path, output=tmp_path / "d.edgeship", inputs=("feats:2x6", "ids:2x3:int64"),
                            dynamic_batch=True, quantize=("fp32",)))
    assert [t.name for t in r.spec.outputs] == ["logits", "hidden"]
    assert any("flattened to a tuple" in n for n in r.notes) and r.parity.passed
    out = edgeship.load(r.bundle)({"feats": np.ones((3, 6), np.float32), "ids": np.ones((3, 3), np.int64)})
    assert out["logits"].shape == (3, 3) and out["hidden"].shape == (3, 8)


def test_hints_never_loop():
    from edgeship.exporters.onnx_errors import export_hint as _hint

    text = "Exporting the operator 'prim::DictConstruct' to ONNX opset version 17 is not supported."
    hint = _hint(text, ["torchscript"], script=True)
    assert "--exporter dynamo" not in hint and "--opset" not in hint and "return tensors" in hint
    op = "Exporting the operator 'aten::fft_rfft' to ONNX opset version 17 is not supported."
    assert "--exporter dynamo" not in _hint(op, ["torchscript"], script=True)
    assert "--exporter dynamo" in _hint(op, ["torchscript"], script=False)


def test_auto_exporter_falls_back_when_the_onnx_does_not_follow_a_dynamic_axis(tmp_path, monkeypatch):
    """The dynamo exporter keeps the input axis symbolic but fixes a size inside the graph (torch 2.13
    does so for vit_b_16 at batch 1; simulated here by exporting a batch-1 trace in its place). The
    TorchScript-based exporter fixes it too (int(x.size(0)) is a constant in a trace), so the dynamo
    exporter at the second sample's sizes ships, and the note says why."""
    from edgeship.exporters import onnx as onnx_export

    real = onnx_export._run_exporter
    calls = []

    def buggy(name, model, args, spec, path, opset):
        calls.append((name, int(args[0].shape[0])))
        if name == "dynamo" and args[0].shape[0] == 1:
            return real("torchscript", model, args, spec, path, 17)  # symbolic input, size 1 fixed inside
        return real(name, model, args, spec, path, opset)

    monkeypatch.setattr(onnx_export, "_run_exporter", buggy)
    path = _state(models.SpecialisedTrace(), tmp_path, "spec")
    r = export(ExportConfig(model=path, output=tmp_path / "s.edgeship", inputs=("x:1x12",), dynamic_batch=True,
                            load=LoadOptions(arch=arch("SpecialisedTrace")), quantize=("fp32",), torchscript=False))
    assert calls == [("dynamo", 1), ("torchscript", 1), ("dynamo", 2)]
    assert any("does not follow the dynamic axes" in n and "shipped the dynamo exporter at the second sample's sizes" in n
               and "the torchscript exporter: also fails" in n for n in r.notes)
    assert {s.name: s.detail for s in r.stages}["onnx"].startswith("dynamo (second sizes) exporter")
    assert r.parity.passed
    y = edgeship.load(r.bundle)(np.ones((3, 12), np.float32))
    assert y.shape == (3, 2, 2)


def test_tiny_outputs_are_flagged_and_judged_relative_to_their_scale():
    from edgeship.bundle.golden import Sample
    from edgeship.parity.evaluate import RunResult, judge_outputs
    from edgeship.parity.tolerances import tolerance_for

    ref = {"y": np.full((2, 4), 1e-6, np.float32)}
    s = Sample("s", {}, {})
    half_wrong = RunResult("r", 0, s, {"y": ref["y"] * 1.5})
    report = judge_outputs([half_wrong], [ref], tolerance_for("fp32"))
    assert "every value is below atol=0.0001" in report.vacuous["y"]
    assert not report.passed  # atol alone (1e-4) would have passed a 50% error
    assert judge_outputs([RunResult("r", 0, s, dict(ref))], [ref], tolerance_for("fp32")).passed


def test_rows_in_another_order_are_explained():
    from edgeship.parity.evaluate import compare_outputs
    from edgeship.parity.tolerances import tolerance_for

    boxes = np.arange(12, dtype=np.float32).reshape(4, 3)
    checks = compare_outputs("r", "fp32", "s", "", {"boxes": boxes}, {"boxes": boxes[[1, 0, 2, 3]]},
                             lambda _o: tolerance_for("fp32"))
    assert not checks[0].passed and "same rows are there in another order" in checks[0].reason


def test_a_tiny_head_is_flagged_and_keeps_fp32_the_default(tmp_path, monkeypatch):
    from edgeship.parity.report import write_junit

    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 0.1 if "int8" in n else 1.0))
    path = _state(models.TinyHead(), tmp_path, "tiny")
    r = export(ExportConfig(model=path, output=tmp_path / "t.edgeship", inputs=("x:4x16",), dynamic_batch=True,
                            load=LoadOptions(arch=arch("TinyHead")), quantize=("dynamic",), torchscript=False))
    assert "output" in r.parity.vacuous and "below atol" in r.parity.vacuous["output"]
    assert r.defaults["cpu"] == "fp32"  # int8 is 10x faster here, but nothing shows it is accurate
    assert any("int8_dynamic is faster but not the default: the parity evidence is vacuous" in n for n in r.notes)
    report = json.loads((r.bundle / "report.json").read_text())
    assert any("vacuous for output 'output'" in w for w in report["parity"]["warnings"])
    checked = edgeship.check(r.bundle)
    assert "output" in checked.vacuous
    write_junit(checked, tmp_path / "j.xml")
    assert "WARNING: parity evidence is vacuous" in (tmp_path / "j.xml").read_text()


def test_an_output_empty_on_every_sample_is_flagged(tmp_path):
    path = _state(models.NoDetections(), tmp_path, "det")
    r = export(ExportConfig(model=path, output=tmp_path / "d.edgeship", inputs=("x:3x8",),
                            load=LoadOptions(arch=arch("NoDetections")), output_names=("boxes", "scores"),
                            quantize=("fp32",), torchscript=False))
    assert "empty on every golden sample" in r.parity.vacuous["boxes"]
    assert "scores" not in r.parity.vacuous


def test_dynamic_int8_on_a_conv_only_graph_says_what_would_work(tmp_path):
    class ConvOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean((2, 3))

    path = tmp_path / "conv.pt"
    torch.jit.save(torch.jit.trace(ConvOnly().eval(), torch.randn(1, 3, 8, 8)), path)
    r = export(ExportConfig(model=path, output=tmp_path / "c.edgeship", inputs=("x:1x3x8x8",), quantize=("dynamic",)))
    note = next(n for n in r.notes if n.startswith("int8_dynamic"))
    assert "does not cover" in note and "Conv node(s)" in note and "--quantize static --calibration DATA" in note
    assert "--quantize static --calibration DATA" in {s.name: s.detail for s in r.stages}["quantize"]
    assert set(r.variants) == {"fp32"}


def test_exporter_fallback_notes_explain(tmp_path, monkeypatch):
    from edgeship.exporters import onnx as onnx_export

    real = onnx_export._run_exporter

    def dynamo_breaks(name, model, args, spec, path, opset):
        if name == "dynamo":
            raise RuntimeError("An error occurred when running the '<onnx_ir.passes.PassManager object at 0x7f3a2c1d>' "
                               "pass after the following passes: []\n  File \"/home/me/model.py\", line 42, in forward\n"
                               "    y = self.head(x)\nValueError: cannot infer the shape of node 'head'")
        return real(name, model, args, spec, path, opset)

    monkeypatch.setattr(onnx_export, "_run_exporter", dynamo_breaks)
    path = _state(models.MLP(), tmp_path, "mlp")
    r = export(ExportConfig(model=path, output=tmp_path / "m.edgeship", inputs=("x:2x10",),
                            load=LoadOptions(arch=arch("MLP")), quantize=("fp32",), torchscript=False))
    note = next(n for n in r.notes if n.startswith("the dynamo exporter failed"))
    assert "model.py:42 in forward()" in note and "cannot infer the shape of node 'head'" in note
    assert note.endswith("tried the torchscript exporter next") and "0x" not in note
