"""``export --target mobile``: ORT-format twins of the variants and the operator config of a reduced
onnxruntime build, shipped, verified and parity-checked like every file and variant; ``load``,
``check``, ``inspect`` and ``tune`` on them; ORT-format bytes walked for external data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import arch, fake_p50s

import edgeship
from edgeship.bundle.layout import sha256_file
from edgeship.errors import BundleError, ExportError, SpecError, TargetUnavailableError, UnsafeModelError

OPS_LINE = re.compile(r"^[\w.]*;\d+;[\w,]+$")


def _export(model: Path, out: Path, inputs: tuple[str, ...], name: str, quantize: tuple[str, ...],
            arch_kwargs: dict | None = None, **kw) -> Path:
    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    cfg = ExportConfig(model=model, output=out, inputs=inputs, load=LoadOptions(arch=arch(name), arch_kwargs=arch_kwargs or {}),
                       exporter="torchscript", torchscript=False, quantize=quantize, targets=("mobile",), tune=False, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
        return export(cfg).bundle


@pytest.fixture(scope="module")
def bundles(files, tmp_path_factory):
    """The MLP (fp32 + dynamic int8) and a MobileNet-style CNN (fp32 + static int8 + fp16), exported with --target mobile."""
    import models
    import torch

    d = tmp_path_factory.mktemp("mobile")
    torch.manual_seed(0)
    torch.save(models.MobileNetish(width=8).state_dict(), d / "mnet.pt")
    return {"mlp": _export(files["dir"] / "mlp_state.pt", d / "mlp.edgeship", ("x:2x10",), "MLP", ("dynamic",), dynamic_batch=True),
            "cnn": _export(d / "mnet.pt", d / "cnn.edgeship", ("x:1x3x32x32",), "MobileNetish", ("static", "fp16"), {"width": 8})}


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.parametrize("which,int8", [("mlp", "int8_dynamic"), ("cnn", "int8_static")])
def test_the_bundle_ships_verified_ort_twins_and_one_operator_config(bundles, which, int8):
    from edgeship.runtimes.ort_format import ort_format_version, summary

    b = bundles[which]
    m = _manifest(b)
    for source in ("fp32", int8):
        v = m["variants"][f"{source}_ort"]
        assert v["format"] == "ort" and v["source"] == source and v["file"] == f"models/{source}.ort"
        assert v["precision"] == m["variants"][source]["precision"] and v["parity"]["passed"] == {"mobile": True}
        data = (b / v["file"]).read_bytes()
        assert data[4:8] == b"ORTM" and m["files"][v["file"]]["sha256"] == sha256_file(b / v["file"])
        assert ort_format_version(data) == m["mobile"]["written_by"]["ort_format_version"]
    mobile = m["mobile"]
    assert mobile["written_by"]["onnxruntime"] == ort.__version__
    assert sorted(mobile["variants"]) == sorted(["fp32_ort", f"{int8}_ort"])
    config = b / mobile["operators_config"]
    assert mobile["operators_config"] == "mobile/required_operators.config"
    assert m["files"][mobile["operators_config"]]["sha256"] == sha256_file(config)
    lines = [ln for ln in config.read_text().splitlines() if not ln.startswith("#")]
    assert lines and all(OPS_LINE.match(ln) for ln in lines), lines
    assert "# - models/fp32.ort" in config.read_text() and str(b.parent) not in config.read_text()  # no build-host paths
    listed = {(d or "ai.onnx", op) for ln in lines for d, _, ops in [ln.split(";")] for op in ops.split(",")}
    for name in mobile["variants"]:  # one config for every ORT variant: each one's ops are in it
        _, ops = summary((b / m["variants"][name]["file"]).read_bytes())
        used = {(o.rsplit(".", 1)[0], o.rsplit(".", 1)[1]) if "." in o else ("ai.onnx", o) for o in ops}
        assert used <= listed, (name, used - listed)
    assert m["defaults"]["mobile"] in mobile["variants"] and m["defaults"]["cpu"] in ("fp32", int8)
    assert [c["variant"] for c in m["candidates"]["mobile"]] == _expected_order(m, b)


def _expected_order(m: dict, bundle: Path) -> list[str]:
    """docs/mobile.md's rule, from the manifest's own sizes: the smallest that may lead first."""
    size = {n: m["variants"][n]["size"] for n in m["mobile"]["variants"]}
    synthetic = (json.loads((bundle / "report.json").read_text()).get("calibration") or {}).get("synthetic")
    lead = {n for n in size if m["variants"][n]["precision"] == "fp32"
            or (size[n] <= 0.5 * size["fp32_ort"] and not (synthetic and "static" in n))}
    return sorted(size, key=lambda n: (n not in lead, size[n], n))


def test_fp16_gets_no_ort_twin_and_a_note_says_why(bundles):
    m = _manifest(bundles["cnn"])
    assert "fp16" in m["variants"] and not any(v.get("source") == "fp16" for v in m["variants"].values())
    assert any(n.startswith("mobile: no ORT-format twin of fp16 (fp16 is the CUDA variant") for n in m["notes"]), m["notes"]


def test_the_mobile_order_prefers_a_small_int8_file_with_real_evidence():
    from edgeship.pipeline.mobile import mobile_order

    prec = {"fp32_ort": "fp32", "int8_static_ort": "int8", "int8_dynamic_ort": "int8"}
    sizes = {"fp32_ort": 1000, "int8_static_ort": 300, "int8_dynamic_ort": 900}
    assert mobile_order(sizes, prec, vacuous=False) == ["int8_static_ort", "fp32_ort", "int8_dynamic_ort"]
    assert mobile_order(sizes, prec, vacuous=True) == ["fp32_ort", "int8_static_ort", "int8_dynamic_ort"]
    assert mobile_order({**sizes, "int8_static_ort": 501}, prec, vacuous=False)[0] == "fp32_ort"
    assert mobile_order(sizes, prec, vacuous=False, unproven=frozenset({"int8_static_ort"}))[0] == "fp32_ort"


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_each_ort_variant_gives_the_onnx_variants_outputs(bundles, which):
    """Opened as load opens them (the bytes, target mobile) against their .onnx source on the golden inputs."""
    from edgeship.bundle.golden import load_npz_samples

    b = bundles[which]
    m = _manifest(b)
    with np.load(b / "golden" / "inputs.npz") as z:
        samples = load_npz_samples(dict(z))
    for name in m["mobile"]["variants"]:
        source = m["variants"][name]["source"]
        with edgeship.load(b, target="mobile", variant=name) as mob, edgeship.load(b, variant=source) as ref:
            assert mob.variant == name and mob.providers == ["CPUExecutionProvider"]
            for feeds in samples:
                got, want = mob(feeds), ref(feeds)
                for k in want:
                    scale = float(np.abs(want[k]).max()) or 1.0
                    tol = 1e-5 if m["variants"][name]["precision"] == "fp32" else 0.02  # int8: kernels fused differently
                    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=tol * scale, err_msg=f"{which} {name} {k}")


def test_load_for_mobile_takes_the_default_without_torch_or_onnx(bundles):
    b = bundles["cnn"]
    code = ("import sys, numpy as np, edgeship\n"
            f"m = edgeship.load({str(b)!r}, target='mobile')\n"
            "y = m(np.zeros((1, 3, 32, 32), np.float32))\n"
            "print(m.variant, sorted(k for k in ('torch', 'onnx', 'transformers') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [_manifest(b)["defaults"]["mobile"], "[]"]


def test_check_passes_and_judges_the_ort_variants(bundles, cli, tmp_path):
    code, out = cli("check", bundles["cnn"], "--json", tmp_path / "c.json")
    assert code == 0, out
    rows = json.loads((tmp_path / "c.json").read_text())["checks"]
    judged = {(r["runner"], r["variant"]) for r in rows}
    assert {("onnxruntime-mobile", "fp32_ort"), ("onnxruntime-mobile", "int8_static_ort"), ("onnxruntime-cpu", "fp32")} <= judged
    code, out = cli("check", bundles["cnn"], "--target", "mobile", "--tolerance", "atol=1e-12",
                    "--tolerance", "rtol=0", "--tolerance", "atol_scale=0")
    assert code == 1 and "onnxruntime-mobile" in out and "fp32_ort" in out, out


def test_profile_runs_the_ort_files_on_mobile_and_every_file_on_cpu(bundles):
    from edgeship.config import ProfileConfig
    from edgeship.profiling.profiler import profile

    m = _manifest(bundles["mlp"])
    report = profile(str(bundles["mlp"]), ProfileConfig(targets=("cpu", "mobile"), iterations=3, warmup=1, cold_start="off"))
    rows = {(r.target, r.variant) for r in report.results}
    assert rows == {("cpu", v) for v in m["variants"]} | {("mobile", v) for v in m["mobile"]["variants"]}


def test_compare_takes_ort_variants_and_does_not_localise_in_them(bundles, cli):
    b = bundles["cnn"]
    code, out = cli("compare", b, b, "--variant-a", "fp32", "--variant-b", "fp32_ort", "-q")
    assert code == 0, out
    code, out = cli("compare", b, b, "--variant-a", "fp32", "--variant-b", "int8_static_ort",
                    "--tolerance", "int8:min_cosine=0.9999999")
    assert code == 1 and "int8_static_ort" in out and "first divergent node" not in out, out
    code, out = cli("compare", b, b, "--variant-a", "fp32", "--variant-b", "int8_static",
                    "--tolerance", "int8:min_cosine=0.9999999")
    assert code == 1 and "first divergent node" in out, out  # the .onnx source: localised


def test_onnxruntime_web_runs_the_ort_files_too(bundles, cli, tmp_path):
    """check --target web (a headless Chromium; skipped without one): the .ort twins in onnxruntime-web's wasm."""
    from test_web import _why_no_web

    why = _why_no_web()
    if why:
        pytest.skip(why)
    code, out = cli("check", bundles["mlp"], "--target", "web", "--webgpu", "off", "--json", tmp_path / "w.json")
    assert code == 0, out
    rows = json.loads((tmp_path / "w.json").read_text())["checks"]
    assert {r["variant"] for r in rows if r["runner"] == "onnxruntime-web-wasm"} >= {"fp32_ort", "int8_dynamic_ort"}


