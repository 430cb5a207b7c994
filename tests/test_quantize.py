"""Quantization: variants built by onnxruntime, proven by parity, selected by measured speed."""

import json

import models
import numpy as np
import onnx
import pytest
import torch
from conftest import arch, fake_p50s

import edgeship
from edgeship.bundle.golden import Sample
from edgeship.config import ExportConfig, LoadOptions
from edgeship.errors import SpecError
from edgeship.exporters.quantize import count_quantized
from edgeship.pipeline import export
from edgeship.pipeline.context import Context


def _save(model, tmp_path, name="m.pt"):
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return path


def _cfg(tmp_path, path, cls, inputs, **kw):
    return ExportConfig(model=path, output=tmp_path / "q.edgeship", inputs=inputs, load=LoadOptions(arch=arch(cls)),
                        exporter="torchscript", torchscript=False, **kw)


def test_dynamic_int8_is_per_channel_and_passes(tmp_path):
    path = _save(models.trained(models.BertStyle()), tmp_path)
    names = ("input_ids", "attention_mask", "token_type_ids")
    r = export(_cfg(tmp_path, path, "BertStyle", tuple(f"{n}:2x8:int64" for n in names), quantize=("dynamic",)))
    why = (r.bundle / "report.json").read_text()  # notes and rejected say why, should it ever be missing
    assert "int8_dynamic" in r.variants and r.variants["int8_dynamic"].passed["cpu"], why
    model = onnx.load(str(r.bundle / "models" / "int8_dynamic.onnx"))
    assert count_quantized(r.bundle / "models" / "int8_dynamic.onnx") > 0
    scales = [i for i in model.graph.initializer if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] > 1]
    assert scales, "expected per-channel weight scales"
    assert r.variants["int8_dynamic"].size < r.variants["fp32"].size


