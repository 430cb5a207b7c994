"""Every JSON file and stream edgeship writes is strict RFC 8259 JSON: no Infinity or NaN, which
JavaScript's JSON.parse, Go and GitHub Actions' fromJSON refuse (non-finite numbers are written as
the strings "Infinity", "-Infinity", "NaN")."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

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
    code, out = cli("inspect", mlp_bundle, "--json")
    assert code == 0
    strict(out)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_reads_what_check_writes(tmp_path):
    path = tmp_path / "r.json"
    write_json(ParityReport((OutputCheck("r", "fp32", "y", "0", True, {"snr_db": math.inf}),)), path)
    js = "const d = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')); console.log(Number(d.checks[0].metrics.snr_db))"
    out = subprocess.run(["node", "-e", js, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "Infinity", out.stderr