def test_inspect_shows_the_ort_variants_and_the_operator_config(bundles, cli, tmp_path):
    from test_schemas import valid

    code, out = cli("inspect", bundles["mlp"], "--json", tmp_path / "i.json")
    assert code == 0, out
    assert "ORT format (from fp32)" in out and "mobile/required_operators.config" in out and "--include_ops_by_config" in out
    info = valid(tmp_path / "i.json", "inspect")
    m = _manifest(bundles["mlp"])
    assert info["variants"]["fp32_ort"]["format"] == "ort" and info["variants"]["fp32_ort"]["ops"]
    assert info["mobile"]["operators"] == m["mobile"]["operators"]


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_the_manifest_and_report_validate(bundles, which):
    from test_schemas import valid

    m = valid(bundles[which] / "manifest.json", "manifest")
    assert m["mobile"]["optimization"] == {"style": "fixed", "level": "all", "target_platform": "arm"}
    r = valid(bundles[which] / "report.json", "report")
    assert any(s["name"] == "mobile" and s["status"] == "ok" for s in r["stages"])
    assert r["variants"]["fp32_ort"]["format"] == "ort"


# ----------------------------------------------------------------------------- refusals
@pytest.fixture
def mobile_copy(bundles, tmp_path):
    return Path(shutil.copytree(bundles["mlp"], tmp_path / "b.edgeship"))