def test_static_int8_with_calibration_npz(tmp_path):
    path = _save(models.trained(models.ResNetish()), tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 3, 16, 16)).astype(np.float32))
    r = export(_cfg(tmp_path, path, "ResNetish", ("x:1x3x16x16",), quantize=("static",),
                    calibration=str(tmp_path / "calib.npz"), calibration_method="percentile"))
    assert "int8_static" in r.variants
    report = json.loads((r.bundle / "report.json").read_text())
    assert report["calibration"] == {"source": str(tmp_path / "calib.npz"), "samples": 8, "synthetic": False}
    ops = {n.op_type for n in onnx.load(str(r.bundle / "models" / "int8_static.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    m = edgeship.load(r.bundle, variant="int8_static")
    assert m(rng.standard_normal((1, 3, 16, 16)).astype(np.float32)).shape == (1, 10)


def test_static_without_calibration_warns_loudly(tmp_path, cli):
    path = _save(models.trained(models.MLP()), tmp_path)
    code, out = cli("export", path, "--arch", arch("MLP"), "--input", "x:4x10", "--quantize", "static",
                    "-o", tmp_path / "s.edgeship", "--exporter", "torchscript")
    assert code == 0, out
    assert "synthetic random inputs" in out and "NOT measured on real data" in out
    assert out.count("synthetic random inputs") == 1, out  # said once, as a note
    report = json.loads((tmp_path / "s.edgeship" / "report.json").read_text())
    assert report["calibration"]["synthetic"] is True and "NOT measured" in report["calibration"]["warning"]


def test_auto_builds_dynamic_but_not_uncalibrated_static(files, tmp_path):
    r = export(_cfg(tmp_path, files["dir"] / "mlp_state.pt", "MLP", ("x:1x10",)))
    assert set(r.variants) == {"fp32", "int8_dynamic"}


def test_fp16_keeps_fp32_io_and_passes(tmp_path):
    path = _save(models.trained(models.MobileNetish()), tmp_path)
    r = export(_cfg(tmp_path, path, "MobileNetish", ("x:1x3x16x16",), quantize=("fp16",)))
    assert r.variants["fp16"].passed["cpu"]
    m = edgeship.load(r.bundle, variant="fp16")
    assert m.inputs[0].dtype == "float32"
    assert m(np.ones((1, 3, 16, 16), np.float32)).dtype == np.float32


def test_fallback_keeps_harmful_nodes_in_fp32_and_reports_them(tmp_path):
    path = _save(models.OutlierChannel(), tmp_path)
    r = export(_cfg(tmp_path, path, "OutlierChannel", ("x:8x16",), quantize=("static",)))
    v = r.variants["int8_static"]
    assert v.passed["cpu"]
    assert v.excluded_nodes
    assert v.error_before_fallback["min_top1"] < 0.99 <= v.error_after_fallback["min_top1"]
    assert count_quantized(r.bundle / "models" / "int8_static.onnx") > 0  # still an int8 model
    manifest = json.loads((r.bundle / "manifest.json").read_text())
    assert manifest["variants"]["int8_static"]["excluded_nodes"] == list(v.excluded_nodes)


@pytest.mark.parametrize("candidates, sizes", [(1, [1, 2, 4, 8, 16]), (20, [1, 2, 4, 8, 16]), (21, [2, 4, 8, 16, 32]),
                                               (40, [2, 4, 8, 16, 32]), (60, [3, 6, 12, 24, 48]),
                                               (1000, [50, 100, 200, 400, 800])])
def test_fallback_sizes_start_at_5_percent_and_double(candidates, sizes):
    from edgeship.pipeline.quantize import MAX_ROUNDS, fallback_sizes

    assert MAX_ROUNDS == 5 and fallback_sizes(candidates) == sizes  # 5% rounded up, at least one node
    assert fallback_sizes(candidates, rounds=2) == sizes[:2]


class _FailingReport:
    """A parity report that never passes but improves on every check (so no round stops as stale)."""

    passed = False

    def __init__(self, cosine):
        self.cosine = cosine

    def summary(self):
        return [{"cosine": self.cosine, "max_abs": 1.0}]

    def failures(self):
        return []


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_fallback_rounds_follow_the_schedule(tmp_path, monkeypatch, kind):
    from edgeship.exporters import quantize as q
    from edgeship.parity import localize
    from edgeship.pipeline import quantize as stage

    nodes = [f"n{i}" for i in range(40)]  # 40 candidates: 2 first (5%), then 4, 8, 16, and the 10 left
    asked, built, checks = [], [], iter(range(1, 100))

    class Graph:  # stands in for the fp32 graph run on the samples; every node does some harm
        def __init__(self, path, feeds):
            self.graph = None

        def producers(self):
            return {}

        def node_errors(self, out):
            return []

        def qdq_harm(self, out):
            return {(n,): 1.0 - i / 100 for i, n in enumerate(nodes)}

    def harmful(errors, candidates, k, producers=None):
        asked.append(k)
        return sorted(candidates, key=nodes.index)[:k]

    monkeypatch.setattr(stage, "ReferenceGraph", Graph)
    monkeypatch.setattr(stage, "_check", lambda ctx, out, name, precision: _FailingReport(0.9 + next(checks) / 1000))
    monkeypatch.setattr(q, "quantizable_nodes", lambda path, kind, graph=None: set(nodes))
    monkeypatch.setattr(q, "count_quantized", lambda path: 1)
    monkeypatch.setattr(localize, "harmful_nodes", harmful)
    # tune=False: the variants on onnxruntime's defaults only (the stand-in runners open no file)
    ctx = Context(_cfg(tmp_path, tmp_path / "m.pt", "MLP", ("x:1x10",), tune=False), tmp_path,
                  samples=[Sample("0", {"x": np.zeros((1, 10), np.float32)}, {})])
    report, excluded = stage._fallback(ctx, "int8", kind, "int8", tmp_path / "ref.onnx", tmp_path / "out.onnx",
                                       lambda exclude: built.append(list(exclude)), _FailingReport(0.9))
    if kind == "dynamic":
        assert asked == [2, 4, 8, 16, 32]
    assert [len(b) for b in built] == [2, 6, 14, 30, 40]  # kept in fp32 in all after each round
    assert excluded == built[-1] == nodes and not report.passed


def test_without_fallback_a_failing_variant_is_not_shipped(tmp_path, monkeypatch):

    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 0.001 if "int8" in n else 1.0))
    path = _save(models.OutlierChannel(), tmp_path)
    r = export(_cfg(tmp_path, path, "OutlierChannel", ("x:8x16",), quantize=("static",), fallback=False))
    assert set(r.variants) == {"fp32"} and r.defaults == {"cpu": "fp32"}
    assert any("int8_static fails parity and is not shipped" in n for n in r.notes)
    assert not (r.bundle / "models" / "int8_static.onnx").exists()


def test_a_variant_that_is_not_shipped_is_a_warning_line_never_a_tick(tmp_path, monkeypatch):
    path = _save(models.OutlierChannel(), tmp_path)
    r = export(_cfg(tmp_path, path, "OutlierChannel", ("x:8x16",), quantize=("static",), fallback=False))
    stage = next(s for s in r.stages if s.name == "quantize")
    assert stage.status == "warning", stage
    assert "int8_static NOT shipped" in stage.detail


def test_dynamo_export_with_dynamic_batch_builds_dynamic_int8(tmp_path):
    """The README demo's path (dynamo exporter, Gemm, dynamic batch): onnxruntime 1.23 fails it with
    a ShapeInferenceError unless the weights' value_info entries are dropped first."""
    torch.manual_seed(0)
    path = _save(models.trained(models.MLP()), tmp_path)
    r = export(ExportConfig(model=path, output=tmp_path / "d.edgeship", inputs=("x:1x10",), dynamic_batch=True,
                            load=LoadOptions(arch=arch("MLP")), exporter="dynamo", torchscript=False, quantize=("dynamic",)))
    stage = next(s for s in r.stages if s.name == "quantize")
    assert "quantization failed" not in stage.detail, stage
    assert not any("not built" in n for n in r.notes), r.notes


@pytest.mark.parametrize("int8_ms, default", [(0.5, "int8_dynamic"), (3.0, "fp32"), (0.98, "fp32")])
def test_default_is_the_fastest_passing_variant(files, tmp_path, monkeypatch, int8_ms, default):

    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: int8_ms if "int8" in n else 1.0))
    r = export(_cfg(tmp_path, files["dir"] / "mlp_state.pt", "MLP", ("x:1x10",)))
    assert r.defaults["cpu"] == default
    manifest = json.loads((r.bundle / "manifest.json").read_text())
    assert manifest["defaults"] == {"cpu": default}
    if default == "fp32":
        assert any("fp32 (1 ms) is the default" in n for n in r.notes)
    assert edgeship.load(r.bundle).variant == default


