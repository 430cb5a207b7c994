"""A hostile ``profile --baseline`` file: a schema version of thousands of digits (Python refuses
to convert more than 4300), JSON nested 200000 deep, and a FIFO at the baseline's name gave exit 3
or hung. Each is a usage error (exit 2) now, the file read without blocking and within a bound."""

from __future__ import annotations

import json
import os
import sys

import pytest
from hostile_helpers import cli_peak

from edgeship import schemas
from edgeship.errors import SpecError

PROFILE = ["-n", "2", "--warmup", "0", "--variant", "fp32"]


@pytest.mark.parametrize("doc", [{"schema": "edgeship.profile/" + "9" * 5000, "schema_version": 1, "results": []},
                                 {"schema": "edgeship.profile/" + "9" * 5000, "results": []}])
def test_a_schema_number_of_thousands_of_digits_is_a_usage_error(doc):
    if "schema_version" in doc:  # the version given decides; the schema's number is not even read
        assert schemas.check_version(doc, "profile", "--baseline b.json") == 1
    else:
        with pytest.raises(SpecError, match=r"--baseline b\.json: .*5000 digits.*`edgeship profile --json`"):
            schemas.check_version(doc, "profile", "--baseline b.json")


def test_a_baseline_with_a_huge_schema_number_is_exit_2(mlp_bundle, tmp_path, cli):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema": "edgeship.profile/" + "9" * 5000, "results": []}))
    code, msg = cli("profile", mlp_bundle, *PROFILE, "--baseline", path)
    assert code == 2 and "--baseline" in msg and "Traceback" not in msg, msg


@pytest.mark.parametrize("text", ["[" * 200_000 + "]" * 200_000,
                                  '{"schema": "edgeship.profile/1", "results": [{"a": ' + "[" * 200_000 + "]" * 200_000 + "}]}"])
def test_a_deeply_nested_baseline_is_exit_2(mlp_bundle, tmp_path, cli, text):
    path = tmp_path / "b.json"
    path.write_text(text)
    code, msg = cli("profile", mlp_bundle, *PROFILE, "--baseline", path)
    assert code == 2 and "--baseline" in msg and "nest" in msg and "Traceback" not in msg, msg


@pytest.mark.parametrize("p50", ["1e999", "9" * 400, '"1e999999"'])
def test_a_baseline_figure_out_of_range_is_exit_2(mlp_bundle, tmp_path, cli, p50):
    path = tmp_path / "b.json"
    path.write_text('{"schema": "edgeship.profile/1", "results": [{"target": "cpu", "variant": "fp32", "threads": '
                    + "9" * 400 + ', "batch": 1, "stats": {"p50": ' + p50 + "}}]}")
    code, msg = cli("profile", mlp_bundle, *PROFILE, "--baseline", path)
    assert code == 2 and "--baseline" in msg and "Traceback" not in msg, msg


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs")
def test_a_fifo_as_baseline_is_refused_without_blocking(mlp_bundle, tmp_path):
    fifo = tmp_path / "b.json"
    os.mkfifo(fifo)
    code, msg, _ = cli_peak("profile", mlp_bundle, *PROFILE, "--cold-start", "off", "--baseline", fifo, timeout=120)
    assert code == 2 and "not a regular file" in msg and "Traceback" not in msg, msg


def test_an_oversized_baseline_is_refused_unread(mlp_bundle, tmp_path, cli, monkeypatch):
    from edgeship.profiling import baseline

    monkeypatch.setattr(baseline, "MAX_BASELINE_BYTES", 100)
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema": "edgeship.profile/1", "results": [], "pad": "x" * 200}))
    code, msg = cli("profile", mlp_bundle, *PROFILE, "--baseline", path)
    assert code == 2 and "--baseline" in msg and "MiB" in msg and "Traceback" not in msg, msg
