"""Every JSON document edgeship writes parses with a strict parser and validates against its shipped
JSON Schema (edgeship/schemas/): manifest.json, report.json, the parity report of check/compare/export
--json, profile --json and inspect --json.

The shipped schemas allow keys they do not list (readers must ignore what they do not know); these
tests validate with a strict form of each, in which every object that does not say otherwise
refuses unlisted keys, so a key edgeship writes but its schema does not document fails here.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import arch, fake_p50s
from jsonschema import Draft202012Validator

from edgeship import schemas
from edgeship.errors import SpecError


def strict_form(node):
    """``node`` with ``additionalProperties: false`` on every schema object that lists properties
    and says nothing about others (not in an ``if``: a condition on one value, which must still
    match documents holding other keys)."""
    if isinstance(node, dict):
        out = {k: v if k == "if" else strict_form(v) for k, v in node.items()}
        if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict_form(v) for v in node]
    return node


def strict_json(text: str):
    """RFC 8259 JSON only: Infinity and NaN are refused."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def errors(doc, name: str, strict: bool = True) -> list[str]:
    schema = schemas.load(name)
    validator = Draft202012Validator(strict_form(schema) if strict else schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in validator.iter_errors(doc)]


def valid(source, name: str) -> dict:
    """``source`` (a path, JSON text or a parsed document) parsed strictly and checked against the
    strict form of schema ``name``; returns the document."""
    if isinstance(source, Path):
        source = source.read_text(encoding="utf-8")
    doc = strict_json(source) if isinstance(source, str) else source
    found = errors(doc, name)
    assert not found, f"{name}: " + "\n".join(found)
    assert doc["schema"] == schemas.tag(name) and doc["schema_version"] == schemas.VERSIONS[name]
    return doc


def _walk(node):
    """Every schema object in ``node``, but those of ``if`` conditions."""
    if isinstance(node, dict):
        yield node
        for k, v in node.items():
            if k != "if":
                yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _top(schema: dict) -> dict:
    """The object schema of the document itself (parity and profile point at a $defs entry)."""
    ref = schema.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else schema


# ----------------------------------------------------------------------------- the schemas themselves
@pytest.mark.parametrize("name", schemas.NAMES)
def test_each_schema_is_valid_and_names_its_version(name):
    schema = schemas.load(name)
    Draft202012Validator.check_schema(schema)
    assert schemas.path(name).is_file() and json.loads(schemas.path(name).read_text()) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:edgeship:schema:{name}:{schemas.VERSIONS[name]}"
    assert "readers must ignore keys" in schema["description"] and "newer than it knows must refuse" in schema["description"]
    props = _top(schema)["properties"]
    assert props["schema"]["const"] == schemas.tag(name) and props["schema_version"]["const"] == schemas.VERSIONS[name]
    assert {"schema", "schema_version"} <= set(schema.get("required", [])) | set(_top(schema).get("required", []))


@pytest.mark.parametrize("name", schemas.NAMES)
def test_the_shipped_schemas_accept_unknown_keys_and_every_object_says_what_it_holds(name):
    """Forward compatibility: nothing shipped refuses an unknown key. And every object schema lists
    its properties or says what its other keys hold, so the strict form misses nothing."""
    for node in _walk(schemas.load(name)):
        assert node.get("additionalProperties") is not False, node
        if node.get("type") == "object":
            assert "properties" in node or "additionalProperties" in node, node
        if node.get("type") == "object" or "properties" in node:
            assert node.get("description"), node  # a reader can act on every object


def test_definitions_shared_by_several_schemas_are_identical():
    """Each schema file stands alone (a validator needs no other file); a definition copied into
    several of them must stay the same everywhere."""
    seen: dict[str, tuple[str, dict]] = {}
    for name in schemas.NAMES:
        for key, definition in schemas.load(name).get("$defs", {}).items():
            if key in seen:
                assert definition == seen[key][1], f"$defs/{key} differs between {seen[key][0]}.json and {name}.json"
            else:
                seen[key] = (name, definition)


