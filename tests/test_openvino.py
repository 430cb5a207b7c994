"""OpenVINO as a candidate runtime (the optional extra): skipped cleanly where openvino is absent."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeship
from edgeship.bundle.golden import read_bundle_npz
from edgeship.bundle.read import open_bundle
from edgeship.errors import SpecError, UnsafeModelError
from edgeship.parity.evaluate import run_parity
from edgeship.parity.tolerances import tolerance_for
from edgeship.pipeline.select import candidate_configs
from edgeship.runtimes import openvino as ov_runtime
from edgeship.spec import IOSpec

pytest.importorskip("openvino")


def _golden(bundle):
    b = open_bundle(bundle)
    spec = IOSpec.from_dict(b.manifest["io"])
    ins, outs = read_bundle_npz(b, "golden/inputs.npz"), read_bundle_npz(b, "golden/outputs.npz")
    return b, spec, ins, outs


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_runs_the_verified_bytes_within_the_precision_tolerance(mlp_bundle, precision):
    from edgeship.bundle.golden import Sample

    if precision == "bf16" and not ov_runtime.has_bf16():
        pytest.skip("no native bf16 on this CPU")
    b, spec, ins, outs = _golden(mlp_bundle)
    runner = ov_runtime.OpenVINORunner(spec, b.read("models/fp32.onnx"), precision=precision)
    samples = [Sample(str(i), f, {}) for i, f in enumerate(ins)]
    with runner:
        report = run_parity([runner], samples, outs, tolerance_for(precision), "fp32")
        assert runner.io_problems() == []
    assert report.passed, report.failures()


def test_openvino_reads_the_callers_input_in_place_and_never_writes_to_it():
    """Inputs are shared with OpenVINO (no copy), as onnxruntime shares them: a graph whose first
    node could work in place on its input (Relu, then Add) must leave the caller's array as it was,
    and arrays OpenVINO cannot share (a strided view, a read-only array) still give the right result."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "one"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    spec = IOSpec.from_dict({"inputs": [{"name": "x", "dtype": "float32", "shape": [2, 8]}],
                             "outputs": [{"name": "y", "dtype": "float32", "shape": [2, 8]}]})
    x = np.linspace(-4, 4, 16, dtype=np.float32).reshape(2, 8)
    before = x.copy()
    with ov_runtime.OpenVINORunner(spec, model.SerializeToString(), precision="fp32") as runner:
        (y,) = runner.run(None, {"x": x})
        np.testing.assert_array_equal(x, before)
        np.testing.assert_allclose(y, np.maximum(before, 0) + 1)
        wide = np.zeros((2, 16), np.float32)
        wide[:, ::2] = x
        frozen = x.copy()
        frozen.flags.writeable = False
        for a in (wide[:, ::2], frozen):
            np.testing.assert_allclose(runner.run(None, {"x": a})[0], np.maximum(before, 0) + 1)
        np.testing.assert_array_equal(wide[:, ::2], before)
    assert onnx.checker.check_model(model) is None


def test_load_pins_openvino_and_the_default_still_loads_on_onnxruntime(mlp_bundle):
    _, _, ins, outs = _golden(mlp_bundle)
    m = edgeship.load(mlp_bundle, runtime="openvino")
    assert m.runtime == "openvino" and m.providers == ["OpenVINO:CPU"] and m.session is not None
    y = m(ins[0]["x"])
    assert y.shape == outs[0]["output"].shape and np.allclose(y, outs[0]["output"], atol=1e-2)
    assert m.run({"x": ins[0]["x"]}).keys() == {"output"}
    kept = y.copy()
    m(ins[0]["x"] + 1)  # the next call reuses OpenVINO's buffers: what it returned before is the caller's own
    np.testing.assert_array_equal(y, kept)
    pinned = edgeship.load(mlp_bundle, runtime="ov", variant="fp32")
    assert pinned.candidate is None or pinned.candidate.precision == "fp32"  # a pinned variant runs at its precision
    with pytest.raises(SpecError, match="onnxruntime's"):
        edgeship.load(mlp_bundle, runtime="openvino", inter_op_threads=2)


def test_the_export_offers_openvino_candidates():
    ids = [c.id for c in candidate_configs({"fp32": "fp32", "int8_static": "int8", "int8_dynamic": "int8"}, "cpu", cores=2)]
    assert "fp32@openvino" in ids and "int8_static@openvino" in ids and "int8_dynamic@openvino" not in ids
    assert ("fp32@openvino-bf16" in ids) == ov_runtime.has_bf16()
    assert not any("openvino" in i for i in [c.id for c in candidate_configs({"fp32": "fp32"}, "cuda")])