@pytest.mark.parametrize("rel", ["models/fp32.ort", "mobile/required_operators.config"])
def test_a_changed_byte_in_an_ort_file_or_the_config_is_refused(mobile_copy, rel, cli):
    p = mobile_copy / rel
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=re.escape(rel)):
        edgeship.load(mobile_copy, target="mobile")
    code, out = cli("check", mobile_copy)
    assert code == 2 and rel in out, out


def _edit(bundle: Path, edit) -> None:
    m = _manifest(bundle)
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("path", ["../outside.config", "/etc/passwd", "mobile/../../x.config"])
def test_a_crafted_operator_config_path_is_refused(mobile_copy, path):
    outside = mobile_copy.parent / "outside.config"
    outside.write_text("ai.onnx;1;Relu\n")

    def listed(m):
        m["mobile"]["operators_config"] = path

    _edit(mobile_copy, listed)
    with pytest.raises(BundleError, match="mobile operator config names"):
        edgeship.load(mobile_copy)

    def also_in_files(m):
        m["files"][path] = {"sha256": sha256_file(outside), "size": outside.stat().st_size}

    _edit(mobile_copy, also_in_files)
    with pytest.raises(BundleError):
        edgeship.load(mobile_copy)


def test_a_manifest_that_lies_about_a_files_format_is_refused(mobile_copy):
    def ort_is_onnx(m):
        del m["variants"]["fp32_ort"]["format"]
        m["mobile"]["variants"].remove("fp32_ort")

    _edit(mobile_copy, ort_is_onnx)
    with pytest.raises(BundleError, match=r"says models/fp32.ort is 'onnx' format, but the file is 'ort'"):
        edgeship.load(mobile_copy, variant="fp32_ort")

    def onnx_is_ort(m):
        m["variants"]["fp32_ort"]["format"] = "ort"
        m["variants"]["fp32"]["format"] = "ort"

    _edit(mobile_copy, onnx_is_ort)
    with pytest.raises(BundleError, match=r"says models/fp32.onnx is 'ort' format, but the file is 'onnx'"):
        edgeship.load(mobile_copy, variant="fp32")

    def unknown(m):
        m["variants"]["fp32"]["format"] = "tflite"

    _edit(mobile_copy, unknown)
    with pytest.raises(BundleError, match="format 'tflite'"):
        edgeship.load(mobile_copy)