def test_the_versions_agree_with_the_code_that_reads_them():
    from edgeship.bundle.layout import SCHEMA_VERSION
    from edgeship.profiling.profiler import SCHEMA

    assert schemas.VERSIONS["manifest"] == SCHEMA_VERSION  # what parse_manifest accepts
    assert schemas.tag("profile") == SCHEMA
    assert schemas.header("parity") == {"schema": "edgeship.parity/1", "schema_version": 1}
    with pytest.raises(SpecError, match="no edgeship schema named 'bundle'; the schemas are manifest, report"):
        schemas.load("bundle")


def test_the_schemas_need_no_jsonschema_at_runtime():
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('jsonschema', 'torch', 'onnx'): raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from edgeship import schemas\n"
            "print(sorted(len(schemas.load(n)['$defs']) > 0 for n in schemas.NAMES))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[True, True, True, True, True]", out.stderr


# ----------------------------------------------------------------------------- bundles
@pytest.fixture(scope="module")
def outlier_bundles(tmp_path_factory):
    """Two bundles of a model whose int8 variants miss their tolerance: without the fallback
    (int8 rejected with a divergent node, fp16 shipped, export --profile), and with it (int8_static
    shipped with nodes kept in fp32, int8_dynamic rejected after the fallback)."""
    import models
    import torch

    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    d = tmp_path_factory.mktemp("outlier")
    torch.save(models.OutlierChannel().state_dict(), d / "oc.pt")
    out = {}
    for fallback in (False, True):
        cfg = ExportConfig(model=d / "oc.pt", output=d / f"fallback{int(fallback)}.edgeship", inputs=("x:8x16",),
                           load=LoadOptions(arch=arch("OutlierChannel")), exporter="torchscript", torchscript=False,
                           quantize=("static", "dynamic", "fp16"), fallback=fallback, profile=not fallback)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
            out[fallback] = export(cfg).bundle
    return out


def test_an_exported_bundles_manifest_and_report_validate(mlp_bundle):
    m = valid(mlp_bundle / "manifest.json", "manifest")
    assert {c["runtime"] for c in m["candidates"]["cpu"]} >= {"onnxruntime"} and m["torchscript"]
    r = valid(mlp_bundle / "report.json", "report")
    assert any(row["snr_db"] == "Infinity" for row in r["parity"]["summary"])  # torchscript vs eager: identical


def test_rejected_fallback_fp16_and_profiled_bundles_validate(outlier_bundles):
    rejected, fell_back = outlier_bundles[False], outlier_bundles[True]
    valid(rejected / "manifest.json", "manifest")
    r = valid(rejected / "report.json", "report")
    assert "int8_static" in r["rejected"] and "int8_static" in r["divergence"] and r["calibration"]["synthetic"]
    assert r["profile"]["schema"] == schemas.tag("profile") and r["profile"]["results"]
    assert {s["status"] for s in r["stages"]} >= {"ok", "skipped", "warning"}
    m = valid(fell_back / "manifest.json", "manifest")
    assert m["variants"]["int8_static"]["excluded_nodes"] and m["variants"]["int8_static"]["error_after_fallback"]
    assert "fp16" in m["variants"]
    r = valid(fell_back / "report.json", "report")
    assert r["rejected"]["int8_dynamic"]["excluded_nodes"]


def test_a_tuned_manifest_validates(bundle_copy, monkeypatch, cli):
    """tune adds its record, and keeps what this host cannot measure (unmeasured); a CPU mask is
    named in the host record."""
    monkeypatch.setenv("EDGESHIP_CPU_MASK", "avx512_bf16,amx_bf16")
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: r == "onnxruntime")
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
    code, out = cli("tune", bundle_copy, "-q")
    assert code == 0, out
    m = valid(bundle_copy / "manifest.json", "manifest")
    assert m["tuned"]["changes"] and m["tuned"]["host"]["cpu_mask"] == ["amx_bf16", "avx512_bf16"]
    assert any(c.get("unmeasured") for c in m["candidates"]["cpu"])


