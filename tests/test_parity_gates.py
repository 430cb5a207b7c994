"""Issue 4: tolerances per precision and output, localisation, check --inputs, compare, JUnit."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from conftest import arch
from junitparser import JUnitXml
from onnx import numpy_helper

from edgeship.bundle import MANIFEST, sha256_file
from edgeship.errors import SpecError
from edgeship.parity.tolerances import Tolerances, parse_tolerance, project_tolerances, tolerances_from_options


def test_tolerance_scopes_from_weakest_to_strongest():
    t = Tolerances({"int8": {"min_cosine": 0.95}, "*/logits": {"min_cosine": 0.97}, "int8/logits": {"min_top1": 0.9}})
    assert t.get("int8", "hidden").min_cosine == 0.95
    got = t.get("int8", "logits")
    assert got.min_cosine == 0.97 and got.min_top1 == 0.9
    assert t.get("fp32", "logits").atol == 1e-4 and t.get("fp32", "logits").min_cosine == 0.97
    assert Tolerances({"fp32": {"atol": 1.0}}).merged({"fp32": {"atol": 2.0}}).get("fp32", "y").atol == 2.0


@pytest.mark.parametrize("text, match", [
    ("atol", "expected"), ("int9:atol=1", "scope 'int9'"), ("fp32:speed=1", "unknown tolerance 'speed'"),
    ("fp32:atol=abc", "must be a number"), ("int8:min_cosine=2", "out of range"), ("*:atol=1", "scope"),
])
def test_bad_tolerance_options(text, match):
    with pytest.raises(SpecError, match=match):
        parse_tolerance(text)


def test_unscoped_tolerance_applies_to_every_precision():
    assert tolerances_from_options(["min_cosine=0.5"]) == {p: {"min_cosine": 0.5} for p in ("fp32", "fp16", "bf16", "int8", "int4")}


def test_config_file_tolerances(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.edgeship.tolerances]\nfp32 = { atol = 0.01 }\n"int8/logits" = { min_top1 = 0.9 }\n')
    assert project_tolerances(tmp_path)[0] == {"fp32": {"atol": 0.01}, "int8/logits": {"min_top1": 0.9}}
    (tmp_path / "edgeship.toml").write_text("[tolerances]\nfp16 = { min_cosine = 0.99 }\n")
    assert project_tolerances(tmp_path)[0] == {"fp16": {"min_cosine": 0.99}}  # edgeship.toml first
    (tmp_path / "edgeship.toml").write_text("[tolerances]\nfp16 = { min_cosine = 'high' }\n")
    with pytest.raises(SpecError, match=r"edgeship.toml \[tolerances\].fp16: min_cosine must be a number"):
        project_tolerances(tmp_path)
    (tmp_path / "edgeship.toml").write_text("[tolerances\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        project_tolerances(tmp_path)


def test_cli_overrides_file_and_effective_values_are_printed_and_recorded(cli, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgeship.toml").write_text('[tolerances]\nfp32 = { atol = 0.5, rtol = 0.25 }\n')
    out_dir = tmp_path / "t.edgeship"
    code, out = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10",
                    "--exporter", "torchscript", "--quantize", "fp32", "--tolerance", "fp32:atol=0.125", "-o", out_dir)
    assert code == 0, out
    assert "fp32/output: atol=0.125, rtol=0.25" in out  # CLI wins over the file, the file over defaults
    manifest = json.loads((out_dir / MANIFEST).read_text())
    assert manifest["variants"]["fp32"]["tolerance"]["output"]["atol"] == 0.125
    report = json.loads((out_dir / "report.json").read_text())
    assert report["parity"]["tolerances"]["fp32"]["output"]["rtol"] == 0.25


def _resign(bundle, rel):
    path = bundle / rel
    m = json.loads((bundle / MANIFEST).read_text())
    m["files"][rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (bundle / MANIFEST).write_text(json.dumps(m))


def _damage_first_weight(path, factor):
    """Scale the first int8/float weight tensor feeding the first MatMul-like node."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        for name in node.input:
            if name in inits and len(inits[name].dims) == 2:
                arr = numpy_helper.to_array(inits[name]).copy()
                arr = (arr.astype(np.float64) * factor).astype(arr.dtype) if arr.dtype.kind == "f" else -arr
                inits[name].CopyFrom(numpy_helper.from_array(arr, name))
                onnx.save(model, str(path))
                return node.name
    raise AssertionError("no weight found")