def test_mobile_names_only_ort_variants(mobile_copy):
    def lie(m):
        m["mobile"]["variants"] = ["fp32"]

    _edit(mobile_copy, lie)
    with pytest.raises(BundleError, match="'mobile' names variants that are not ORT-format"):
        edgeship.load(mobile_copy)


def test_a_bundle_without_ort_variants_is_not_loaded_or_checked_for_mobile(mlp_bundle, cli):
    with pytest.raises(TargetUnavailableError, match="no ORT-format variants; re-export it with --target mobile"):
        edgeship.load(mlp_bundle, target="mobile")
    code, out = cli("check", mlp_bundle, "--target", "mobile")
    assert code == 2 and "no ORT-format variants" in out, out


def test_tune_refuses_the_mobile_target(mobile_copy, cli):
    with pytest.raises(SpecError, match="smallest passing ORT-format file"):
        from edgeship.pipeline.tune import tune

        tune(mobile_copy, targets=("mobile",))
    code, out = cli("tune", mobile_copy, "--target", "mobile")
    assert code == 2, out


# ----------------------------------------------------------------------------- conversion errors
def test_a_conversion_failure_is_an_export_error_that_says_what_to_do(files, tmp_path, monkeypatch):
    def fail(*a, **kw):
        print("Error converting /tmp/x/fp32.onnx: boom")
        raise RuntimeError("boom")

    monkeypatch.setattr("onnxruntime.tools.convert_onnx_models_to_ort.convert_onnx_models_to_ort", fail)
    out = tmp_path / "m.edgeship"
    with pytest.raises(ExportError, match=r"could not convert the fp32 variant to the ORT format \(boom\)\. "
                                          "Export without --target mobile"):
        _export(files["dir"] / "mlp_state.pt", out, ("x:2x10",), "MLP", ("fp32",))
    assert not out.exists()