class _TimedRunner:
    """Stands in for OrtRunner in the select stage: records the target it was opened for."""

    def __init__(self, spec, file, target="cpu"):
        self.file, self.target = file, target

    def load(self):
        return self

    def close(self):
        pass


@pytest.mark.parametrize("dynamic_ms, cpu_default", [(0.5, "int8_dynamic"), (0.95, "int8_dynamic"), (0.96, "fp32"),
                                                     (2.0, "fp32")])
def test_select_picks_the_fastest_variant_that_passes_on_each_target(tmp_path, monkeypatch, dynamic_ms, cpu_default):
    from edgeship.pipeline import select as stages
    from edgeship.pipeline.context import Variant
    from edgeship.profiling.interleave import Timings
    from edgeship.spec import IOSpec, TensorSpec

    p50 = {"fp32": 1.0, "int8_static": 0.1, "int8_dynamic": dynamic_ms, "fp16": 3.0}  # int8_static fails on cpu
    timed = []

    def quick_p50s(runners, feeds, **kw):
        (target,) = {r.target for r in runners.values()}
        timed.append((target, sorted(runners)))
        return Timings({n: (p50[n],) for n in runners})

    monkeypatch.setattr(stages, "OrtRunner", _TimedRunner)
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", quick_p50s)
    # tune=False: the variants on onnxruntime's defaults only (the stand-in runners open no file)
    ctx = Context(_cfg(tmp_path, tmp_path / "m.pt", "MLP", ("x:1x10",), tune=False), tmp_path,
                  spec=IOSpec((TensorSpec("x", "float32", (1, 10)),), (TensorSpec("y", "float32", (1, 4)),)),
                  samples=[Sample("0", {"x": np.zeros((1, 10), np.float32)}, {})], targets=["cpu", "cuda"])
    passed = {"fp32": {"cpu": True, "cuda": True}, "int8_static": {"cpu": False, "cuda": True},
              "int8_dynamic": {"cpu": True, "cuda": False}, "fp16": {"cpu": True, "cuda": True}}
    ctx.variants = {n: Variant(n, tmp_path / f"{n}.onnx", n[:4], passed=passed[n]) for n in passed}
    stages.select_stage(ctx)
    assert timed == [("cpu", ["fp16", "fp32", "int8_dynamic"]), ("cuda", ["fp16", "fp32", "int8_static"])]  # what passes there
    # a quantized variant must be at least 5% faster than fp32 (0.95 × 1.05 < 1 < 0.96 × 1.05)
    assert ctx.defaults == {"cpu": cpu_default, "cuda": "int8_static"}
    assert ctx.latency == {("fp32", "cpu"): 1.0, ("int8_dynamic", "cpu"): dynamic_ms, ("fp16", "cpu"): 3.0,
                           ("fp32", "cuda"): 1.0, ("int8_static", "cuda"): 0.1, ("fp16", "cuda"): 3.0}
    assert any(n.startswith("cpu: fp32 (1 ms) is the default") for n in ctx.notes) == (cpu_default == "fp32")


