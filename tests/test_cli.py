"""The CLI: export, check, inspect, run; exit codes 0 / 1 / 2 / 3 (see the README, "Exit codes")."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from conftest import arch
from onnx import numpy_helper

from edgeship.bundle import MANIFEST, sha256_file


@pytest.mark.parametrize("cmd", ["export", "check", "inspect", "run"])
def test_help_is_complete(cli, cmd):
    code, out = cli(cmd, "--help")
    assert code == 0 and "Usage" in out
    if cmd == "export":
        for opt in ("--input", "--example-inputs", "--dynamic", "--dynamic-batch", "--output-names", "--arch",
                    "--arch-kwargs", "--trust-pickle", "--import", "--code", "--exporter", "--opset", "--target"):
            assert opt in out, opt


def test_export_prints_stages_table_and_bundle(cli, files, tmp_path):
    out_dir = tmp_path / "cli.edgeship"
    code, out = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10",
                    "--dynamic-batch", "-o", out_dir, "--exporter", "torchscript", "--json", tmp_path / "r.json")
    assert code == 0, out
    for stage in ("load", "torchscript", "onnx", "optimize", "parity", "select", "package"):
        assert f"✓ {stage}" in out
    assert "Parity vs eager reference" in out and "pass" in out
    assert f"Bundle: {out_dir.resolve()}" in out
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True


def test_export_without_input_shows_syntax_exit_2(cli, files, tmp_path):
    code, out = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "-o", tmp_path / "x.edgeship")
    assert code == 2
    assert "--input NAME:SHAPE[:DTYPE]" in out and "x:1x3x224x224" in out
    assert "Traceback" not in out and not (tmp_path / "x.edgeship").exists()


def test_export_pickled_module_exit_2(cli, files, tmp_path):
    code, out = cli("export", files["dir"] / "mlp_pickled.pt", "--input", "x:1x10", "-o", tmp_path / "x.edgeship")
    assert code == 2 and "--trust-pickle" in out and "Traceback" not in out


def test_export_bad_arch_kwargs_exit_2(cli, files):
    code, out = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--arch-kwargs", "[1]",
                    "--input", "x:1x10")
    assert code == 2 and "must be a JSON object" in out


def test_unknown_option_is_usage_error_exit_2(cli):
    code, out = cli("export", "--no-such-flag")
    assert code == 2


def test_check_passes_and_writes_json_and_junit(cli, mlp_bundle, tmp_path):
    code, out = cli("check", mlp_bundle, "--json", tmp_path / "c.json", "--junit", tmp_path / "c.xml", "--table")
    assert code == 0, out
    assert "check passed" in out and "onnxruntime-cpu" in out
    assert json.loads((tmp_path / "c.json").read_text())["passed"]
    suite = ET.parse(tmp_path / "c.xml").getroot().find("testsuite")
    # by default what load runs here: the fp32 candidate (also the fp32 reference), one output
    assert int(suite.get("tests")) == 1 and suite.get("failures") == "0"
    assert [tc.get("classname") for tc in suite.iter("testcase")] == ["edgeship.parity.fp32.onnxruntime-cpu"]
    rows = json.loads((tmp_path / "c.json").read_text())["summary"]
    assert [(r["candidate"], r["variant"]) for r in rows] == [("fp32", "fp32")]
    # every candidate this host can run, each named
    code, out = cli("check", mlp_bundle, "--candidates", "all", "--junit", tmp_path / "all.xml", "--json", tmp_path / "all.json")
    assert code == 0, out
    listed = [c["id"] for c in json.loads((mlp_bundle / "manifest.json").read_text())["candidates"]["cpu"]]
    rows = json.loads((tmp_path / "all.json").read_text())["summary"]
    assert [r["candidate"] for r in rows] == listed and "int8_dynamic" in listed
    assert {tc.get("classname").split(".")[2] for tc in ET.parse(tmp_path / "all.xml").getroot().iter("testcase")} \
        >= {"fp32", "int8_dynamic"}
    code, out = cli("check", mlp_bundle, "--candidates", "some")
    assert code == 2 and "--candidates 'some': use default" in out


def test_check_is_quiet_in_ci(cli, mlp_bundle, monkeypatch):
    monkeypatch.setenv("CI", "true")
    code, out = cli("check", mlp_bundle)
    assert code == 0 and "Parity" not in out and "check passed" in out


def test_check_against_the_pytorch_model(cli, mlp_bundle, files):
    code, out = cli("check", mlp_bundle, "--against", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--table")
    assert code == 0, out
    assert "torch-eager" in out


def _change_one_weight(bundle):
    """Edit a weight and re-sign the manifest, so only parity can notice."""
    path = bundle / "models" / "fp32.onnx"
    model = onnx.load(str(path))
    init = min(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the last layer's bias
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))
    m = json.loads((bundle / MANIFEST).read_text())
    m["files"]["models/fp32.onnx"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (bundle / MANIFEST).write_text(json.dumps(m))


def test_check_changed_weight_fails_exit_1_with_junit_failure(cli, bundle_copy, tmp_path):
    _change_one_weight(bundle_copy)
    code, out = cli("check", bundle_copy, "--junit", tmp_path / "c.xml")
    assert code == 1
    assert "FAIL" in out and "check FAILED" in out and "(1 of 1 candidate × output checks failed)" in out
    suite = ET.parse(tmp_path / "c.xml").getroot().find("testsuite")
    failures = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert len(failures) == 1 and "outside atol" in failures[0].find("failure").get("message")


def test_inspect_bundle_and_onnx(cli, mlp_bundle, files, tmp_path):
    code, out = cli("inspect", mlp_bundle)
    assert code == 0 and "variant fp32" in out and "Gemm" in out and "batch" in out and "opset" in out
    code, out = cli("inspect", files["dir"] / "mlp.onnx", "--json", tmp_path / "i.json")
    assert code == 0 and "mlp.onnx" in out and f"wrote {(tmp_path / 'i.json').resolve()}" in out, out
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["schema"] == "edgeship.inspect/1" and info["schema_version"] == 1
    assert info["inputs"][0]["name"] == "x" and info["variants"]["model"]["ops"]


def test_inspect_json_takes_a_path_and_dash_is_stdout(mlp_bundle, tmp_path, monkeypatch, capsys, cli):
    """Issue 19 item 5: --json PATH as check, compare and profile take it; - writes the JSON alone to
    stdout, and the tables (or with -q the line) go to stderr."""
    from edgeship.cli import main

    monkeypatch.chdir(tmp_path)
    for quiet in ((), ("-q",)):
        monkeypatch.setattr("sys.argv", ["edgeship", "inspect", str(mlp_bundle), "--json", "-", *quiet])
        main()
        out = capsys.readouterr()
        assert json.loads(out.out)["kind"] == "bundle"  # stdout holds the JSON only
        assert ("fp32 (fp32)" if quiet else "variant fp32") in out.err and "wrote" not in out.err
    assert not (tmp_path / "-").exists()
    code, out = cli("inspect", mlp_bundle, "--json", tmp_path / "q.json", "-q")
    assert code == 0 and "fp32 (fp32)" in out and "wrote" not in out, out  # -q: the result line only
    assert json.loads((tmp_path / "q.json").read_text())["kind"] == "bundle"
    code, out = cli("inspect", mlp_bundle, "--json")
    assert code == 2 and "'--json' requires an argument" in out, out
    code, out = cli("inspect", mlp_bundle, "--json", tmp_path / "missing" / "i.json")
    assert code == 2 and "--json" in out and "cannot write it" in out, out


def test_run_with_npy_and_save_npz(cli, mlp_bundle, tmp_path, files):
    np.save(tmp_path / "x.npy", files["x"])
    code, out = cli("run", mlp_bundle, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "y.npz")
    assert code == 0, out
    with np.load(tmp_path / "y.npz") as y:
        assert y[y.files[0]].shape == (2, 4)
    code, out = cli("run", mlp_bundle, "--input", f"x={tmp_path / 'missing.npy'}")
    assert code == 2 and "cannot read it" in out
    code, out = cli("run", mlp_bundle)
    assert code == 2 and "NAME=FILE.npy" in out and "this model has one input, 'x'" in out


def test_run_takes_a_plain_npy_for_one_input_and_a_raw_onnx(cli, mlp_bundle, tmp_path, files):
    from edgeship.cli.run import _read_feeds
    from edgeship.errors import SpecError

    np.save(tmp_path / "x.npy", files["x"])
    code, out = cli("run", mlp_bundle, "-i", tmp_path / "x.npy", "-o", tmp_path / "a.npz")
    assert code == 0, out
    code, out = cli("run", files["dir"] / "mlp.onnx", "-i", tmp_path / "x.npy", "-o", tmp_path / "b.npz")
    assert code == 0 and "mlp.onnx (onnxruntime, cpu)" in out, out
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        np.testing.assert_allclose(a[a.files[0]], b[b.files[0]], atol=1e-5)
    code, out = cli("run", files["dir"] / "mlp.onnx", "-i", tmp_path / "x.npy", "--variant", "fp32")
    assert code == 2 and "--variant and --runtime apply to bundles" in out
    with pytest.raises(SpecError, match=r"the model has 2 inputs \(feats, ids\): name the one it feeds"):
        _read_feeds([str(tmp_path / "x.npy")], ["feats", "ids"])


# ----------------------------------------------------------------------------- conventions
def test_version(cli):
    import edgeship

    code, out = cli("--version")
    assert code == 0 and out == f"edgeship {edgeship.__version__}"


@pytest.mark.parametrize("cmd", ["export", "quantize", "check", "compare", "inspect", "run", "profile"])
def test_every_command_has_quiet_and_verbose(cli, cmd):
    code, out = cli(cmd, "--help")
    assert code == 0 and "-q, --quiet" in out and "-v, --verbose" in out, out
    if cmd == "export":
        assert "-q, --quantize" not in out


def test_dash_writes_the_report_to_stdout_and_tables_to_stderr(mlp_bundle, tmp_path, monkeypatch, capsys):
    from edgeship.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["edgeship", "check", str(mlp_bundle), "--json", "-", "--table"])
    main()
    out = capsys.readouterr()
    assert json.loads(out.out)["passed"] is True  # stdout holds the JSON only
    assert "check passed" in out.err and not (tmp_path / "-").exists()


def test_written_files_are_named_and_output_has_no_colour_codes(cli, mlp_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("CI", raising=False)  # under CI=true check is quiet by default: one line
    code, out = cli("check", mlp_bundle, "--junit", tmp_path / "p.xml", "--json", tmp_path / "p.json")
    assert code == 0, out
    assert f"wrote {(tmp_path / 'p.xml').resolve()}" in out and f"wrote {(tmp_path / 'p.json').resolve()}" in out
    assert "\x1b[" not in out


def test_quiet_prints_the_result_line_only(cli, mlp_bundle):
    code, out = cli("check", mlp_bundle, "-q")
    assert code == 0 and out.startswith("check passed") and "┃" not in out, out
    code, out = cli("inspect", mlp_bundle, "-q")
    assert code == 0 and "fp32 (fp32)" in out and "int8_dynamic (int8)" in out and "┃" not in out, out


def test_run_output_dash_is_npz_bytes_on_stdout(mlp_bundle, tmp_path, monkeypatch, capsysbinary):
    import io

    from edgeship.cli import main

    np.save(tmp_path / "x.npy", np.ones((2, 10), np.float32))
    monkeypatch.setattr("sys.argv", ["edgeship", "run", str(mlp_bundle), "-i", f"x={tmp_path / 'x.npy'}", "-o", "-"])
    main()
    with np.load(io.BytesIO(capsysbinary.readouterr().out)) as z:
        assert z["output"].shape == (2, 4)


def test_raw_int8_onnx_is_detected_and_judged_with_int8_tolerances(cli, mlp_bundle, tmp_path):
    from edgeship.bundle.inspect import inspect_path

    (tmp_path / "fp32.onnx").write_bytes((mlp_bundle / "models" / "fp32.onnx").read_bytes())
    (tmp_path / "int8.onnx").write_bytes((mlp_bundle / "models" / "int8_dynamic.onnx").read_bytes())
    assert inspect_path(tmp_path / "int8.onnx")["variants"]["model"]["precision"] == "int8"
    assert inspect_path(tmp_path / "fp32.onnx")["variants"]["model"]["precision"] == "fp32"
    code, out = cli("compare", tmp_path / "fp32.onnx", tmp_path / "int8.onnx", "--json", tmp_path / "c.json")
    assert code == 0, out  # fp32 tolerances (atol 1e-4) would fail an int8 model
    assert "min_cosine" in out