@pytest.fixture(scope="module")
def other_ort(tmp_path_factory) -> bytes:
    """An ORT-format MLP with other weights than the test MLP's (same inputs and outputs)."""
    import models
    import torch

    from edgeship.exporters.ort_format import convert

    d = tmp_path_factory.mktemp("other")
    torch.manual_seed(123)
    torch.onnx.export(models.MLP(), (torch.randn(2, 10),), str(d / "m.onnx"), dynamo=False, input_names=["x"],
                      output_names=["output"], dynamic_axes={"x": {0: "batch"}, "output": {0: "batch"}})
    converted, _ = convert({"m": d / "m.onnx"}, d / "out")
    return converted["m"].read_bytes()


def _swapping(monkeypatch, name: str, data: bytes) -> None:
    """The converter, with the ORT file of variant ``name`` replaced by ``data`` (a twin that computes something else)."""
    from edgeship.exporters import ort_format

    real = ort_format.convert

    def convert(models, out):
        converted, config = real(models, out)
        converted[name].write_bytes(data)
        return converted, config

    monkeypatch.setattr(ort_format, "convert", convert)


def test_an_int8_twin_that_fails_parity_is_left_out_with_a_note(files, tmp_path, monkeypatch, other_ort):
    _swapping(monkeypatch, "int8_dynamic", other_ort)
    b = _export(files["dir"] / "mlp_state.pt", tmp_path / "m.edgeship", ("x:2x10",), "MLP", ("dynamic",))
    m = _manifest(b)
    assert "int8_dynamic_ort" not in m["variants"] and m["mobile"]["variants"] == ["fp32_ort"]
    assert "int8_dynamic" in m["variants"] and not (b / "models" / "int8_dynamic.ort").exists()
    assert any("int8_dynamic_ort (the ORT-format int8_dynamic) fails parity on mobile" in n for n in m["notes"])


def test_an_fp32_twin_that_fails_parity_stops_the_export(files, tmp_path, monkeypatch, other_ort):
    from edgeship.errors import ParityError

    _swapping(monkeypatch, "fp32", other_ort)
    out = tmp_path / "m.edgeship"
    with pytest.raises(ParityError, match="the ORT-format fp32 file onnxruntime's converter wrote fails parity"):
        _export(files["dir"] / "mlp_state.pt", out, ("x:2x10",), "MLP", ("fp32",))
    assert not out.exists()


