"""Every JSON file and stream edgeship writes is strict RFC 8259 JSON: no Infinity or NaN, which
JavaScript's JSON.parse, Go and GitHub Actions' fromJSON refuse (non-finite numbers are written as
the strings "Infinity", "-Infinity", "NaN")."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgeship import jsonout
from edgeship.config import ProfileConfig
from edgeship.parity.report import OutputCheck, ParityReport, write_json
from edgeship.profiling.profiler import profile
from edgeship.profiling.profiler import write_json as write_profile_json


def strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_strings():
    value = {"snr": math.inf, "low": -np.inf, "nan": np.float32("nan"), "n": np.int64(3), "t": (1.5, np.float64(2))}
    assert strict(jsonout.dumps(value)) == {"snr": "Infinity", "low": "-Infinity", "nan": "NaN", "n": 3, "t": [1.5, 2.0]}
    assert float(strict(jsonout.dumps(math.inf))) == math.inf  # read back with float()


def test_check_json_is_strict_with_identical_outputs(tmp_path, cli, mlp_bundle):
    report = ParityReport((OutputCheck("r", "fp32", "y", "0", True, {"snr_db": math.inf, "max_abs": 0.0}),))
    write_json(report, tmp_path / "r.json")
    assert strict((tmp_path / "r.json").read_text())["checks"][0]["metrics"]["snr_db"] == "Infinity"
    code, out = cli("check", mlp_bundle, "--candidates", "all", "--json", tmp_path / "c.json", "-q")
    assert code == 0, out
    strict((tmp_path / "c.json").read_text())


def test_bundle_files_profile_and_inspect_json_are_strict(mlp_bundle, tmp_path, cli):
    for name in ("manifest.json", "report.json"):
        strict((mlp_bundle / name).read_text())
    rep = profile(mlp_bundle, ProfileConfig(variants=("fp32",), warmup=1, iterations=3))
    strict(write_profile_json(rep, tmp_path / "p.json").read_text())
    code, out = cli("inspect", mlp_bundle, "--json", tmp_path / "i.json")
    assert code == 0, out
    strict((tmp_path / "i.json").read_text())


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_reads_what_check_writes(tmp_path):
    path = tmp_path / "r.json"
    write_json(ParityReport((OutputCheck("r", "fp32", "y", "0", True, {"snr_db": math.inf}),)), path)
    js = "const d = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')); console.log(Number(d.checks[0].metrics.snr_db))"
    out = subprocess.run(["node", "-e", js, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "Infinity", out.stderr


def test_graph_summary_needs_no_onnx_and_agrees_with_it(mlp_bundle, tmp_path):
    """Issue 19 item 3: opset, op counts and precision come from the protobuf wire format, so compare
    and inspect give the same answers in a runtime-only install as with onnx."""
    import onnx
    from onnx import numpy_helper

    from edgeship.bundle.inspect import onnx_summary

    m = json.loads((mlp_bundle / "manifest.json").read_text())
    for name, v in m["variants"].items():
        data = (mlp_bundle / v["file"]).read_bytes()
        got = onnx_summary(data)
        model = onnx.load_model_from_string(data)
        assert got["opset"] == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert got["ops"] == {op: sum(n.op_type == op for n in model.graph.node) for op in {n.op_type for n in model.graph.node}}
        assert got["precision"] == v["precision"], name
    # an fp16 graph: float16 initializers
    model = onnx.load_model_from_string((mlp_bundle / m["variants"]["fp32"]["file"]).read_bytes())
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    assert onnx_summary(model.SerializeToString())["precision"] == "fp16"


def test_compare_and_inspect_give_the_same_answer_without_onnx(mlp_bundle, tmp_path):
    m = json.loads((mlp_bundle / "manifest.json").read_text())
    a, b = mlp_bundle / m["variants"]["fp32"]["file"], mlp_bundle / m["variants"]["int8_dynamic"]["file"]
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'onnx' or name.startswith('onnx.') or name == 'torch': raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from edgeship.cli import main\n"
            "sys.argv = ['edgeship', *sys.argv[1:]]\nmain()\n")
    for blocked in (True, False):
        cmd = [sys.executable, "-c", code] if blocked else [sys.executable, "-m", "edgeship"]
        cmp = subprocess.run([*cmd, "compare", str(a), str(b), "-q"], capture_output=True, text=True, timeout=300)
        ins = subprocess.run([*cmd, "inspect", str(b), "--json", "-"], capture_output=True, text=True, timeout=300)
        assert cmp.returncode == 0, (blocked, cmp.stdout, cmp.stderr)
        info = strict(ins.stdout)["variants"]["model"]
        assert info["opset"] and info["ops"].get("MatMulInteger") and info["precision"] == "int8", (blocked, info)