def test_openvino_refuses_external_data_and_paths(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    t = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../../etc/passwd"
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [t])
    data = helper.make_model(g).SerializeToString()
    spec = IOSpec.from_dict({"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}],
                             "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 4]}]})
    with pytest.raises(UnsafeModelError, match="external data"):
        ov_runtime.OpenVINORunner(spec, data).load()
    with pytest.raises(TypeError, match="verified bytes"):
        ov_runtime.OpenVINORunner(spec, str(tmp_path / "m.onnx"))  # type: ignore[arg-type]


def test_openvino_options_are_checked():
    with pytest.raises(SpecError, match="unknown OpenVINO option"):
        ov_runtime.check_options({"PERFORMANCE_HINT": "THROUGHPUT"})
    with pytest.raises(SpecError, match="precision 'fp16'"):
        ov_runtime.OpenVINORunner(IOSpec((), ()), b"", precision="fp16")


def test_the_tuned_default_may_be_openvino_and_loads_without_it(bundle_copy, monkeypatch):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["candidates"]["cpu"].insert(0, {"id": "fp32@openvino", "runtime": "openvino", "variant": "fp32", "precision": "fp32"})
    m["candidates"]["cpu"] = [c for i, c in enumerate(m["candidates"]["cpu"]) if i == 0 or c["id"] != "fp32@openvino"]
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    assert edgeship.load(bundle_copy).runtime == "openvino"
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: r == "onnxruntime")
    assert edgeship.load(bundle_copy).runtime == "onnxruntime"


def test_profile_and_check_take_the_openvino_runtime(mlp_bundle, cli):
    from edgeship.config import ProfileConfig
    from edgeship.profiling.profiler import profile

    report = profile(mlp_bundle, ProfileConfig(runtimes=("onnxruntime", "openvino"), iterations=3, warmup=0))
    rows = {(r.runtime, r.variant) for r in report.results}
    assert ("onnxruntime", "fp32") in rows and ("openvino", "fp32@openvino") in rows
    assert all(r.to_dict()["runtime"] in ("onnxruntime", "openvino") for r in report.results)
    code, text = cli("check", mlp_bundle, "--runtime", "ort,openvino", "--table")
    assert code == 0 and "openvino-fp32" in text and "check passed" in text, text


def test_compare_runs_b_on_openvino_too(mlp_bundle, cli):
    from edgeship.parity.compare import compare

    report = compare(mlp_bundle, mlp_bundle, variant_a="fp32", variant_b="fp32", runtimes=("ort", "openvino"))
    runners = {c.runner for c in report.checks}
    assert report.passed and any(r.endswith("@openvino") for r in runners) and len(runners) == 2, runners
    code, text = cli("compare", mlp_bundle, mlp_bundle, "--variant-b", "fp32", "--runtime", "openvino")
    assert code == 0 and "@openvino" in text and "compare passed" in text, text
    code, text = cli("compare", mlp_bundle, mlp_bundle, "--runtime", "tensorflow")
    assert code == 2 and "unknown runtime" in text, text


def _renamed_output_model() -> bytes:
    """An output produced through a no-op Reshape (onnxruntime's basic optimisation keeps it):
    OpenVINO drops the node and gives the tensor both names, and ``get_any_name()`` answers the
    internal one (as for DETR's class_labels_classifier)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(8, 5) / 40, "W")
    shape = numpy_helper.from_array(np.array([1, 5], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["/class_labels_classifier/MatMul_output_0"]),
             helper.make_node("Reshape", ["/class_labels_classifier/MatMul_output_0", "shape"], ["logits"]),
             helper.make_node("Sigmoid", ["x"], ["pred_boxes"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5]),
                               helper.make_tensor_value_info("pred_boxes", TensorProto.FLOAT, [1, 8])], [w, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_outputs_openvino_renames_are_mapped_by_position():
    spec = IOSpec.from_dict({"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 8]}],
                             "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 5]},
                                         {"name": "pred_boxes", "dtype": "float32", "shape": [1, 8]}]})
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    with ov_runtime.OpenVINORunner(spec, _renamed_output_model()) as runner:
        assert runner.io_problems() == []
        out = runner.infer({"x": x})
        assert list(out) == ["logits", "pred_boxes"]
        np.testing.assert_allclose(out["logits"], x @ (np.arange(40, dtype=np.float32).reshape(8, 5) / 40), rtol=1e-5)
        assert [a.shape for a in runner.run(["pred_boxes"], {"x": x})] == [(1, 8)]


def test_an_exported_model_whose_outputs_openvino_renames_keeps_its_openvino_candidate(tmp_path, monkeypatch):
    from conftest import fake_p50s

    from edgeship.config import ExportConfig
    from edgeship.pipeline import export

    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 0.5 if "openvino" in n else 1.0))
    path = tmp_path / "det.onnx"
    path.write_bytes(_renamed_output_model())
    r = export(ExportConfig(model=path, output=tmp_path / "d.edgeship", targets=("cpu",), quantize=("fp32",)))
    manifest = json.loads((r.bundle / "manifest.json").read_text())
    runtimes = {c["runtime"] for c in manifest["candidates"]["cpu"]}
    assert "openvino" in runtimes, manifest["candidates"]["cpu"]
    assert not any("openvino" in n and "outputs are" in n for n in r.notes), r.notes