def test_without_the_converter_export_says_what_to_install(files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.tools.convert_onnx_models_to_ort", None)
    with pytest.raises(ExportError, match=r"pip install 'edgeship\[export\]'"):
        _export(files["dir"] / "mlp_state.pt", tmp_path / "m.edgeship", ("x:2x10",), "MLP", ("fp32",))


# ----------------------------------------------------------------------------- ORT-format bytes
def _crafted_ort(external: bool, in_subgraph: bool) -> bytes:
    """A minimal ORT-format model whose one tensor has (or has not) an external-data offset, as an
    initializer or inside a node attribute's subgraph; built with onnxruntime's own flatbuffers schema."""
    import flatbuffers
    import onnxruntime.tools.ort_format_model  # noqa: F401  (puts ort_flatbuffers_py on sys.path)
    from ort_flatbuffers_py.fbs import Attribute as A
    from ort_flatbuffers_py.fbs import Graph as G
    from ort_flatbuffers_py.fbs import InferenceSession as S
    from ort_flatbuffers_py.fbs import Model as M
    from ort_flatbuffers_py.fbs import Node as N
    from ort_flatbuffers_py.fbs import Tensor as T

    b = flatbuffers.Builder(0)

    def graph(tensors=(), nodes=()):
        inits = nodes_vec = None
        if tensors:
            G.GraphStartInitializersVector(b, len(tensors))
            for t in tensors:
                b.PrependUOffsetTRelative(t)
            inits = b.EndVector()
        if nodes:
            G.GraphStartNodesVector(b, len(nodes))
            for n in nodes:
                b.PrependUOffsetTRelative(n)
            nodes_vec = b.EndVector()
        G.GraphStart(b)
        if inits is not None:
            G.GraphAddInitializers(b, inits)
        if nodes_vec is not None:
            G.GraphAddNodes(b, nodes_vec)
        return G.GraphEnd(b)

    name = b.CreateString("secret_weight")
    T.TensorStart(b)
    T.TensorAddName(b, name)
    T.TensorAddDataType(b, 1)
    if external:
        T.TensorAddExternalDataOffset(b, 0)
    tensor = T.TensorEnd(b)
    if in_subgraph:
        sub = graph(tensors=[tensor])
        aname = b.CreateString("then_branch")
        A.AttributeStart(b)
        A.AttributeAddName(b, aname)
        A.AttributeAddG(b, sub)
        attr = A.AttributeEnd(b)
        N.NodeStartAttributesVector(b, 1)
        b.PrependUOffsetTRelative(attr)
        attrs = b.EndVector()
        op = b.CreateString("If")
        N.NodeStart(b)
        N.NodeAddOpType(b, op)
        N.NodeAddAttributes(b, attrs)
        main = graph(nodes=[N.NodeEnd(b)])
    else:
        main = graph(tensors=[tensor])
    M.ModelStart(b)
    M.ModelAddIrVersion(b, 8)
    M.ModelAddGraph(b, main)
    model = M.ModelEnd(b)
    version = b.CreateString("6")
    S.InferenceSessionStart(b)
    S.InferenceSessionAddOrtVersion(b, version)
    S.InferenceSessionAddModel(b, model)
    b.Finish(S.InferenceSessionEnd(b), file_identifier=b"ORTM")
    return bytes(b.Output())


@pytest.mark.parametrize("in_subgraph", [False, True])
def test_ort_format_bytes_with_external_data_are_refused_before_onnxruntime_sees_them(in_subgraph, monkeypatch):
    from edgeship.runtimes.external_data import refuse_external_data
    from edgeship.runtimes.ort import open_session
    from edgeship.runtimes.ort_format import external_tensors

    assert external_tensors(_crafted_ort(False, in_subgraph)) == []
    data = _crafted_ort(True, in_subgraph)
    assert data[4:8] == b"ORTM" and external_tensors(data) == ["secret_weight"]
    with pytest.raises(UnsafeModelError, match="ORT-format model that keeps tensor 'secret_weight' in external data"):
        refuse_external_data(data, "the model")
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **kw: pytest.fail("onnxruntime saw the bytes"))
    with pytest.raises(UnsafeModelError):
        open_session(data)


def test_unreadable_ort_format_bytes_are_refused():
    from edgeship.runtimes.external_data import refuse_external_data

    data = _crafted_ort(False, False)
    with pytest.raises(UnsafeModelError, match="does not read as one"):
        refuse_external_data(data[:12] + b"\xff" * 8, "the model")


def test_the_hand_reader_uses_onnxruntimes_field_slots():
    """ort_format.SLOTS (the runtime reads flatbuffers without onnxruntime.tools, which imports torch)
    against the slots onnxruntime's generated readers use."""
    import onnxruntime.tools.ort_format_model as ofm

    from edgeship.runtimes.ort_format import SLOTS

    fbs = Path(ofm.__file__).parent / "ort_flatbuffers_py" / "fbs"
    for table, fields in SLOTS.items():
        text = (fbs / f"{table}.py").read_text()
        for field, slot in fields.items():
            camel = "".join(p[:1].upper() + p[1:] for p in field.split("_"))
            m = re.search(rf"def {camel}\(self[^)]*\):\n\s+o = [^\n]*Offset\((\d+)\)", text)
            assert m and int(m.group(1)) == slot, (table, field)