# ----------------------------------------------------------------------------- check, compare, export --json
def test_check_json_validates(cli, mlp_bundle, tmp_path, monkeypatch):
    runtimes = "onnxruntime,openvino" if "openvino" in json.loads((mlp_bundle / "manifest.json").read_text())["tools"] \
        else "onnxruntime"
    for i, args in enumerate([(), ("--candidates", "all"), ("--runtime", runtimes)]):
        code, out = cli("check", mlp_bundle, *args, "--json", tmp_path / f"{i}.json", "-q")
        assert code == 0, out
        assert valid(tmp_path / f"{i}.json", "parity")["passed"] is True
    monkeypatch.setenv("EDGESHIP_CPU_MASK", "avx512_bf16,amx_bf16")  # a candidate this host cannot run: skipped
    code, out = cli("check", mlp_bundle, "--candidates", "all", "--json", tmp_path / "masked.json", "-q")
    assert code == 0, out
    skipped = valid(tmp_path / "masked.json", "parity")["skipped"]
    m = json.loads((mlp_bundle / "manifest.json").read_text())
    assert skipped or not any(c.get("requires", {}).get("cpu_any") for c in m["candidates"]["cpu"])


def test_a_failing_check_json_validates(cli, bundle_copy, tmp_path):
    from test_cli import _change_one_weight

    _change_one_weight(bundle_copy)
    code, out = cli("check", bundle_copy, "--json", tmp_path / "c.json", "-q")
    assert code == 1, out
    doc = valid(tmp_path / "c.json", "parity")
    assert doc["passed"] is False and any(row["reason"] for row in doc["summary"])


def test_compare_json_validates(cli, mlp_bundle, files, outlier_bundles, tmp_path):
    models = mlp_bundle / "models"
    code, out = cli("compare", models / "fp32.onnx", models / "int8_dynamic.onnx", "--json", tmp_path / "a.json", "-q")
    assert code == 0, out
    valid(tmp_path / "a.json", "parity")
    # a failing compare: the first divergent node is named
    ok = outlier_bundles[True] / "models"
    code, out = cli("compare", ok / "fp32.onnx", ok / "int8_static.onnx", "--tolerance", "int8:min_cosine=0.9999999",
                    "--json", tmp_path / "b.json", "-q")
    assert code == 1, out
    assert valid(tmp_path / "b.json", "parity")["divergence"]
    # outputs that cannot be compared at all (other names): checks without metrics
    code, out = cli("compare", files["dir"] / "mlp.onnx", mlp_bundle, "--json", tmp_path / "c.json", "-q")
    assert code == 1, out
    assert not valid(tmp_path / "c.json", "parity")["checks"][0]["metrics"]


def test_export_json_validates(cli, files, tmp_path, monkeypatch):
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
    code, out = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10",
                    "-o", tmp_path / "e.edgeship", "--exporter", "torchscript", "--json", tmp_path / "e.json", "-q")
    assert code == 0, out
    valid(tmp_path / "e.json", "parity")
    valid(tmp_path / "e.edgeship" / "manifest.json", "manifest")
    # an ONNX model as the input: no torch stages, its exporter recorded as such
    code, out = cli("export", files["dir"] / "mlp.onnx", "-o", tmp_path / "o.edgeship", "--json", tmp_path / "o.json", "-q")
    assert code == 0, out
    valid(tmp_path / "o.json", "parity")
    assert valid(tmp_path / "o.edgeship" / "manifest.json", "manifest")["source"]["format"] == "onnx"
    valid(tmp_path / "o.edgeship" / "report.json", "report")



def test_a_mobile_bundle_validates(cli, files, tmp_path, monkeypatch):
    """export --target mobile (from an ONNX model: no torch stages): its manifest, report, export, check and
    inspect JSON, with the ORT-format variants and the mobile section."""
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
    b = tmp_path / "m.edgeship"
    code, out = cli("export", files["dir"] / "mlp.onnx", "-o", b, "--target", "mobile", "--json", tmp_path / "e.json", "-q")
    assert code == 0, out
    valid(tmp_path / "e.json", "parity")
    m = valid(b / "manifest.json", "manifest")
    assert m["variants"]["fp32_ort"]["format"] == "ort" and m["mobile"]["operators_config"] in m["files"]
    assert valid(b / "report.json", "report")["variants"]["fp32_ort"]["source"] == "fp32"
    code, out = cli("check", b, "--json", tmp_path / "c.json", "-q")
    assert code == 0, out
    assert any(r["runner"] == "onnxruntime-mobile" for r in valid(tmp_path / "c.json", "parity")["checks"])
    code, out = cli("inspect", b, "--json", tmp_path / "i.json", "-q")
    assert code == 0, out
    assert valid(tmp_path / "i.json", "inspect")["mobile"]["operators"]