@pytest.mark.parametrize("make, match", [
    (lambda d: np.savez(d / "c.npz", y=np.zeros((4, 1, 10), np.float32)), r"has arrays \['y'\], but the model's inputs are \['x'\]"),
    (lambda d: np.savez(d / "c.npz", x=np.zeros((4, 1, 7), np.float32)), r"input 'x' expects shape \[4, 10\], got \[1, 7\]"),
    (lambda d: np.savez(d / "c.npz", x=np.zeros((4, 1, 10), np.int64)), r"input 'x' expects dtype float32, got int64"),
    (lambda d: (d / "c").mkdir(), "empty folder"),
])
def test_bad_calibration_data_stops_with_nothing_written(files, tmp_path, make, match):
    make(tmp_path)
    src = tmp_path / ("c" if (tmp_path / "c").is_dir() else "c.npz")
    cfg = _cfg(tmp_path, files["dir"] / "mlp_state.pt", "MLP", ("x:4x10",), quantize=("static",), calibration=str(src))
    with pytest.raises(SpecError, match=match):
        export(cfg)
    assert not (tmp_path / "q.edgeship").exists()


def test_calibration_from_a_function(files, tmp_path):
    (tmp_path / "calib_src.py").write_text(
        "import numpy as np\n"
        "def feeds():\n"
        "    rng = np.random.default_rng(0)\n"
        "    for _ in range(5):\n"
        "        yield {'x': rng.standard_normal((4, 10)).astype(np.float32)}\n")
    cfg = _cfg(tmp_path, files["dir"] / "mlp_state.pt", "MLP", ("x:4x10",), quantize=("static",),
               calibration=f"{tmp_path / 'calib_src.py'}:feeds")
    r = export(cfg)
    assert json.loads((r.bundle / "report.json").read_text())["calibration"]["samples"] == 5


def test_unknown_quantize_value(files, tmp_path):
    with pytest.raises(SpecError, match="unknown --quantize 'int2'"):
        export(_cfg(tmp_path, files["dir"] / "mlp_state.pt", "MLP", ("x:1x10",), quantize=("int2",)))


def test_quantize_command_on_an_onnx_file(files, tmp_path, cli):
    out = tmp_path / "mlp.int8.onnx"
    code, text = cli("quantize", files["dir"] / "mlp.onnx", "--method", "dynamic", "-o", out)
    assert code == 0, text
    assert count_quantized(out) > 0 and f"wrote {out.resolve()}" in text
    # its own wording: judged against the fp32 ONNX, no temporary bundle path, no select/default talk
    assert "Parity vs fp32 ONNX" in text and "eager" not in text
    assert "edgeship-quantize-" not in text and "★" not in text and "is the default" not in text
    code, text = cli("quantize", files["dir"] / "mlp.onnx", "--method", "int3")
    assert code == 2 and "use dynamic, static, fp16 or int4" in text


def test_badly_calibrated_layer_is_localised(files, tmp_path):
    """Calibrated on inputs 100x smaller than real ones: the first quantized node saturates."""
    np.savez(tmp_path / "tiny.npz", x=np.random.default_rng(0).standard_normal((16, 4, 10)).astype(np.float32) * 0.01)
    cfg = _cfg(tmp_path, files["dir"] / "mlp_state.pt", "MLP", ("x:4x10",), quantize=("static",),
               calibration=str(tmp_path / "tiny.npz"), fallback=False)
    r = export(cfg)
    assert "int8_static" not in r.variants
    where = json.loads((r.bundle / "report.json").read_text())["divergence"]["int8_static"]
    assert where["node"] == "/net/net.0/Gemm" and where["op_type"] == "Gemm+Relu"  # the quantizer fused them
    assert where["cosine"] < 0.99 and "calibrat" in where["hint"]
    assert any("first divergent node /net/net.0/Gemm (Gemm+Relu)" in n for n in r.notes)