def test_check_names_the_first_divergent_node_of_a_damaged_variant(bundle_copy, cli, tmp_path):
    node = _damage_first_weight(bundle_copy / "models" / "int8_dynamic.onnx", -1.0)
    _resign(bundle_copy, "models/int8_dynamic.onnx")
    code, out = cli("check", bundle_copy, "--variant", "fp32,int8_dynamic", "--junit", tmp_path / "c.xml",
                    "--json", tmp_path / "c.json")
    assert code == 1
    where = json.loads((tmp_path / "c.json").read_text())["divergence"]["int8_dynamic"]
    assert node.startswith(where["node"]), (node, where)  # the quantizer names its node after the fp32 one
    assert where["op_type"] in ("MatMul", "Gemm")
    assert "where: int8_dynamic: first divergent node" in out
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "c.xml"))))
    failed = [c for c in suite if c.result and c.result[0].__class__.__name__ == "Failure"]
    assert len(failed) == 1 and "first divergent node" in failed[0].result[0].text
    assert suite.tests == 2 and suite.failures == 1


def test_junit_parses_with_a_standard_parser(mlp_bundle, cli, tmp_path):
    code, _ = cli("check", mlp_bundle, "--junit", tmp_path / "ok.xml")
    assert code == 0
    xml = JUnitXml.fromfile(str(tmp_path / "ok.xml"))
    cases = [c for suite in xml for c in suite]
    assert {c.classname for c in cases} == {"edgeship.parity.fp32.onnxruntime-cpu"}  # the candidate load runs here
    code, _ = cli("check", mlp_bundle, "--variant", "fp32,int8_dynamic", "--junit", tmp_path / "v.xml")
    assert code == 0
    cases = [c for suite in JUnitXml.fromfile(str(tmp_path / "v.xml")) for c in suite]
    assert {c.classname for c in cases} == {"edgeship.parity.onnxruntime-cpu.fp32",
                                           "edgeship.parity.onnxruntime-cpu.int8_dynamic"}
    assert all(c.is_passed for c in cases)


def test_check_with_your_own_inputs_and_the_pytorch_model(mlp_bundle, files, cli, tmp_path):
    np.savez(tmp_path / "mine.npz", x=np.random.default_rng(5).standard_normal((7, 10)).astype(np.float32))
    against = ("--against", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"))
    code, out = cli("check", mlp_bundle, "--inputs", tmp_path / "mine.npz", *against, "--variant", "fp32", "--table")
    assert code == 0, out
    assert "FAIL" not in out and "check passed" in out and "(1 runner × variant × output checks)" in out
    # every variant runs on your inputs (one sample: plain input names) against the PyTorch model's outputs;
    # whether int8 keeps top-1 on 7 random rows is the model's business, not this test's
    code, out = cli("check", mlp_bundle, "--inputs", tmp_path / "mine.npz", *against, "--variant", "fp32,int8_dynamic",
                    "--json", tmp_path / "mine.json")
    assert code in (0, 1), out
    checks = json.loads((tmp_path / "mine.json").read_text())["checks"]
    assert sorted((c["variant"], c["sample"]) for c in checks) == [("fp32", "inputs-0"), ("int8_dynamic", "inputs-0")]
    assert next(c for c in checks if c["variant"] == "fp32")["passed"]
    code, out = cli("check", mlp_bundle, "--inputs", tmp_path / "mine.npz")
    assert code == 2 and "pass --against model.pt too" in out
    np.savez(tmp_path / "bad.npz", x=np.zeros((7, 9), np.float32))
    code, out = cli("check", mlp_bundle, "--inputs", tmp_path / "bad.npz", "--against", files["dir"] / "mlp_state.pt",
                    "--arch", arch("MLP"))
    assert code == 2 and "expects shape [batch, 10], got [7, 9]" in out


def test_compare_release_with_build(mlp_bundle, tmp_path, cli):
    code, out = cli("compare", mlp_bundle, mlp_bundle, "--variant-a", "fp32", "--variant-b", "fp32")
    assert code == 0 and "compare passed" in out
    a = tmp_path / "a.onnx"
    shutil.copyfile(mlp_bundle / "models" / "fp32.onnx", a)
    b = tmp_path / "b.onnx"
    shutil.copyfile(a, b)
    node = _damage_first_weight(b, 1.5)
    code, out = cli("compare", a, b, "--json", tmp_path / "cmp.json")
    assert code == 1 and "compare FAILED" in out
    where = json.loads((tmp_path / "cmp.json").read_text())["divergence"]["b.onnx"]
    assert where["node"] == node
    code, out = cli("compare", a, b, "--tolerance", "fp32:atol=100", "--tolerance", "fp32:rtol=100")
    assert code == 0


def test_compare_refuses_models_with_other_inputs(mlp_bundle, tmp_path, cli):
    other = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), str(other), dynamo=False, input_names=["z"])
    code, out = cli("compare", mlp_bundle, other)
    assert code == 2 and "take different inputs" in out