# ----------------------------------------------------------------------------- profile --json, --baseline
def test_profile_json_validates_with_and_without_a_baseline(cli, mlp_bundle, files, tmp_path):
    fast = ("-n", "3", "--warmup", "1")
    code, out = cli("profile", mlp_bundle, *fast, "--json", tmp_path / "base.json", "-q")
    assert code == 0, out
    base = valid(tmp_path / "base.json", "profile")
    assert base["latencies"] == "base.npz" and "comparison" not in base
    code, out = cli("profile", mlp_bundle, *fast, "--baseline", tmp_path / "base.json", "--max-regression", "1000%",
                    "--json", tmp_path / "now.json", "-q")
    assert code == 0, out
    assert valid(tmp_path / "now.json", "profile")["comparison"]["rows"]
    code, out = cli("profile", mlp_bundle, *fast, "--candidates", "--per-op", "--json", tmp_path / "cand.json", "-q")
    assert code == 0, out
    assert any(r["per_op"] for r in valid(tmp_path / "cand.json", "profile")["results"])
    code, out = cli("profile", files["dir"] / "mlp.onnx", *fast, "--json", tmp_path / "onnx.json", "-q")
    assert code == 0, out
    assert valid(tmp_path / "onnx.json", "profile")["kind"] == "onnx"


def _baseline(mlp_bundle, tmp_path) -> tuple[object, dict]:
    from edgeship.config import ProfileConfig
    from edgeship.profiling.profiler import profile, write_json

    report = profile(mlp_bundle, ProfileConfig(variants=("fp32",), warmup=1, iterations=3))
    return report, json.loads(write_json(report, tmp_path / "p.json", arrays=False).read_text())


def test_the_baseline_refuses_a_newer_schema_version_and_reads_a_versionless_file(mlp_bundle, tmp_path, cli):
    from edgeship.profiling.profiler import compare

    report, doc = _baseline(mlp_bundle, tmp_path)
    path = tmp_path / "b.json"
    path.write_text(json.dumps({k: v for k, v in doc.items() if k not in ("schema", "schema_version")}))
    assert compare(report, path, max_regression=100).passed  # written before the keys existed: version 1
    path.write_text(json.dumps({**doc, "schema_version": 2, "something_new": {}}))
    with pytest.raises(SpecError, match=r"--baseline .*b\.json: schema_version 2 of the profile format is newer than this "
                                        r"edgeship \S+ reads \(up to 1\); upgrade edgeship .*`edgeship profile --json`"):
        compare(report, path)
    code, out = cli("profile", mlp_bundle, "-n", "2", "--warmup", "0", "--variant", "fp32", "--baseline", path)
    assert code == 2 and "schema_version 2 of the profile format is newer" in out, out
    path.write_text(json.dumps({**doc, "unknown_key": [1, 2]}))  # a newer edgeship's additive change: read
    assert compare(report, path, max_regression=100).passed


@pytest.mark.parametrize("edit, match", [
    ({"schema": "edgeship.parity/1"}, r"its schema is 'edgeship.parity/1', not an edgeship profile document \(edgeship.profile/1\); "
                                      r"pass a file written by `edgeship profile --json`"),
    ({"schema": "edgeship.profile/3", "schema_version": None}, "schema_version 3 of the profile format is newer"),
    ({"schema_version": "1"}, r"schema_version '1' is not a whole number from 1 up"),
    ({"schema_version": True}, r"schema_version True is not a whole number"),
])
def test_the_baseline_refuses_other_documents_and_malformed_versions(mlp_bundle, tmp_path, edit, match):
    from edgeship.profiling.profiler import compare

    report, doc = _baseline(mlp_bundle, tmp_path)
    doc = {**doc, **edit}
    (tmp_path / "b.json").write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))
    with pytest.raises(SpecError, match=match):
        compare(report, tmp_path / "b.json")
    with pytest.raises(SpecError, match=r"expected an edgeship profile document \(a JSON object\), found list"):
        schemas.check_version([], "profile", "--baseline x.json")


# ----------------------------------------------------------------------------- inspect --json
def test_inspect_json_validates_for_a_bundle_and_an_onnx_file(cli, mlp_bundle, files, outlier_bundles, tmp_path,
                                                               monkeypatch, capsys):
    from edgeship.cli import main

    code, out = cli("inspect", mlp_bundle, "--json", tmp_path / "b.json")
    assert code == 0 and f"wrote {(tmp_path / 'b.json').resolve()}" in out, out
    assert valid(tmp_path / "b.json", "inspect")["kind"] == "bundle"
    code, out = cli("inspect", outlier_bundles[True], "--json", tmp_path / "o.json", "-q")
    assert code == 0, out
    assert valid(tmp_path / "o.json", "inspect")["variants"]["int8_static"]["excluded_nodes"]
    monkeypatch.setattr("sys.argv", ["edgeship", "inspect", str(files["dir"] / "mlp.onnx"), "--json", "-"])
    main()
    captured = capsys.readouterr()
    assert valid(captured.out, "inspect")["kind"] == "onnx"  # stdout holds the JSON only
    assert "mlp.onnx" in captured.err


# ----------------------------------------------------------------------------- teeth
def _mutations():
    def unknown_key(m):
        m["variants"]["fp32"]["parity"]["p99"] = 1.0

    def wrong_type(m):
        m["variants"]["fp32"]["size"] = "1787"

    def missing(m):
        del m["candidates"]["cpu"][0]["requires"]

    def bad_enum(m):
        m["candidates"]["cpu"][0]["precision"] = "int2"

    def bare_infinity(m):
        m["variants"]["fp32"]["parity"]["max_abs"] = "inf"  # only "Infinity", "-Infinity", "NaN" stand for numbers

    def newer(m):
        m["schema_version"] = 2

    def bad_threads(m):
        m["candidates"]["cpu"][0]["options"]["threads"] = "half"

    return [("unknown key", unknown_key, True, "Additional properties are not allowed ('p99' was unexpected)"),
            ("wrong type", wrong_type, False, "'1787' is not of type 'integer'"),
            ("missing required", missing, False, "'requires' is a required property"),
            ("not in enum", bad_enum, False, "'int2' is not one of"),
            ("bare inf", bare_infinity, False, "'inf' is not valid under any of the given schemas"),
            ("newer version", newer, False, "1 was expected"),
            ("bad threads", bad_threads, False, "'half' is not valid under any of the given schemas")]


@pytest.mark.parametrize("what, mutate, strict_only, message", _mutations(), ids=[m[0] for m in _mutations()])
def test_the_manifest_schema_has_teeth(mlp_bundle, what, mutate, strict_only, message):
    m = json.loads((mlp_bundle / "manifest.json").read_text())
    assert not errors(m, "manifest")
    mutate(m)
    found = errors(m, "manifest")
    assert any(message in e for e in found), found
    assert bool(errors(m, "manifest", strict=False)) is not strict_only  # an unknown key passes the shipped schema


def test_other_schemas_have_teeth(mlp_bundle, tmp_path):
    _, profile_doc = _baseline(mlp_bundle, tmp_path)
    broken = copy.deepcopy(profile_doc)
    broken["results"][0]["stats"]["p50"] = None
    assert any("None is not valid under any of the given schemas" in e for e in errors(broken, "profile"))
    broken = copy.deepcopy(profile_doc)
    del broken["latencies"]
    assert any("'latencies' is a required property" in e for e in errors(broken, "profile"))
    from edgeship.bundle.inspect import inspect_path

    info = {**schemas.header("inspect"), **inspect_path(mlp_bundle)}
    assert not errors(info, "inspect")
    del info["defaults"]  # required of a bundle (the `then` of kind == bundle), not of an .onnx file
    assert any("'defaults' is a required property" in e for e in errors(info, "inspect"))
    assert not errors({**info, "kind": "onnx"}, "inspect")
    report = json.loads((mlp_bundle / "report.json").read_text())
    report["stages"][0]["status"] = "done"
    assert any("'done' is not one of ['ok', 'warning', 'failed', 'skipped']" in e for e in errors(report, "report"))
    report = json.loads((mlp_bundle / "report.json").read_text())
    report["parity"]["checks"][0]["metrics"]["snr_db"] = float("inf")  # as json.dumps would, were it not for jsonout
    assert errors(report, "report") == []  # a float is a number to the validator: the strict parser catches Infinity
    with pytest.raises(ValueError, match="non-standard JSON constant Infinity"):
        strict_json(json.dumps(report))
